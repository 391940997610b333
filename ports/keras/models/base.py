"""What every Keras zoo model shares: built from a framework-free zoo config, which travels
through ``get_config`` / ``from_config`` so ``.keras`` files rebuild the same architecture."""

from __future__ import annotations

import keras

from zoo.configs import Config, config_from_dict, config_to_dict

__all__ = ["ZooModel", "config_from_keras", "keras_config"]


def keras_config(model: keras.Layer, config: Config) -> dict:
    """``get_config`` of a model: the zoo config as a dict plus Keras' base keys."""
    base = keras.layers.Layer.get_config(model)
    return {**base, "config": config_to_dict(config)}


def config_from_keras(config: dict) -> tuple[Config, dict]:
    """Inverse of ``keras_config``: the zoo config and the base keyword arguments."""
    kwargs = dict(config)
    zoo_config = kwargs.pop("config")
    if isinstance(zoo_config, dict):
        zoo_config = config_from_dict(zoo_config)
    if isinstance(kwargs.get("dtype"), dict):
        kwargs["dtype"] = keras.dtype_policies.deserialize(kwargs["dtype"])
    return zoo_config, kwargs


class ZooModel(keras.Model):
    """A ``keras.Model`` whose constructor takes a zoo config first (``self.config``)."""

    def get_config(self) -> dict:
        return keras_config(self, self.config)

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> ZooModel:
        zoo_config, kwargs = config_from_keras(config)
        return cls(zoo_config, **kwargs)
