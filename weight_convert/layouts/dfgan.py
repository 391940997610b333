"""DF-GAN checkpoint layouts.

``official/dfgan``
    ``tobran/DF-GAN``'s ``save_models``: ``{'model': {'netG': sd, 'netD': sd, 'netC': sd},
    'optimizers': ..., 'epoch': ...}``, each ``sd`` a ``state_dict()`` (keys ``module.``-prefixed
    when trained with DataParallel / DistributedDataParallel). ``checkpoints`` reads the three
    dicts as one, ``netG.`` / ``netD.`` / ``netC.`` before their keys (each part's ``module.``
    stripped): the reference's own keys. Written back, the three stay under ``model`` with those
    prefixes (one flat dict: the official ``load_model_weights`` wants them split again).
``legacy/dfgan_legacy``
    the first release's ``netG_%03d.pth`` / ``netG.pth``: ``NetG.state_dict()``, flat
    (``fc``, ``block0``-``block6``, ``conv_img.1``).

The architecture is solved from the shapes: ngf from ``fc`` (8 ngf x 4 x 4 outputs), nz from its
input, the image size from the GBlock count (one doubling each from 4 x 4), cond_dim from the
first affine's input (nz + cond_dim there), ndf from ``conv_img``, the image channels from
``to_rgb``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import need
from zoo.families.dfgan import DFGANConfig, DFGANLegacyConfig


def _shape(reference: Mapping[str, Any], key: str, rank: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in need(reference, key).shape)
    if len(shape) != rank:
        raise LayoutError(f"{key} of shape {shape} is not of rank {rank}")
    return shape


def _ngf(reference: Mapping[str, Any], key: str) -> tuple[int, int]:
    """(ngf, nz) from the generator's ``fc`` (8 ngf x 4 x 4, nz)."""
    out, nz = _shape(reference, key, 2)
    if out % 128:
        raise LayoutError(f"{key} has {out} outputs: not 8 ngf x 4 x 4 for any ngf")
    return out // 128, nz


def _infer_dfgan(reference: Mapping[str, Any]) -> tuple[DFGANConfig, list[str]]:
    ngf, nz = _ngf(reference, "netG.fc.weight")
    blocks = sum(1 for k in reference if k.startswith("netG.GBlocks.") and k.endswith(".c1.weight"))
    if blocks < 1:
        raise LayoutError("no netG.GBlocks.N.c1.weight: no generator block")
    cond = _shape(reference, "netG.GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight", 2)[1]
    if cond <= nz:
        raise LayoutError(f"the affines take {cond} inputs: no sentence beside {nz} noise")
    config = DFGANConfig(
        ngf=ngf,
        ndf=_shape(reference, "netD.conv_img.weight", 4)[0],
        nz=nz,
        cond_dim=cond - nz,
        img_size=4 * 2**blocks,
        ch_size=_shape(reference, "netG.to_rgb.1.weight", 4)[0],
    )
    return config, []


def _infer_legacy(reference: Mapping[str, Any]) -> tuple[DFGANLegacyConfig, list[str]]:
    ngf, nz = _ngf(reference, "fc.weight")
    cond = _shape(reference, "block0.affine0.fc_gamma.linear1.weight", 2)[1]
    return DFGANLegacyConfig(ngf=ngf, nz=nz, cond_dim=cond), []


register_layouts(
    "dfgan",
    _infer_dfgan,
    [
        LayoutSpec(
            "official",
            "dfgan",
            (("netG.", "netG."), ("netD.", "netD."), ("netC.", "netC.")),
            wrapper="model",  # save_models: {'model': {'netG', 'netD', 'netC'}, ...}
        )
    ],
)
register_layouts(
    "dfgan_legacy",
    _infer_legacy,
    [
        LayoutSpec(
            "legacy",
            "dfgan_legacy",
            (("fc.", "fc."), ("block{i}.", "block{i}."), ("conv_img.", "conv_img.")),
        )
    ],
)
