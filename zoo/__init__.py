"""vit-zoo: reference PyTorch vision-transformer blocks and models, mirrored in Keras 3 and
Flax NNX.

Importing ``zoo`` loads only the framework-free core (configs, registry, window tables, layouts);
``zoo.layers`` is the PyTorch reference and needs torch.
"""

from zoo.layout import Layout
from zoo.registry import BLOCKS, BlockCase, Input, Ref, Registry

__all__ = ["BLOCKS", "BlockCase", "Input", "Layout", "Ref", "Registry"]
__version__ = "0.1.0"
