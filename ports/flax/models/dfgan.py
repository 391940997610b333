"""DF-GAN, Flax NNX port of ``zoo.models.dfgan``: the same module tree and attribute names
(``netG.GBlocks[0].fuse1.affine0.fc_gamma.linear1.kernel``, ``netD.DBlocks[0].conv_r[0]``),
channels-last.

The one rename: the blocks' learned residual scale, the reference's ``gamma``, is the parameter
``residual_gamma`` (``gamma`` is a norm's weight to the converter's leaf rules). The affine
layers start as the official ``Affine._initialize`` sets them (``fc_gamma.linear2``: kernel 0,
bias 1; ``fc_beta.linear2``: 0, 0); other layers keep Flax's initializers. Nearest 2x
up-sampling is a repeat along H and W; convolutions pad as PyTorch's (explicit pixels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ports.flax.layers.linear import Linear
from ports.flax.layers.pool import ReLU
from zoo.families.dfgan import LEGACY_G_CHANNELS, DFGANConfig, DFGANLegacyConfig
from zoo.registry import register_model
from zoo.validate import check_inputs

__all__ = [
    "Affine",
    "AffineMLP",
    "DFBLK",
    "DFGAN",
    "D_Block",
    "G_Block",
    "LeakyReLU",
    "LegacyAffine",
    "LegacyGBlock",
    "LegacyNetG",
    "NetC",
    "NetD",
    "NetG",
    "Tanh",
    "upsample_nearest_2x",
]

SLOPE = 0.2


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 2H, 2W, C), each pixel repeated: ``F.interpolate(scale_factor=2)``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class LeakyReLU(nnx.Module):
    """``torch.nn.LeakyReLU(0.2)`` as a module (a parity record at its path). Any shape."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.leaky_relu(x, SLOPE)


class Tanh(nnx.Module):
    """``torch.nn.Tanh`` as a module."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x)


def _conv(i: int, o: int, k: int, rngs: nnx.Rngs, use_bias: bool = True, stride: int = 1):
    pad = (k - 1) // 2 if k == 3 else (1 if stride == 2 else 0)
    return nnx.Conv(
        i, o, (k, k), strides=(stride, stride), padding=((pad, pad),) * 2, use_bias=use_bias,
        rngs=rngs,
    )  # fmt: skip


class AffineMLP(nnx.Module):
    """``fc_gamma`` / ``fc_beta``: linear1 -> ReLU (``relu1``) -> linear2; ``linear2`` starts
    at kernel 0 and bias ``bias_init``."""

    def __init__(self, cond: int, hidden: int, out: int, bias_init, *, rngs: nnx.Rngs) -> None:
        self.linear1 = Linear(cond, hidden, rngs=rngs)
        self.relu1 = ReLU()
        self.linear2 = Linear(
            hidden, out, kernel_init=nnx.initializers.zeros, bias_init=bias_init, rngs=rngs
        )

    def __call__(self, y: jax.Array) -> jax.Array:
        return self.linear2(self.relu1(self.linear1(y)))


class Affine(nnx.Module):
    """x (B, H, W, C) -> ``fc_gamma(y) * x + fc_beta(y)`` per channel; y (B, cond_dim)."""

    def __init__(self, cond: int, ch: int, hidden: int | None = None, *, rngs: nnx.Rngs) -> None:
        hidden = ch if hidden is None else hidden
        self.fc_gamma = AffineMLP(cond, hidden, ch, nnx.initializers.ones, rngs=rngs)
        self.fc_beta = AffineMLP(cond, hidden, ch, nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return self.fc_gamma(y)[:, None, None, :] * x + self.fc_beta(y)[:, None, None, :]


class LegacyAffine(Affine):
    """The first release's ``affine``: the hidden width is the sentence's (256 there)."""

    def __init__(self, cond: int, ch: int, *, rngs: nnx.Rngs) -> None:
        super().__init__(cond, ch, cond, rngs=rngs)


class DFBLK(nnx.Module):
    """affine0 -> LeakyReLU 0.2 -> affine1 -> LeakyReLU 0.2."""

    def __init__(self, cond: int, ch: int, *, rngs: nnx.Rngs) -> None:
        self.affine0 = Affine(cond, ch, rngs=rngs)
        self.affine1 = Affine(cond, ch, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = nnx.leaky_relu(self.affine0(x, y), SLOPE)
        return nnx.leaky_relu(self.affine1(h, y), SLOPE)


class G_Block(nnx.Module):  # noqa: N801 (the official name)
    """Nearest 2x up-sampling, then shortcut (``c_sc`` where the width changes) + residual
    (fuse1 -> c1 -> fuse2 -> c2)."""

    def __init__(self, cond: int, in_ch: int, out_ch: int, *, rngs: nnx.Rngs) -> None:
        self.learnable_sc = in_ch != out_ch
        self.c1 = _conv(in_ch, out_ch, 3, rngs)
        self.c2 = _conv(out_ch, out_ch, 3, rngs)
        self.fuse1 = DFBLK(cond, in_ch, rngs=rngs)
        self.fuse2 = DFBLK(cond, out_ch, rngs=rngs)
        if self.learnable_sc:
            self.c_sc = _conv(in_ch, out_ch, 1, rngs)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        x = upsample_nearest_2x(x)
        shortcut = self.c_sc(x) if self.learnable_sc else x
        return shortcut + self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))


class NetG(nnx.Module):
    """noise (B, nz), sentence (B, cond_dim) -> image (B, S, S, ch_size) in [-1, 1]."""

    def __init__(self, config: DFGANConfig, *, rngs: nnx.Rngs) -> None:
        self.ngf = config.ngf
        cond, pairs = config.nz + config.cond_dim, config.g_channels
        self.fc = Linear(config.nz, config.ngf * 8 * 16, rngs=rngs)
        self.GBlocks = nnx.List([G_Block(cond, i, o, rngs=rngs) for i, o in pairs])
        self.to_rgb = nnx.List([LeakyReLU(), _conv(pairs[-1][1], config.ch_size, 3, rngs), Tanh()])

    def __call__(self, noise: jax.Array, c: jax.Array) -> jax.Array:
        out = self.fc(noise).reshape(noise.shape[0], 8 * self.ngf, 4, 4).transpose(0, 2, 3, 1)
        cond = jnp.concatenate([noise, c], axis=1)
        for block in self.GBlocks:
            out = block(out, cond)
        for layer in self.to_rgb:
            out = layer(out)
        return out


class D_Block(nnx.Module):  # noqa: N801 (the official name)
    """x (B, H, W, fin) -> (B, H/2, W/2, fout): shortcut (``conv_s`` where the width changes;
    built always) average-pooled + ``residual_gamma`` x residual (4x4 stride 2, 3x3)."""

    def __init__(self, fin: int, fout: int, *, rngs: nnx.Rngs) -> None:
        self.learned_shortcut = fin != fout
        self.conv_r = nnx.List(
            [
                _conv(fin, fout, 4, rngs, use_bias=False, stride=2),
                LeakyReLU(),
                _conv(fout, fout, 3, rngs, use_bias=False),
                LeakyReLU(),
            ]
        )
        self.conv_s = _conv(fin, fout, 1, rngs)
        self.residual_gamma = nnx.Param(jnp.zeros((1,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        res = x
        for layer in self.conv_r:
            res = layer(res)
        if self.learned_shortcut:
            x = self.conv_s(x)
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        return x + self.residual_gamma[...] * res


class NetD(nnx.Module):
    """image (B, S, S, ch_size) -> features (B, 4, 4, 8 ndf)."""

    def __init__(self, config: DFGANConfig, *, rngs: nnx.Rngs) -> None:
        self.conv_img = _conv(config.ch_size, config.ndf, 3, rngs)
        self.DBlocks = nnx.List([D_Block(i, o, rngs=rngs) for i, o in config.d_channels])

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nnx.Module):
    """features (B, 4, 4, 8 ndf), sentence (B, cond_dim) -> logits (B, 1, 1, 1)."""

    def __init__(self, config: DFGANConfig, *, rngs: nnx.Rngs) -> None:
        ndf, cond = config.ndf, config.cond_dim
        self.joint_conv = nnx.List(
            [
                _conv(ndf * 8 + cond, ndf * 2, 3, rngs, use_bias=False),
                LeakyReLU(),
                _conv(ndf * 2, 1, 4, rngs, use_bias=False),
            ]
        )

    def __call__(self, out: jax.Array, y: jax.Array) -> jax.Array:
        y = jnp.broadcast_to(y[:, None, None, :], (y.shape[0], 4, 4, y.shape[1]))
        h = jnp.concatenate([out, y.astype(out.dtype)], axis=-1)
        for layer in self.joint_conv:
            h = layer(h)
        return h


@register_model("dfgan", "flax")
class DFGAN(nnx.Module):
    """``netG``, ``netD``, ``netC``. Call: noise (B, nz), sentence (B, cond_dim) -> (image
    (B, S, S, ch_size), logits (B, 1, 1, 1)). Training losses: ``ports.flax.dfgan_training``."""

    def __init__(self, config: DFGANConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.netG = NetG(config, rngs=rngs)
        self.netD = NetD(config, rngs=rngs)
        self.netC = NetC(config, rngs=rngs)

    def __call__(self, noise: jax.Array, sent: jax.Array) -> tuple[jax.Array, jax.Array]:
        check_inputs(self, "flax", noise, sent)
        image = self.netG(noise, sent)
        return image, self.netC(self.netD(image), sent)


class LegacyGBlock(nnx.Module):
    """The first release's ``G_Block``: shortcut + ``residual_gamma`` x residual (affine0,
    affine1 -> c1 -> affine2, affine3 -> c2), LeakyReLU 0.2 after each affine."""

    def __init__(self, cond: int, in_ch: int, out_ch: int, *, rngs: nnx.Rngs) -> None:
        self.learnable_sc = in_ch != out_ch
        self.c1 = _conv(in_ch, out_ch, 3, rngs)
        self.c2 = _conv(out_ch, out_ch, 3, rngs)
        self.affine0 = LegacyAffine(cond, in_ch, rngs=rngs)
        self.affine1 = LegacyAffine(cond, in_ch, rngs=rngs)
        self.affine2 = LegacyAffine(cond, out_ch, rngs=rngs)
        self.affine3 = LegacyAffine(cond, out_ch, rngs=rngs)
        self.residual_gamma = nnx.Param(jnp.zeros((1,)))
        if self.learnable_sc:
            self.c_sc = _conv(in_ch, out_ch, 1, rngs)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        shortcut = self.c_sc(x) if self.learnable_sc else x
        h = nnx.leaky_relu(self.affine0(x, y), SLOPE)
        h = self.c1(nnx.leaky_relu(self.affine1(h, y), SLOPE))
        h = nnx.leaky_relu(self.affine2(h, y), SLOPE)
        h = self.c2(nnx.leaky_relu(self.affine3(h, y), SLOPE))
        return shortcut + self.residual_gamma[...] * h


@register_model("dfgan_legacy", "flax")
class LegacyNetG(nnx.Module):
    """The first release's ``NetG``: noise (B, nz), sentence (B, cond_dim) -> image (B, 256,
    256, 3) in [-1, 1]."""

    def __init__(self, config: DFGANLegacyConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        ngf = config.ngf
        self.fc = Linear(config.nz, ngf * 8 * 16, rngs=rngs)
        for i, (a, b) in enumerate(LEGACY_G_CHANNELS):
            block = LegacyGBlock(config.cond_dim, a * ngf, b * ngf, rngs=rngs)
            setattr(self, f"block{i}", block)
        self.conv_img = nnx.List([LeakyReLU(), _conv(ngf, 3, 3, rngs), Tanh()])

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        check_inputs(self, "flax", x, c)
        ngf = self.config.ngf
        out = self.fc(x).reshape(x.shape[0], 8 * ngf, 4, 4).transpose(0, 2, 3, 1)
        for i in range(len(LEGACY_G_CHANNELS)):
            if i:
                out = upsample_nearest_2x(out)
            out = getattr(self, f"block{i}")(out, c)
        for layer in self.conv_img:
            out = layer(out)
        return out
