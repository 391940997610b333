"""Kept for ``weight_convert.cli``: the ``weight-convert parity`` command lives in
``weight_convert.parity.cli``."""

from weight_convert.parity.cli import PARITY_TARGETS, add_parity_parser, cmd_parity

__all__ = ["PARITY_TARGETS", "add_parity_parser", "cmd_parity"]
