"""Weight conversion between the PyTorch reference layout and the Keras / Flax ports."""
