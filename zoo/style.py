"""Neural style transfer (Gatys, Ecker & Bethge 2016) over any backbone's named features: the
settings and the arithmetic every framework shares. Framework-free.

The image is optimized, not the network: pixels in [0, 1] (RGB), initialized from the content
image or noise, updated by Adam (``zoo.training.AdamW`` with no weight decay: PyTorch's Adam,
matched in Keras and optax by ``ports.*.training``) and clipped back to [0, 1] after each step.
The backbone is a ``features`` model (``zoo.features``) whose names include the content and
style layers; it sees the pixels through its weights' normalization (``zoo.preprocessing``:
the mean / std of torchvision's or CLIP's weights, or Caffe's BGR minus the mean for weights
from Keras applications), applied inside the loss so the gradient reaches the pixels.

For a feature map F_l of layer l, with N_l channels and M_l positions (a conv map's H x W, a
transformer's N tokens with the D features as channels):

- content: ``1/2 sum (F_l - P_l)^2`` against the content image's features P_l;
- style: ``sum_l w_l / (4 N_l^2 M_l^2) sum (G_l - A_l)^2`` with Gram matrices ``G = F F^T``
  (N_l x N_l) of the image and A_l of the style image: Gatys' normalization;
- total variation: the sum of squared differences of neighbouring pixels, down and across;

``loss = content_weight * content + style_weight * style + tv_weight * tv``. The implementations:
``zoo.style_transfer`` (PyTorch), ``ports.keras.style_transfer`` (``model.fit`` on a model whose
one weight is the image) and ``ports.flax.style_transfer`` (an ``nnx.jit`` step), each returning
a ``StyleResult`` with the same fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.preprocessing import NORMALIZATIONS, Normalization
from zoo.training import AdamW

__all__ = [
    "CAFFE",
    "CLIP",
    "IMAGENET",
    "LBFGS",
    "Normalization",
    "StyleResult",
    "StyleSettings",
    "check_backbone",
    "normalization_of",
    "returning_layers",
    "seconds_per_step",
]


#: torchvision's ImageNet weights (VGG, ResNet), Keras applications' VGG, OpenAI CLIP
IMAGENET, CAFFE, CLIP = (NORMALIZATIONS[m] for m in ("imagenet", "caffe", "clip"))


def normalization_of(config: Any) -> Normalization:
    """The normalization a backbone's config names (its ``preprocessing`` field:
    ``zoo.preprocessing``), else torchvision's ImageNet one."""
    return NORMALIZATIONS[getattr(config, "preprocessing", "imagenet")]


@dataclass(frozen=True)
class LBFGS:
    """L-BFGS on the pixels, where the framework has one: ``torch.optim.LBFGS(lr, max_iter=1,
    history_size, line_search_fn="strong_wolfe")`` (one iteration a step) and ``optax.lbfgs(lr,
    memory_size=history_size)`` with its zoom line search. Each is its library's algorithm (their
    first step's scaling and line searches differ): the runs are not held to one another, only
    each to a falling loss and finite gradients. Keras has no L-BFGS (refused)."""

    lr: float = 1.0
    history_size: int = 10


@dataclass(frozen=True)
class StyleSettings:
    """One style-transfer run: the layers (names of the backbone's features), the weights, the
    optimizer and the number of steps. ``style_layer_weights``: one per style layer (default:
    equal, summing to 1)."""

    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    content_weight: float = 1.0
    style_weight: float = 1e3
    style_layer_weights: tuple[float, ...] = ()
    tv_weight: float = 0.0
    steps: int = 50
    #: Adam (``AdamW`` with no weight decay: PyTorch's update in every framework) or ``LBFGS``
    optimizer: AdamW | LBFGS = field(default_factory=lambda: AdamW(lr=0.01, weight_decay=0.0))
    #: clip the pixels to [0, 1] after every step
    clip: bool = True
    #: None: the backbone config's (``normalization_of``)
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        if not self.content_layers and not self.style_layers:
            raise ValueError("StyleSettings: no content and no style layer")
        weights = self.style_layer_weights
        if weights and len(weights) != len(self.style_layers):
            raise ValueError(
                f"StyleSettings: {len(weights)} style layer weights for "
                f"{len(self.style_layers)} style layers"
            )
        if self.steps < 0:
            raise ValueError(f"StyleSettings: steps {self.steps} < 0")
        adam = isinstance(self.optimizer, AdamW) and not self.optimizer.weight_decay
        if not adam and not isinstance(self.optimizer, LBFGS):
            raise ValueError(
                "StyleSettings: the optimizer is Adam (AdamW(weight_decay=0.0)) or LBFGS"
            )

    @property
    def layers(self) -> tuple[str, ...]:
        """Every feature the loss needs, content first, each once."""
        return tuple(dict.fromkeys((*self.content_layers, *self.style_layers)))

    @property
    def layer_weights(self) -> tuple[float, ...]:
        n = len(self.style_layers)
        return tuple(self.style_layer_weights) or (1.0 / n,) * n

    def backbone_config(self, config: Any) -> Any:
        """``config`` returning exactly the features the loss needs."""
        return dataclasses.replace(config, features=self.layers)

    def normalization_for(self, config: Any) -> Normalization:
        return self.normalization or normalization_of(config)


def check_backbone(config: Any, settings: StyleSettings) -> None:
    """A one-line ``ValueError`` when the backbone cannot return the layers ``settings`` names
    (``zoo.family.check_features`` of its config returning them: a ``ConfigError``)."""
    from zoo.configs import family_of
    from zoo.family import check_features

    family = family_of(config)
    if family.features is None:
        raise ValueError(f"{family.model} returns no named features: no style-transfer backbone")
    check_features(settings.backbone_config(config))


@contextlib.contextmanager
def returning_layers(backbone: Any, settings: StyleSettings) -> Iterator[Any]:
    """``backbone`` (a model of any framework) returning exactly the layers the loss needs for
    the duration of the block: its config's ``features`` replaced, then restored (the module tree
    and the weights are the same whatever the features)."""
    check_backbone(backbone.config, settings)
    config = backbone.config
    backbone.config = settings.backbone_config(config)
    try:
        yield backbone
    finally:
        backbone.config = config


@dataclass
class StyleResult:
    """What a run gives, in every framework: the image (H, W, 3) float32 in [0, 1], the loss of
    each step (computed before that step's update), when asked the pixel gradient of each step
    ((H, W, 3), channels-last), and each step's wall time."""

    image: np.ndarray
    losses: np.ndarray
    gradients: list[np.ndarray] = field(default_factory=list)
    #: each step's wall time (the first includes compiling, where the framework compiles)
    step_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))


def seconds_per_step(
    transfer: Callable[..., StyleResult],
    backbone: Any,
    content: Any,
    style: Any,
    settings: StyleSettings,
    steps: int = 3,
) -> float:
    """Wall time of one optimizer step of ``transfer`` (any framework's): the median of a
    ``steps``-step run's steps after the first (which compiles, in Keras and Flax)."""
    result = transfer(backbone, content, style, dataclasses.replace(settings, steps=max(steps, 2)))
    return float(np.median(result.step_seconds[1:]))


def as_image(x: np.ndarray, name: str) -> np.ndarray:
    """A (H, W, 3) RGB image in [0, 1] as float32 (float64 kept: a float64 run), from float in
    [0, 1] or uint8."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) RGB image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 or float pixels, got {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: float pixels must lie in [0, 1]")
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32)


def images(content: Any, style: Any, init: Any | None) -> Sequence[np.ndarray]:
    """The three images checked (``as_image``); ``init`` defaults to the content image."""
    content = as_image(content, "content")
    style = as_image(style, "style")
    init = content if init is None else as_image(init, "init")
    if init.shape != content.shape:
        raise ValueError(f"init image {init.shape} differs from the content image {content.shape}")
    return content, style, init
