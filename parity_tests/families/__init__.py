"""One test file per registered family, each feeding the shared suite (family_suite.py)."""
