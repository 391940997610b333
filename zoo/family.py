"""What a model family declares, with no framework: ``Family`` (the spec), ``Variant`` (a named
config) and ``Input`` (one input tensor of a model or block, with how to sample it).

A family's spec module in ``zoo/families/`` defines its config dataclass, registers a ``Family``
(the model's class name, the state-dict key/shape table, the example and ``--verify`` inputs, the
input checks) and its variants. Everything else in the zoo (``create_model`` in every framework,
the converter, ``--verify``, the parity harness, the shared test suite) reads the spec.

Config dataclasses mark the fields that are not architecture (training or pre-processing
settings) with ``metadata=NOT_ARCH``, and the classifier's size or absence with
``metadata=HEAD``: a checkpoint names a variant when every other field agrees (``arch_fields``),
and among variants of one architecture the one with its head (``head_fields``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.tensor_format import Format

__all__ = [
    "NOT_ARCH",
    "HEAD",
    "Family",
    "Input",
    "Shapes",
    "Variant",
    "arch_fields",
    "check_features",
    "head_fields",
    "image_input",
    "register_family",
    "register_variant",
]

#: ``dataclasses.field(metadata=NOT_ARCH)``: a config field that decides no tensor or shape
NOT_ARCH = {"arch": False}
#: ``dataclasses.field(metadata=HEAD)``: the classifier's size (``num_classes``) or absence
#: (``features_only``): it decides the head's tensors, not the variant's architecture (a
#: variant fine-tuned on other classes keeps its name); among variants of one architecture
#: a checkpoint names the one whose head it has (Kinetics-400 or -600)
HEAD = {"arch": False, "head": True}

#: reference state-dict key -> shape, in the reference model's order
Shapes = dict[str, tuple[int, ...]]


def arch_fields(config: Any) -> tuple[str, ...]:
    """The fields of ``config`` that decide which tensors (and shapes) the model has."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get("arch", True))


def head_fields(config: Any) -> tuple[str, ...]:
    """The fields of ``config`` that size its classifier head (``HEAD``)."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get("head", False))


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


@dataclass(frozen=True)
class Input:
    """One positional input: N(0, 1) float32 of ``shape`` unless ``sample(rng, shape)`` draws it
    or ``fixed()`` makes it a constant.

    ``shape`` and ``format`` describe the reference tensor; ports get
    ``zoo.tensor_format.to_port_format`` of it.
    """

    shape: tuple[int, ...]
    format: Format = Format.CHANNELS_LAST
    fixed: Callable[[], np.ndarray] | None = None
    sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None
    name: str = ""

    def make(self, rng: np.random.Generator) -> np.ndarray:
        if self.fixed is not None:
            return np.array(self.fixed(), dtype=np.float32)  # a writable copy of the table
        return (self.sample or _normal)(rng, tuple(self.shape))


def image_input(config: Any, shape: Sequence[int] | None, rank: int, frames: int = 16) -> Input:
    """The channels-first image (``rank`` 2) or clip (3) input: ``shape`` as given, else one
    sample at the variant's resolution (``config.img_size``; clips ``frames`` long)."""
    if shape is None:
        size = config.img_size
        shape = (1, config.in_chans, *((frames,) if rank == 3 else ()), size, size)
    shape = tuple(int(s) for s in shape)
    if len(shape) != rank + 2:
        kind = "B x C x H x W" if rank == 2 else "B x C x T x H x W"
        raise ValueError(f"input shape {list(shape)} is not {kind}")
    return Input(shape, Format.CHANNELS_FIRST, name="image" if rank == 2 else "clip")


@dataclass(frozen=True)
class Family:
    """A model family: config class, model class name (the same in every framework), the
    reference state dict's key/shape table, example inputs and input checks.

    ``inputs(config, shape)`` gives the model's positional inputs (reference shapes and formats);
    ``shape`` sets the first one's (None: the variant's resolution, as ``--verify`` runs it).
    ``check_inputs(model, framework, *tensors, **reference)`` raises a one-line ``ValueError``
    for inputs the model cannot take (``zoo.validate``; the reference passes its parameters'
    dtype); by default (None) the first input is checked as the image or clip ``inputs``
    describes. ``module`` names the model module in ``zoo.models`` / ``ports.keras.models`` /
    ``ports.flax.models`` (default: the family's name). ``validate`` checks a config read
    from a file (see the field).
    """

    name: str
    config: type
    model: str
    shapes: Callable[[Any], Shapes]
    inputs: Callable[[Any, Sequence[int] | None], tuple[Input, ...]]
    check_inputs: Callable[..., None] | None = None
    module: str | None = None
    description: str = ""
    #: a config that runs in seconds on two CPU cores and keeps every code path of the family
    #: (padding, shifted / global blocks, every head): the one every test builds
    tiny: Any = None
    #: ``validate(config)`` raises ``zoo.config_checks.ConfigError`` naming the field of a
    #: config no model can be built from (ranges, heads dividing widths, block counts within
    #: ``config_checks.MAX_BLOCKS``), after the generic type checks; run on every config read
    #: from a file (``zoo.configs.config_from_dict``), before its shape table is computed
    validate: Callable[[Any], None] | None = None
    #: ``features(config)``: every name of an intermediate output the model can return, in
    #: forward order: the reference's module paths (the checkpoint's: ``layer3.5``,
    #: ``transformer.resblocks.11``) and any aliases the family documents. A family that
    #: declares it has a config field ``features: tuple[str, ...]`` (``NOT_ARCH``, default
    #: empty); a config naming some returns ``{name: output}`` in that order, in every framework
    #: (maps channels-first in the reference, channels-last in the ports; tokens (B, N, D)).
    features: Callable[[Any], tuple[str, ...]] | None = None

    @property
    def module_name(self) -> str:
        return self.module or self.name

    def default_shape(self, config: Any) -> tuple[int, ...]:
        """The first input's reference shape at the variant's resolution."""
        return tuple(self.inputs(config, None)[0].shape)

    def make_inputs(
        self, config: Any, shape: Sequence[int] | None = None, seed: int = 0
    ) -> tuple[list[np.ndarray], list[Format]]:
        """Arrays (reference formats) and formats of the inputs, drawn from ``seed``."""
        rng = np.random.default_rng(seed)
        specs = self.inputs(config, shape)
        return [s.make(rng) for s in specs], [s.format for s in specs]

    def check(self, model: Any, framework: str, *tensors: Any, **reference: Any) -> None:
        """Run the family's input checks on ``tensors`` (see ``zoo.validate.check_inputs``)."""
        if self.check_inputs is not None:
            self.check_inputs(model, framework, *tensors, **reference)
            return
        from zoo.validate import check_image

        first = self.inputs(model.config, None)[0]
        if not _is_image(first):
            raise TypeError(f"{self.name}'s first input is no image or clip: give it check_inputs")
        x = tensors[0]
        check_image(
            model,
            x.shape,
            x.dtype,
            framework=framework,
            channels=first.shape[1],
            spatial_rank=len(first.shape) - 2,
            **reference,
        )

    def port_build_shape(self, config: Any) -> tuple[int | None, ...]:
        """The first input's port (channels-last) shape with every size open but the channels
        (all open for an input of rank 2 or less, such as token ids): what a Keras model is
        built for."""
        first = self.inputs(config, None)[0]
        if first.format is Format.CHANNELS_FIRST:
            return (None,) * (len(first.shape) - 1) + (first.shape[1],)
        if len(first.shape) <= 2:
            return (None,) * len(first.shape)
        return (None,) * (len(first.shape) - 1) + (first.shape[-1],)


@dataclass(frozen=True)
class Variant:
    """A named architecture: its config and a one-line description. The model class is the
    family's (``family.model``), in every framework."""

    name: str
    config: Any
    description: str = ""

    @property
    def family(self) -> Family:
        from zoo.registry import FAMILIES

        return FAMILIES[self.config.family]

    @property
    def model(self) -> str:
        return self.family.model


def _is_image(first: Input) -> bool:
    """Whether an input is what the default check knows: a channels-first image or clip."""
    return first.format is Format.CHANNELS_FIRST and len(first.shape) in (4, 5)


def check_features(config: Any) -> None:
    """Raise ``ConfigError`` when ``config.features`` (if the config has the field) names an
    output the model does not have, or one twice; the message lists the names it has."""
    from zoo.config_checks import ConfigError
    from zoo.registry import FAMILIES

    wanted = getattr(config, "features", ())
    if not wanted:
        return
    family = FAMILIES[config.family]
    if family.features is None:
        raise ConfigError(f"config field features: {family.model} returns no named features")
    known = family.features(config)
    unknown = [name for name in wanted if name not in known]
    twice = sorted({name for name in wanted if wanted.count(name) > 1})
    if unknown or twice:
        what = f"unknown {unknown}"[:200] if unknown else f"named twice {twice}"[:200]
        listed = ", ".join(known)
        listed = listed if len(listed) <= 600 else listed[:600] + ", ..."
        raise ConfigError(f"config field features: {what}; {family.model} returns: {listed}")


def register_family(family: Family) -> Family:
    """Add ``family`` to ``zoo.registry.FAMILIES``. A family whose first input is no image or
    clip must bring its own ``check_inputs`` (checked on its tiny config)."""
    from zoo.registry import FAMILIES

    if family.check_inputs is None and family.tiny is not None:
        if not _is_image(family.inputs(family.tiny, None)[0]):
            raise TypeError(f"{family.name}'s first input is no image or clip: give check_inputs")
    return FAMILIES.register(family.name, family)


def register_variant(name: str, config: Any, description: str = "") -> Variant:
    from zoo.registry import VARIANTS

    return VARIANTS.register(name, Variant(name, config, description))
