"""DF-GAN (Tao et al., CVPR 2022, ``tobran/DF-GAN``) text-to-image GAN: configs, variants,
state-dict tables, inputs. Framework-free.

Two families, one module per framework (``zoo.models.dfgan``, ``ports.*.models.dfgan``):

``dfgan`` (the current official code, ``code/models/GAN.py``): one model ``DFGAN`` holding the
three networks training needs as ``netG`` (generator: ``fc`` from the noise to an 8 ngf x 4 x 4
map, up-sampling ``GBlocks.N`` whose two fusion blocks ``fuse1`` / ``fuse2`` are two ``Affine``
layers each, scale and shift predicted by MLPs ``fc_gamma`` / ``fc_beta`` from noise +
sentence; ``to_rgb``), ``netD`` (``conv_img``, down-sampling ``DBlocks.N``) and ``netC`` (the
sentence-conditioned head ``joint_conv``). Its state dict is the release's
``{'model': {'netG', 'netD', 'netC'}}`` flattened with those prefixes, as SAM's is its three
parts' (``image_encoder.`` / ``prompt_encoder.`` / ``mask_decoder.``): one file, one model, one
conversion; the parts are attributes, each callable on its own (``model.netG(noise, sent)``).
``DFGAN(noise, sent)`` runs the three in a row: the image and the conditional logits of it.

``dfgan_legacy`` (the first release, ``code/model.py``, ``netG_%03d.pth`` = ``NetG``'s state
dict): the generator ``LegacyNetG``, fixed at 256 px, ``block0``-``block6`` (four affines each,
fed the sentence vector only, and a learned residual scale ``gamma``) and ``conv_img``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zoo import shape_table as T
from zoo.config_checks import ConfigError, positive
from zoo.family import Family, Input, register_family, register_variant
from zoo.tensor_format import Format

__all__ = [
    "DFGANConfig",
    "DFGANLegacyConfig",
    "LEGACY_G_CHANNELS",
    "MAGP_POWER",
    "MAGP_WEIGHT",
    "d_in_out_channels",
    "discriminator_record",
    "g_in_out_channels",
]

#: ``MA_GP``'s constants: ``2.0 * torch.mean(grad_l2norm ** 6)`` (every framework's training
#: step reads them here: ``zoo.dfgan_training`` imports torch, the ports' steps must not)
MAGP_WEIGHT, MAGP_POWER = 2.0, 6


def discriminator_record(real, mismatched, fake, ma_gp, fake_images, grad_img, grad_sent) -> dict:
    """One discriminator step's terms in any framework's tensors, with the official ``errD =
    real + (fake + mismatched) / 2 + ma_gp``."""
    return {
        "real": real,
        "mismatched": mismatched,
        "fake": fake,
        "ma_gp": ma_gp,
        "errD": real + (fake + mismatched) / 2.0 + ma_gp,
        "fake_images": fake_images,
        "grad_img": grad_img,
        "grad_sent": grad_sent,
    }


def _channel_nums(nf: int, img_size: int) -> list[int]:
    layer_num = int(math.log2(img_size)) - 1
    return [nf * min(2**idx, 8) for idx in range(layer_num)]


def g_in_out_channels(ngf: int, img_size: int) -> list[tuple[int, int]]:
    """The official ``get_G_in_out_chs``: each GBlock's (in, out) channels, 4 x 4 up to
    ``img_size`` (one block per doubling)."""
    nums = _channel_nums(ngf, img_size)[::-1]
    return list(zip(nums[:-1], nums[1:], strict=True))


def d_in_out_channels(ndf: int, img_size: int) -> list[tuple[int, int]]:
    """The official ``get_D_in_out_chs``: each DBlock's (in, out) channels, ``img_size`` down
    to 4 x 4."""
    nums = _channel_nums(ndf, img_size)
    return list(zip(nums[:-1], nums[1:], strict=True))


@dataclass(frozen=True)
class DFGANConfig:
    """``NetG(ngf, nz, cond_dim, imsize, ch_size)``, ``NetD(ndf, imsize, ch_size)``,
    ``NetC(ndf, cond_dim)`` of the official code (its configs: nf 32 for both, 256 px).

    Inputs: noise (B, nz) and sentence embedding (B, cond_dim). Output: the image (B, ch_size,
    img_size, img_size) in [-1, 1] (channels-last in the ports) and ``netC``'s logits of it
    (B, 1, 1, 1).
    """

    ngf: int = 32
    ndf: int = 32
    nz: int = 100
    cond_dim: int = 256
    img_size: int = 256
    ch_size: int = 3

    @property
    def family(self) -> str:
        return "dfgan"

    @property
    def in_chans(self) -> int:
        return self.ch_size

    @property
    def g_channels(self) -> list[tuple[int, int]]:
        return g_in_out_channels(self.ngf, self.img_size)

    @property
    def d_channels(self) -> list[tuple[int, int]]:
        return d_in_out_channels(self.ndf, self.img_size)


#: the legacy generator's blocks as multiples of ngf: (in, out), 4 x 4 up to 256 x 256
LEGACY_G_CHANNELS = ((8, 8), (8, 8), (8, 8), (8, 8), (8, 4), (4, 2), (2, 1))


@dataclass(frozen=True)
class DFGANLegacyConfig:
    """The first release's ``NetG(ngf, nz)``: 256 px, a ``cond_dim`` sentence vector (256 there,
    fixed in its ``affine``: ``linear1`` cond_dim -> cond_dim, ``linear2`` cond_dim -> channels).

    Inputs: noise (B, nz) and sentence embedding (B, cond_dim). Output: the image (B, 3, 256,
    256) in [-1, 1] (channels-last in the ports).
    """

    ngf: int = 32
    nz: int = 100
    cond_dim: int = 256

    @property
    def family(self) -> str:
        return "dfgan_legacy"

    @property
    def img_size(self) -> int:
        return 4 * 2 ** (len(LEGACY_G_CHANNELS) - 1)

    @property
    def in_chans(self) -> int:
        return 3


def _affine(out: T.Shapes, key: str, cond: int, hidden: int, ch: int) -> None:
    for mlp in ("fc_gamma", "fc_beta"):
        T.linear(out, f"{key}.{mlp}.linear1", cond, hidden)
        T.linear(out, f"{key}.{mlp}.linear2", hidden, ch)


def _g_shapes(out: T.Shapes, config: DFGANConfig, prefix: str = "netG.") -> None:
    T.linear(out, prefix + "fc", config.nz, config.ngf * 8 * 16)
    cond = config.nz + config.cond_dim
    for i, (cin, cout) in enumerate(config.g_channels):
        key = f"{prefix}GBlocks.{i}"
        T.conv(out, key + ".c1", cin, cout, 3)
        T.conv(out, key + ".c2", cout, cout, 3)
        for fuse, ch in (("fuse1", cin), ("fuse2", cout)):
            for a in ("affine0", "affine1"):
                _affine(out, f"{key}.{fuse}.{a}", cond, ch, ch)
        if cin != cout:
            T.conv(out, key + ".c_sc", cin, cout, 1)
    T.conv(out, prefix + "to_rgb.1", config.g_channels[-1][1], config.ch_size, 3)


def _d_shapes(out: T.Shapes, config: DFGANConfig) -> None:
    T.conv(out, "netD.conv_img", config.ch_size, config.ndf, 3)
    for i, (cin, cout) in enumerate(config.d_channels):
        key = f"netD.DBlocks.{i}"
        out[key + ".gamma"] = (1,)  # a module's own parameters come first in state_dict()
        T.conv(out, key + ".conv_r.0", cin, cout, 4, bias=False)
        T.conv(out, key + ".conv_r.2", cout, cout, 3, bias=False)
        T.conv(out, key + ".conv_s", cin, cout, 1)  # built even where unused (fin == fout)
    T.conv(out, "netC.joint_conv.0", config.ndf * 8 + config.cond_dim, config.ndf * 2, 3, False)
    T.conv(out, "netC.joint_conv.2", config.ndf * 2, 1, 4, bias=False)


def _shapes(config: DFGANConfig) -> T.Shapes:
    out: T.Shapes = {}
    _g_shapes(out, config)
    _d_shapes(out, config)
    return out


def _legacy_shapes(config: DFGANLegacyConfig) -> T.Shapes:
    out: T.Shapes = {}
    ngf, cond = config.ngf, config.cond_dim
    T.linear(out, "fc", config.nz, ngf * 8 * 16)
    for i, (a, b) in enumerate(LEGACY_G_CHANNELS):
        cin, cout, key = a * ngf, b * ngf, f"block{i}"
        out[key + ".gamma"] = (1,)
        T.conv(out, key + ".c1", cin, cout, 3)
        T.conv(out, key + ".c2", cout, cout, 3)
        for j, ch in enumerate((cin, cin, cout, cout)):
            _affine(out, f"{key}.affine{j}", cond, cond, ch)
        if cin != cout:
            T.conv(out, key + ".c_sc", cin, cout, 1)
    T.conv(out, "conv_img.1", ngf, 3, 3)
    return out


def _validate(config: DFGANConfig) -> None:
    positive(config, "ngf", "ndf", "nz", "cond_dim", "img_size", "ch_size")
    size = config.img_size
    if size < 32 or size & (size - 1):
        # below 32 px netD ends under 8 ndf channels, and netC takes 8 ndf + cond_dim
        raise ConfigError(f"config field img_size: {size} is not a power of two >= 32")
    if size > 2**14:
        raise ConfigError(f"config field img_size: {size} is above 16384")


def _validate_legacy(config: DFGANLegacyConfig) -> None:
    positive(config, "ngf", "nz", "cond_dim")


def _vectors(config: Any, shape: Sequence[int] | None) -> tuple[Input, ...]:
    """noise (B, nz) and sentence embedding (B, cond_dim); ``shape`` sets the noise's (its
    batch sets the sentence's)."""
    batch = 1 if shape is None else int(shape[0])
    noise = (batch, config.nz) if shape is None else tuple(int(s) for s in shape)
    if len(noise) != 2:
        raise ValueError(f"noise shape {list(noise)} is not B x nz")
    return (
        Input(noise, Format.CHANNELS_LAST, name="noise"),
        Input((batch, config.cond_dim), Format.CHANNELS_LAST, name="sentence"),
    )


def _check_vectors(model: Any, framework: str, noise: Any, sent: Any, **reference: Any) -> None:
    """noise (B, nz) and sentence (B, cond_dim), floating, one batch: one ``ValueError``."""
    from zoo.validate import dtype_name, is_floating

    name, config = type(model).__name__, model.config
    dims = []
    for what, x, width in (("noise", noise, config.nz), ("sentence", sent, config.cond_dim)):
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[1] not in (width, None):
            raise ValueError(
                f"{name} expects {what} of shape (B, {width}), got {tuple(shape)} "
                f"(rank {len(shape)})"
            )
        dtype = dtype_name(x.dtype)
        if not is_floating(dtype):
            raise ValueError(f"{name} expects a floating-point {what}, got {dtype}: cast it")
        dims.append(shape[0])
    if None not in dims and dims[0] != dims[1]:
        raise ValueError(f"{name}: noise for {dims[0]} samples but sentences for {dims[1]}")


#: what every variant's sentence vector is: DAMSM's text encoder output (256-d)
_SENT = "256-d DAMSM sentence vector, 100-d noise"

register_family(
    Family(
        name="dfgan",
        config=DFGANConfig,
        model="DFGAN",
        shapes=_shapes,
        inputs=_vectors,
        check_inputs=_check_vectors,
        validate=_validate,
        module="dfgan",
        description="DF-GAN text-to-image: netG (fused affine GBlocks), netD, netC",
        # 64 px: four GBlocks (the first without a learned shortcut), four DBlocks (the last
        # with its unused conv_s); no map has as many channels as rows (C x H x W unambiguous)
        tiny=DFGANConfig(ngf=2, ndf=3, nz=6, cond_dim=5, img_size=64),
    )
)
register_family(
    Family(
        name="dfgan_legacy",
        config=DFGANLegacyConfig,
        model="LegacyNetG",
        shapes=_legacy_shapes,
        inputs=_vectors,
        check_inputs=_check_vectors,
        validate=_validate_legacy,
        module="dfgan",
        description="DF-GAN's first release generator (block0-6, 256 px, sentence-only affines)",
        tiny=DFGANLegacyConfig(ngf=1, nz=6, cond_dim=5),
    )
)

for _size in (64, 128, 256):
    register_variant(
        f"dfgan_{_size}",
        DFGANConfig(img_size=_size),
        f"DF-GAN at {_size} px (official code, nf 32, {_SENT})",
    )
register_variant(
    "dfgan_legacy_256", DFGANLegacyConfig(), f"DF-GAN first release NetG, nf 32, 256 px, {_SENT}"
)
