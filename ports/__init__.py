"""Framework ports of the reference blocks in ``zoo.layers`` (Keras 3 and Flax NNX)."""
