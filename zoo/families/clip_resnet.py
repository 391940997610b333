"""CLIP's ResNet image encoder (OpenAI CLIP ``model.py``'s ``ModifiedResNet``): config,
variants, state-dict table, inputs, feature names. Framework-free.

A three-conv stem (``conv1`` stride 2, ``conv2``, ``conv3``, each with BatchNorm and ReLU) and a
2 x 2 average pool; ``layer1..4`` of Bottlenecks whose stride is an average pool after
``conv2`` (anti-aliasing) and whose shortcut pools too (``downsample``: average pool, 1 x 1
conv ``0``, BatchNorm ``1``); then ``attnpool``: multi-head attention of the map's mean token
(prepended, ``positional_embedding`` added to every token) over all of them (``q_proj``,
``k_proj``, ``v_proj``, ``c_proj``). The model is ``ModifiedResNet`` in
``zoo.models.clip_resnet`` and both ports; its layouts (OpenAI's / open_clip's ``visual.*``)
are in ``weight_convert.layouts.clip``. BatchNorm is PyTorch's (eps 1e-5, momentum 0.1).

CLIP resizes nothing: the map reaching ``attnpool`` must be the trained (img_size // 32)^2
grid; sizes that floor to it run (225 x 239 gives 7 x 7, as 224).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import shape_table as T
from zoo.config_checks import ConfigError, divides, positive
from zoo.families.clip_vit import check_grid
from zoo.family import NOT_ARCH, Family, Input, image_input, register_family, register_variant
from zoo.preprocessing import check_preprocessing

__all__ = ["ClipResNetConfig", "feature_names", "map_side"]

#: Bottleneck's output is 4 x its planes
EXPANSION = 4


@dataclass(frozen=True)
class ClipResNetConfig:
    """OpenAI CLIP's ``ModifiedResNet(layers, output_dim, heads, input_resolution, width)``.

    Input (reference): (B, in_chans, H, W) channels-first, normalized with ``CLIP_MEAN`` /
    ``CLIP_STD``, reducing to the trained (img_size // 32) grid. Output: the image embedding
    (B, output_dim); with ``features``, a dict of the named outputs.
    """

    img_size: int = 224
    in_chans: int = 3
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    #: in no tensor's shape: OpenAI's rule is width * 32 // 64 (``clip.model.CLIP``)
    heads: int = 32
    output_dim: int = 1024
    #: the named outputs to return instead of the embedding (``feature_names(config)``)
    features: tuple[str, ...] = field(default=(), metadata=NOT_ARCH)
    #: the input the weights expect (``zoo.preprocessing``): CLIP's mean and std
    preprocessing: str = field(default="clip", metadata=NOT_ARCH)

    @property
    def family(self) -> str:
        return "clip_resnet"

    @property
    def embed_dim(self) -> int:
        """The last stage's channels: attnpool's width."""
        return self.width * 32

    @property
    def grid(self) -> int:
        """Side of the map attnpool's positional embedding is trained for."""
        return self.img_size // 32


def map_side(side: int) -> int:
    """The side of the map reaching ``attnpool`` from an image side: conv1 (3 x 3, stride 2,
    padding 1), the stem's 2 x 2 pool and the pools of layer2..4, each flooring."""
    side = (side - 1) // 2 + 1
    for _ in range(4):
        side //= 2
    return side


def feature_names(config: ClipResNetConfig) -> tuple[str, ...]:
    """Every output a ``features`` config may name, in forward order: ``stem`` (the stem's
    pooled map: (B, width, H / 4, W / 4)), each Bottleneck ``layerI.J`` and stage ``layerI``
    (maps), and ``attnpool`` (the embedding, (B, output_dim))."""
    names = ["stem"]
    for i, depth in enumerate(config.layers, start=1):
        names += [f"layer{i}.{j}" for j in range(depth)] + [f"layer{i}"]
    return (*names, "attnpool")


def stages(config: ClipResNetConfig) -> list[list[tuple[int, int, int]]]:
    """(inplanes, planes, stride) of every Bottleneck, by stage: OpenAI's ``_make_layer``."""
    out, inplanes = [], config.width
    for i, depth in enumerate(config.layers):
        planes = config.width * 2**i
        stride = 1 if i == 0 else 2
        blocks = [(inplanes, planes, stride)]
        inplanes = planes * EXPANSION
        blocks += [(inplanes, planes, 1)] * (depth - 1)
        out.append(blocks)
    return out


def has_downsample(inplanes: int, planes: int, stride: int) -> bool:
    return stride > 1 or inplanes != planes * EXPANSION


def _shapes(config: ClipResNetConfig) -> T.Shapes:
    out: T.Shapes = {}
    half, w = config.width // 2, config.width
    for name, i, o in (("1", config.in_chans, half), ("2", half, half), ("3", half, w)):
        T.conv(out, "conv" + name, i, o, 3, bias=False)
        T.batchnorm(out, "bn" + name, o)
    for s, blocks in enumerate(stages(config), start=1):
        for j, (inplanes, planes, stride) in enumerate(blocks):
            b = f"layer{s}.{j}."
            T.conv(out, b + "conv1", inplanes, planes, 1, bias=False)
            T.batchnorm(out, b + "bn1", planes)
            T.conv(out, b + "conv2", planes, planes, 3, bias=False)
            T.batchnorm(out, b + "bn2", planes)
            T.conv(out, b + "conv3", planes, planes * EXPANSION, 1, bias=False)
            T.batchnorm(out, b + "bn3", planes * EXPANSION)
            if has_downsample(inplanes, planes, stride):
                T.conv(out, b + "downsample.0", inplanes, planes * EXPANSION, 1, bias=False)
                T.batchnorm(out, b + "downsample.1", planes * EXPANSION)
    e = config.embed_dim
    out["attnpool.positional_embedding"] = (config.grid**2 + 1, e)
    for name in ("k_proj", "q_proj", "v_proj"):
        T.linear(out, f"attnpool.{name}", e, e)
    T.linear(out, "attnpool.c_proj", e, config.output_dim)
    return out


def _validate(config: ClipResNetConfig) -> None:
    positive(config, "img_size", "in_chans", "layers", "width", "heads", "output_dim")
    if config.width % 2:
        raise ConfigError(f"config field width: {config.width} is odd (the stem halves it)")
    if sum(config.layers) > 1024:
        raise ConfigError(f"config field layers: {config.layers} (at most 1024 blocks)")
    if config.img_size < 32:
        raise ConfigError(f"config field img_size: {config.img_size} < 32 leaves no map to pool")
    divides("heads", config.heads, config.embed_dim)
    check_preprocessing(config)


def _inputs(config: ClipResNetConfig, shape: Sequence[int] | None) -> tuple[Input, ...]:
    return (image_input(config, shape, rank=2),)


def _check_inputs(model: Any, framework: str, x: Any, **reference: Any) -> None:
    """The image checks (rank, channels, dtype), then the map attnpool gets."""
    from zoo.validate import check_image

    config = model.config
    check_image(
        model,
        x.shape,
        x.dtype,
        framework=framework,
        channels=config.in_chans,
        spatial_rank=2,
        **reference,
    )
    check_grid(model, framework, x, map_side, config.grid, "map at attnpool")


register_family(
    Family(
        name="clip_resnet",
        config=ClipResNetConfig,
        model="ModifiedResNet",
        shapes=_shapes,
        inputs=_inputs,
        check_inputs=_check_inputs,
        validate=_validate,
        features=feature_names,
        description="CLIP's ResNet image encoder (OpenAI's ModifiedResNet: three-conv stem, "
        "anti-aliased strides, attention pooling)",
        # every path: layer1's stride-1 shortcut conv, strided blocks, a block without
        # shortcut (layer2.1), attention pooling of a 2 x 2 map with 4 heads; 65 x 79 floors
        # to the same map
        tiny=ClipResNetConfig(img_size=64, layers=(1, 2, 1, 1), width=8, heads=4, output_dim=16),
    )
)

for _name, _layers, _width, _dim, _size in (
    ("clip_rn50", (3, 4, 6, 3), 64, 1024, 224),
    ("clip_rn101", (3, 4, 23, 3), 64, 512, 224),
    ("clip_rn50x4", (4, 6, 10, 6), 80, 640, 288),
    ("clip_rn50x16", (6, 8, 18, 8), 96, 768, 384),
    ("clip_rn50x64", (3, 15, 36, 10), 128, 1024, 448),
):
    register_variant(
        _name,
        ClipResNetConfig(
            img_size=_size, layers=_layers, width=_width, heads=_width * 32 // 64, output_dim=_dim
        ),
        f"OpenAI CLIP {_name[5:].upper()} image encoder: {_size} px, blocks {list(_layers)}, "
        f"width {_width}, embedding {_dim}",
    )
