"""Inception-v3 checkpoint layouts.

``torchvision``
    ``torchvision.models.inception_v3().state_dict()``: the reference's own keys
    (``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.running_mean``, ...,
    ``Mixed_7c.branch_pool.bn.num_batches_tracked``, ``fc``). Its release
    (``inception_v3_google-0cc3c7bd.pth``) also holds the auxiliary classifier ``AuxLogits.*``
    (``conv0``, ``conv1``, ``fc``: training-only, never in the logits of an eval forward); the
    zoo's model has no auxiliary head, so those tensors are dropped and counted when read (a
    file written back to this layout lacks them: load it into ``inception_v3(aux_logits=False)``
    or with ``strict=False``).
``pytorch_fid``
    pytorch-fid's FID weights (``pt_inception-2015-12-05-6726825d.pth``, the model
    ``fid_inception_v3()`` builds): torchvision's ``Inception3`` keys exactly (its FIDInception
    blocks subclass torchvision's and add no tensor), no ``AuxLogits``, a 1008-way ``fc``.
    Detection names ``torchvision`` (the first registered) and says the file is identical under
    ``pytorch_fid``.

The tensors do not say which pooling the blocks use, so the architecture is solved from the
classifier: 1008 classes is the FID Inception (``fid=True`` with pytorch-fid's input pipeline:
``resize_input=299``, ``normalize_input``), any other count torchvision's (with
``transform_input=True``, what its release's weights expect). The widths give
``width_divisor`` (``Conv2d_1a_3x3``'s 32 output channels at full size) and the input channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import need
from zoo.families.inception_v3 import FID_CLASSES, LAYERS, InceptionV3Config

#: the reference's prefixes, kept as they are
_RULES = tuple((f"{p}.", f"{p}.") for p in LAYERS if not p.startswith(("maxpool", "avgpool")))
#: torchvision's auxiliary head: outside the model, dropped and counted
_AUX = ((None, "AuxLogits."),)


def _infer_inception(reference: Mapping[str, Any]) -> tuple[InceptionV3Config, list[str]]:
    stem = tuple(need(reference, "Conv2d_1a_3x3.conv.weight").shape)
    if len(stem) != 4 or stem[2:] != (3, 3):
        raise LayoutError(f"Conv2d_1a_3x3.conv.weight of shape {stem} is no 3x3 conv kernel")
    if stem[0] <= 0 or 32 % stem[0] or 32 // stem[0] not in (1, 2, 4, 8, 16):
        raise LayoutError(f"Conv2d_1a_3x3 has {stem[0]} output channels: not 32 / 2^k")
    fc = tuple(need(reference, "fc.weight").shape)
    if len(fc) != 2:
        raise LayoutError(f"fc.weight of shape {fc} is no linear weight")
    classes = int(fc[0])
    common = {"in_chans": int(stem[1]), "num_classes": classes, "width_divisor": 32 // stem[0]}
    if classes == FID_CLASSES:
        config = InceptionV3Config(fid=True, resize_input=299, normalize_input=True, **common)
        note = (
            "1008 classes: pytorch-fid's FID Inception (FIDInception blocks; its input pipeline "
            "set: resize to 299, 2x - 1)"
        )
    else:
        config = InceptionV3Config(transform_input=True, **common)
        note = "torchvision's Inception3 blocks; transform_input=True, as its weights expect"
    return config, [note]


register_layouts(
    "inception_v3",
    _infer_inception,
    [
        LayoutSpec(
            "torchvision",
            "inception_v3",
            _AUX + _RULES,
            notes=("torchvision's AuxLogits (training-only auxiliary head), if any, dropped",),
        ),
        LayoutSpec("pytorch_fid", "inception_v3", _RULES),
    ],
)
