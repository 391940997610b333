"""What a family's layouts module declares, and the registry that finds those modules.

``LayoutSpec``: one PyTorch layout of one family (its key rules, the derived buffers its
checkpoints carry, the key a ``.pth`` of it nests the state dict under, notes for detection).
``FamilyLayouts``: a family's layouts in preference order (the first is the one written by
default) and its ``infer_config``, which solves the architecture from a state dict in the
reference's keys.

Every public module of this package (name not starting with ``_``) is one family's layouts
module; ``FAMILY_LAYOUTS`` imports them all before its first look-up. Adding a family's layouts is
adding its module: it calls ``register_layouts`` and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from weight_convert.errors import LayoutError
from weight_convert.layouts._templates import KeyRule, rename
from weight_convert.layouts._transforms import read_view
from zoo.configs import Config
from zoo.registry import Registry, import_package_modules

__all__ = [
    "FAMILY_LAYOUTS",
    "DerivedBuffers",
    "FamilyLayouts",
    "LayoutSpec",
    "all_layouts",
    "default_layout",
    "family_layouts",
    "family_record",
    "infer_config",
    "layout_names",
    "layout_spec",
    "register_layouts",
    "torch_wrapper",
]

#: reference state dict -> (config solved from the tensor shapes, notes)
InferConfig = Callable[[Mapping[str, Any]], tuple[Config, list[str]]]


@dataclass(frozen=True)
class DerivedBuffers:
    """Buffers a layout's checkpoints carry that the architecture defines (never learned).

    Read, every tensor whose reference key ends in one of ``leaves`` is given to ``check(key,
    reference_key, value, config)``, which raises ``LayoutError`` when it is not the buffer the
    config defines, then dropped. Written, ``make(config, reference_keys)`` gives, by
    reference key, the ``(reference key, array)`` buffers written right after that tensor.
    """

    leaves: tuple[str, ...]
    check: Callable[[str, str, Any, Config], None]
    make: Callable[[Config, Sequence[str]], dict[str, list[tuple[str, np.ndarray]]]] | None = None


@dataclass(frozen=True)
class LayoutSpec:
    """One PyTorch layout (``name``: "official", "torchvision", ...) of one ``family``.

    ``key_rules``: ordered (reference prefix, layout prefix) templates, first match wins (see
    ``weight_convert.layouts._templates``); None on the reference side marks keys outside the
    model, dropped and counted. ``wrapper``: the key a ``.pth`` of this layout nests the state
    dict under (None: flat). ``notes``: said whenever a checkpoint is detected in this layout.
    ``model_zoo_pickle``: its releases are pickles of NumPy arrays (``.pkl`` outputs allowed).
    ``tensor_rules``: tensors stored split or tied (``_transforms.Fuse`` / ``Tied``), applied
    before the key rules; ``value_maps``: reference tensors the layout stores rearranged
    (``_transforms.ValueMap``). ``huggingface``: the ``config.json`` of a Hugging Face
    directory in this layout (``weight_convert.layouts._huggingface.HFConfig``).
    ``implies``: (field, value) of non-architecture config fields every checkpoint of this
    layout means (the input its weights expect: VGG's ``preprocessing``), set on the config
    solved from its shapes; writing a config that differs in them to this layout is said in
    the conversion's notes (the file cannot keep it).
    """

    name: str
    family: str
    key_rules: tuple[KeyRule, ...]
    derived: DerivedBuffers | None = None
    wrapper: str | None = None
    notes: tuple[str, ...] = ()
    model_zoo_pickle: bool = False
    tensor_rules: tuple[Any, ...] = ()
    value_maps: tuple[Any, ...] = ()
    huggingface: Any = None
    implies: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name}/{self.family}"

    @property
    def derived_leaves(self) -> tuple[str, ...]:
        return () if self.derived is None else self.derived.leaves

    def view(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint's tensors as the key rules see them (``tensor_rules`` applied)."""
        return read_view(state_dict, self.tensor_rules) if self.tensor_rules else dict(state_dict)

    def reference_key(self, key: str) -> str | None:
        """The reference key of a key in this layout (None: no rule covers it; ``""``: a key
        outside the model)."""
        return rename(key, self.key_rules, reverse=False)

    def layout_key(self, reference_key: str) -> str | None:
        """The key in this layout of a reference key (None: no rule covers it)."""
        return rename(reference_key, self.key_rules, reverse=True)


@dataclass(frozen=True)
class FamilyLayouts:
    """A family's PyTorch layouts in preference order and how its architecture is solved from
    tensor shapes (``infer_config``: reference state dict -> (config, notes); raises
    ``LayoutError`` when the shapes do not give one)."""

    family: str
    layouts: tuple[LayoutSpec, ...]
    infer_config: InferConfig


def _load() -> None:
    import_package_modules(__package__)


#: family -> its ``FamilyLayouts``; the family modules of this package register themselves
FAMILY_LAYOUTS: Registry[FamilyLayouts] = Registry("family with checkpoint layouts", _load)


def register_layouts(
    family: str, infer_config: InferConfig, layouts: Iterable[LayoutSpec]
) -> FamilyLayouts:
    """Register ``family``'s layouts (preference order: the first is written by default) and
    its config inference. Called once by the family's module of this package."""
    from zoo.registry import FAMILIES

    layouts = tuple(layouts)
    if family not in FAMILIES:
        raise KeyError(f"{family} is no family of the zoo (zoo.families)")
    if not layouts or any(spec.family != family for spec in layouts):
        raise ValueError(f"{family}: give one or more layouts of this family")
    names = [spec.name for spec in layouts]
    if len(set(names)) != len(names):
        raise ValueError(f"{family}: layout names given twice: {names}")
    return FAMILY_LAYOUTS.register(family, FamilyLayouts(family, layouts, infer_config))


def all_layouts() -> list[LayoutSpec]:
    """Every layout of every family, in the order detection tries them."""
    return [spec for record in FAMILY_LAYOUTS.values() for spec in record.layouts]


def layout_names() -> tuple[str, ...]:
    """The distinct layout names, in registration order."""
    return tuple(dict.fromkeys(spec.name for spec in all_layouts()))


def family_record(family: str) -> FamilyLayouts:
    if family not in FAMILY_LAYOUTS:
        known = ", ".join(FAMILY_LAYOUTS)
        raise LayoutError(f"no checkpoint layouts for {family}; families with layouts: {known}")
    return FAMILY_LAYOUTS[family]


def family_layouts(family: str) -> list[str]:
    """The names of ``family``'s PyTorch layouts in preference order (none for a family without
    a layouts module)."""
    if family not in FAMILY_LAYOUTS:
        return []
    return [spec.name for spec in FAMILY_LAYOUTS[family].layouts]


def default_layout(family: str) -> str:
    """The layout written when none is asked for: the family's first (its official one where
    it has one)."""
    return family_record(family).layouts[0].name


def layout_spec(layout: str, family: str) -> LayoutSpec:
    """The ``LayoutSpec`` of ``layout`` for ``family``; ``LayoutError`` listing every known
    layout otherwise."""
    for spec in FAMILY_LAYOUTS[family].layouts if family in FAMILY_LAYOUTS else ():
        if spec.name == layout:
            return spec
    known = ", ".join(spec.label for spec in all_layouts())
    raise LayoutError(f"no layout {layout}/{family}; known: {known}")


def torch_wrapper(layout: str, family: str) -> str | None:
    """The key ``layout``'s ``.pth`` releases nest the state dict under (None: flat)."""
    return layout_spec(layout, family).wrapper


def infer_config(reference: Mapping[str, Any], family: str) -> tuple[Config, list[str]]:
    """Config of a state dict in the reference's keys (derived buffers may be present) of
    ``family``, from the tensor shapes only, and notes. Not yet checked against every shape."""
    return family_record(family).infer_config(reference)
