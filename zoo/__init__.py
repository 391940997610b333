"""vit-zoo: reference PyTorch vision models, mirrored in Keras 3 and Flax NNX.

Importing ``zoo`` loads only the framework-free core (registry, family specs, block cases, window
tables); ``zoo.layers`` and ``zoo.models`` are the PyTorch reference and need torch.
"""

from zoo.blocks import BLOCKS, BlockCase, Input, Ref
from zoo.registry import FAMILIES, VARIANTS, Registry
from zoo.tensor_format import Format

__all__ = ["BLOCKS", "FAMILIES", "VARIANTS", "BlockCase", "Format", "Input", "Ref", "Registry"]
__version__ = "0.1.0"
