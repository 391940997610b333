"""Checkpoint layouts of every family: detection from key names and shapes, and renaming to and
from the reference's keys. Framework-free: NumPy only.

A *layout* is how one code base names the tensors of the same architecture: ``official`` (the
reference's own keys, as the original repositories write them), ``torchvision``, ``timm``,
``detectron2``. Each family's layouts live in one module of this package
(``weight_convert.layouts.<family module>``): its key rules (``LayoutSpec.key_rules``: ordered
reference / layout prefix templates such as ``("layers.{i}.downsample.", "features.{2i+2}.")``),
the derived buffers its checkpoints carry, the wrapper key of its ``.pth`` releases, and
``infer_config``, which solves the architecture from the tensor shapes. Those modules are found
by listing the package, so adding a family is adding its module; nothing here names a family.

Public API::

    detected = detect(state_dict, allow=STRICT)        # layout, family, config, variant, notes
    reference = to_reference(state_dict, detected)     # the reference's keys, in its order
    state = from_reference(reference, layout, family, config)   # back, with derived buffers
    detect_directory(tensors, config_json)             # a Hugging Face directory's, by its config
    describe(detected, state_dict)                     # what ``weight-convert inspect`` prints
    match_layout(state_dict, layout, family, allow, config)     # one layout, strictly
    infer_config(reference, family); family_layouts(family); default_layout(family)
    torch_wrapper(layout, family); LAYOUTS (layout names); FAMILY_LAYOUTS (family -> FamilyLayouts)
"""

from __future__ import annotations

from weight_convert.errors import LayoutError
from weight_convert.layouts._detect import (
    STRICT,
    Allow,
    Detected,
    describe,
    detect,
    from_reference,
    match_layout,
    to_reference,
)
from weight_convert.layouts._huggingface import HFConfig, config_json, detect_directory
from weight_convert.layouts._registry import (
    FAMILY_LAYOUTS,
    DerivedBuffers,
    FamilyLayouts,
    LayoutSpec,
    all_layouts,
    default_layout,
    family_layouts,
    infer_config,
    layout_names,
    layout_spec,
    register_layouts,
    torch_wrapper,
)

__all__ = [
    "FAMILY_LAYOUTS",
    "LAYOUTS",
    "STRICT",
    "Allow",
    "DerivedBuffers",
    "Detected",
    "FamilyLayouts",
    "HFConfig",
    "LayoutError",
    "LayoutSpec",
    "all_layouts",
    "config_json",
    "default_layout",
    "describe",
    "detect",
    "detect_directory",
    "family_layouts",
    "from_reference",
    "infer_config",
    "layout_names",
    "layout_spec",
    "match_layout",
    "register_layouts",
    "to_reference",
    "torch_wrapper",
]


def __getattr__(name: str):
    if name == "LAYOUTS":  # computed once the family modules are imported
        return layout_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
