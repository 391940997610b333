"""Keras 3 port (any backend: TensorFlow, JAX, torch), channels-last."""
