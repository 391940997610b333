"""Flax NNX port of ``zoo.layers``: same module trees and attribute names, channels-last."""
