"""DF-GAN, Keras 3 port of ``zoo.models.dfgan``: the same module tree and names
(``root/netG/GBlocks-0/fuse1/affine0/fc_gamma/linear1/kernel``, ``root/netD/DBlocks-0/conv_r-0``),
channels-last, ``keras.ops`` only.

The one rename: the blocks' learned residual scale, the reference's ``gamma``, is the variable
``residual_gamma`` (``gamma`` is a norm's weight to the converter's leaf rules). The affine
layers start as the official ``Affine._initialize`` sets them (``fc_gamma.linear2``: kernel 0,
bias 1; ``fc_beta.linear2``: 0, 0); other layers keep Keras's initializers. Nearest 2x
up-sampling is a repeat along H and W (what ``F.interpolate(scale_factor=2)`` computes); the
4 x 4 stride-2 convolution pads one pixel on each side explicitly, as PyTorch's ``padding=1``.
"""

from __future__ import annotations

import keras
from keras import ops

from ports.keras.layers.dense import Dense
from ports.keras.layers.window import Tensor
from ports.keras.models.base import ZooModel
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
    "leaky_relu",
    "upsample_nearest_2x",
]

SLOPE = 0.2


def upsample_nearest_2x(x: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, 2H, 2W, C), each pixel repeated: ``F.interpolate(scale_factor=2)``."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def leaky_relu(x: Tensor) -> Tensor:
    """LeakyReLU 0.2 as PyTorch computes it in every dtype (``x * 0.2`` below zero):
    ``ops.leaky_relu`` on TensorFlow takes the slope as a float32 attribute, off by 1.5e-8
    relative in float64."""
    return ops.where(x > 0, x, x * SLOPE)


class LeakyReLU(keras.layers.Layer):
    """``torch.nn.LeakyReLU(0.2)`` as a layer (a parity record at its path). Any shape."""

    def call(self, x: Tensor) -> Tensor:
        return leaky_relu(x)


def _conv(filters: int, kernel: int, name: str, use_bias: bool = True, stride: int = 1):
    padding = "same" if kernel == 3 and stride == 1 else "valid"
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=use_bias, name=name
    )


class AffineMLP(keras.layers.Layer):
    """``fc_gamma`` / ``fc_beta``: linear1 -> ReLU (``relu1``) -> linear2; ``linear2`` starts
    at kernel 0 and bias ``bias_init``."""

    def __init__(self, hidden: int, out: int, bias_init: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.linear1 = Dense(hidden, name="linear1")
        self.relu1 = keras.layers.ReLU(name="relu1")
        self.linear2 = Dense(
            out, kernel_initializer="zeros", bias_initializer=bias_init, name="linear2"
        )

    def build(self, input_shape: tuple) -> None:
        self.linear1.build(input_shape)
        self.linear2.build((input_shape[0], self.linear1.units))

    def call(self, y: Tensor) -> Tensor:
        return self.linear2(self.relu1(self.linear1(y)))


class Affine(keras.layers.Layer):
    """x (B, H, W, C) -> ``fc_gamma(y) * x + fc_beta(y)`` per channel; y (B, cond_dim)."""

    def __init__(self, num_features: int, hidden: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        hidden = num_features if hidden is None else hidden
        self.fc_gamma = AffineMLP(hidden, num_features, "ones", name="fc_gamma")
        self.fc_beta = AffineMLP(hidden, num_features, "zeros", name="fc_beta")

    def build(self, cond_shape: tuple) -> None:
        self.fc_gamma.build(cond_shape)
        self.fc_beta.build(cond_shape)

    def call(self, x: Tensor, y: Tensor) -> Tensor:
        weight = self.fc_gamma(y)[:, None, None, :]
        bias = self.fc_beta(y)[:, None, None, :]
        return weight * x + bias


class LegacyAffine(Affine):
    """The first release's ``affine``: the hidden width is the sentence's (256 there)."""

    def __init__(self, num_features: int, cond_dim: int, **kwargs) -> None:
        super().__init__(num_features, hidden=cond_dim, **kwargs)


class DFBLK(keras.layers.Layer):
    """affine0 -> LeakyReLU 0.2 -> affine1 -> LeakyReLU 0.2."""

    def __init__(self, in_ch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.affine0 = Affine(in_ch, name="affine0")
        self.affine1 = Affine(in_ch, name="affine1")

    def build(self, cond_shape: tuple) -> None:
        self.affine0.build(cond_shape)
        self.affine1.build(cond_shape)

    def call(self, x: Tensor, y: Tensor) -> Tensor:
        h = leaky_relu(self.affine0(x, y))
        return leaky_relu(self.affine1(h, y))


class G_Block(keras.layers.Layer):  # noqa: N801 (the official name)
    """Nearest 2x up-sampling, then shortcut (``c_sc`` where the width changes) + residual
    (fuse1 -> c1 -> fuse2 -> c2)."""

    def __init__(self, in_ch: int, out_ch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_ch, self.out_ch = in_ch, out_ch
        self.learnable_sc = in_ch != out_ch
        self.c1 = _conv(out_ch, 3, "c1")
        self.c2 = _conv(out_ch, 3, "c2")
        self.fuse1 = DFBLK(in_ch, name="fuse1")
        self.fuse2 = DFBLK(out_ch, name="fuse2")
        if self.learnable_sc:
            self.c_sc = _conv(out_ch, 1, "c_sc")

    def build(self, cond_shape: tuple) -> None:
        b = cond_shape[0]
        self.c1.build((b, None, None, self.in_ch))
        self.c2.build((b, None, None, self.out_ch))
        self.fuse1.build(cond_shape)
        self.fuse2.build(cond_shape)
        if self.learnable_sc:
            self.c_sc.build((b, None, None, self.in_ch))

    def call(self, x: Tensor, y: Tensor) -> Tensor:
        x = upsample_nearest_2x(x)
        shortcut = self.c_sc(x) if self.learnable_sc else x
        return shortcut + self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))


class NetG(keras.layers.Layer):
    """noise (B, nz), sentence (B, cond_dim) -> image (B, S, S, ch_size) in [-1, 1]."""

    def __init__(self, config: DFGANConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        pairs = config.g_channels
        self.fc = Dense(config.ngf * 8 * 16, name="fc")
        self.GBlocks = [G_Block(i, o, name=f"GBlocks-{n}") for n, (i, o) in enumerate(pairs)]
        self.to_rgb = [
            LeakyReLU(name="to_rgb-0"),
            _conv(config.ch_size, 3, "to_rgb-1"),
            keras.layers.Activation("tanh", name="to_rgb-2"),
        ]

    def build(self, input_shape: tuple | None = None) -> None:
        c = self.config
        b = None if input_shape is None else input_shape[0]
        self.fc.build((b, c.nz))
        for block in self.GBlocks:
            block.build((b, c.nz + c.cond_dim))
        self.to_rgb[1].build((b, None, None, c.g_channels[-1][1]))

    def call(self, noise: Tensor, c: Tensor) -> Tensor:
        out = ops.reshape(self.fc(noise), (-1, 8 * self.config.ngf, 4, 4))
        out = ops.transpose(out, (0, 2, 3, 1))  # the reference's view is channels-first
        cond = ops.concatenate([noise, c], axis=1)
        for block in self.GBlocks:
            out = block(out, cond)
        for layer in self.to_rgb:
            out = layer(out)
        return out


class D_Block(keras.layers.Layer):  # noqa: N801 (the official name)
    """x (B, H, W, fin) -> (B, H/2, W/2, fout): shortcut (``conv_s`` where the width changes;
    built always) average-pooled + ``residual_gamma`` x residual (4x4 stride 2, 3x3)."""

    def __init__(self, fin: int, fout: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fin, self.fout = fin, fout
        self.learned_shortcut = fin != fout
        self.conv_r = [
            _conv(fout, 4, "conv_r-0", use_bias=False, stride=2),
            LeakyReLU(name="conv_r-1"),
            _conv(fout, 3, "conv_r-2", use_bias=False),
            LeakyReLU(name="conv_r-3"),
        ]
        self.conv_s = _conv(fout, 1, "conv_s")

    def build(self, input_shape: tuple) -> None:
        b = input_shape[0]
        self.residual_gamma = self.add_weight(
            name="residual_gamma", shape=(1,), initializer="zeros"
        )
        self.conv_r[0].build((b, None, None, self.fin))
        self.conv_r[2].build((b, None, None, self.fout))
        self.conv_s.build((b, None, None, self.fin))

    def call(self, x: Tensor) -> Tensor:
        res = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])  # PyTorch's padding=1
        for layer in self.conv_r:
            res = layer(res)
        if self.learned_shortcut:
            x = self.conv_s(x)
        x = ops.average_pool(x, 2, 2, padding="valid", data_format="channels_last")
        return x + self.residual_gamma * res


class NetD(keras.layers.Layer):
    """image (B, S, S, ch_size) -> features (B, 4, 4, 8 ndf)."""

    def __init__(self, config: DFGANConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.conv_img = _conv(config.ndf, 3, "conv_img")
        self.DBlocks = [
            D_Block(i, o, name=f"DBlocks-{n}") for n, (i, o) in enumerate(config.d_channels)
        ]

    def build(self, input_shape: tuple | None = None) -> None:
        b = None if input_shape is None else input_shape[0]
        self.conv_img.build((b, None, None, self.config.ch_size))
        for block in self.DBlocks:
            block.build((b, None, None, block.fin))

    def call(self, x: Tensor) -> Tensor:
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(keras.layers.Layer):
    """features (B, 4, 4, 8 ndf), sentence (B, cond_dim) -> logits (B, 1, 1, 1)."""

    def __init__(self, config: DFGANConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.joint_conv = [
            _conv(config.ndf * 2, 3, "joint_conv-0", use_bias=False),
            LeakyReLU(name="joint_conv-1"),
            _conv(1, 4, "joint_conv-2", use_bias=False),
        ]

    def build(self, input_shape: tuple | None = None) -> None:
        c = self.config
        b = None if input_shape is None else input_shape[0]
        self.joint_conv[0].build((b, 4, 4, c.ndf * 8 + c.cond_dim))
        self.joint_conv[2].build((b, 4, 4, c.ndf * 2))

    def call(self, out: Tensor, y: Tensor) -> Tensor:
        y = ops.tile(y[:, None, None, :], (1, 4, 4, 1))
        h = ops.concatenate([out, ops.cast(y, out.dtype)], axis=-1)
        for layer in self.joint_conv:
            h = layer(h)
        return h


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("dfgan", "keras")
class DFGAN(ZooModel):
    """``netG``, ``netD``, ``netC``. Call: noise (B, nz), sentence (B, cond_dim) -> (image
    (B, S, S, ch_size), logits (B, 1, 1, 1)). Training losses: ``ports.keras.dfgan_training``."""

    def __init__(self, config: DFGANConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.netG = NetG(config, name="netG")
        self.netD = NetD(config, name="netD")
        self.netC = NetC(config, name="netC")

    def build(self, input_shape: tuple | None = None) -> None:
        b = None if input_shape is None else input_shape[0]
        self.netG.build((b, self.config.nz))
        self.netD.build((b, None, None, self.config.ch_size))
        self.netC.build((b, 4, 4, 8 * self.config.ndf))

    def call(self, noise: Tensor, sent: Tensor, training: bool | None = None):
        check_inputs(self, "keras", noise, sent)
        image = self.netG(noise, sent)
        return image, self.netC(self.netD(image), sent)


class LegacyGBlock(keras.layers.Layer):
    """The first release's ``G_Block``: shortcut + ``residual_gamma`` x residual (affine0,
    affine1 -> c1 -> affine2, affine3 -> c2), LeakyReLU 0.2 after each affine."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_ch, self.out_ch = in_ch, out_ch
        self.learnable_sc = in_ch != out_ch
        self.c1 = _conv(out_ch, 3, "c1")
        self.c2 = _conv(out_ch, 3, "c2")
        widths = (in_ch, in_ch, out_ch, out_ch)
        self.affines = [
            LegacyAffine(ch, cond_dim, name=f"affine{j}") for j, ch in enumerate(widths)
        ]
        if self.learnable_sc:
            self.c_sc = _conv(out_ch, 1, "c_sc")

    def build(self, cond_shape: tuple) -> None:
        b = cond_shape[0]
        self.residual_gamma = self.add_weight(
            name="residual_gamma", shape=(1,), initializer="zeros"
        )
        self.c1.build((b, None, None, self.in_ch))
        self.c2.build((b, None, None, self.out_ch))
        for affine in self.affines:
            affine.build(cond_shape)
        if self.learnable_sc:
            self.c_sc.build((b, None, None, self.in_ch))

    def call(self, x: Tensor, y: Tensor) -> Tensor:
        a0, a1, a2, a3 = self.affines
        shortcut = self.c_sc(x) if self.learnable_sc else x
        h = leaky_relu(a0(x, y))
        h = self.c1(leaky_relu(a1(h, y)))
        h = leaky_relu(a2(h, y))
        h = self.c2(leaky_relu(a3(h, y)))
        return shortcut + self.residual_gamma * h


@keras.saving.register_keras_serializable(package="vit_zoo")
@register_model("dfgan_legacy", "keras")
class LegacyNetG(ZooModel):
    """The first release's ``NetG``: noise (B, nz), sentence (B, cond_dim) -> image (B, 256,
    256, 3) in [-1, 1]."""

    def __init__(self, config: DFGANLegacyConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        ngf = config.ngf
        self.fc = Dense(ngf * 8 * 16, name="fc")
        self.blocks = [
            LegacyGBlock(config.cond_dim, a * ngf, b * ngf, name=f"block{i}")
            for i, (a, b) in enumerate(LEGACY_G_CHANNELS)
        ]
        self.conv_img = [
            LeakyReLU(name="conv_img-0"),
            _conv(3, 3, "conv_img-1"),
            keras.layers.Activation("tanh", name="conv_img-2"),
        ]

    def build(self, input_shape: tuple | None = None) -> None:
        c = self.config
        b = None if input_shape is None else input_shape[0]
        self.fc.build((b, c.nz))
        for block in self.blocks:
            block.build((b, c.cond_dim))
        self.conv_img[1].build((b, None, None, c.ngf))

    def call(self, x: Tensor, c: Tensor, training: bool | None = None) -> Tensor:
        check_inputs(self, "keras", x, c)
        out = ops.reshape(self.fc(x), (-1, 8 * self.config.ngf, 4, 4))
        out = ops.transpose(out, (0, 2, 3, 1))
        for i, block in enumerate(self.blocks):
            if i:
                out = upsample_nearest_2x(out)
            out = block(out, c)
        for layer in self.conv_img:
            out = layer(out)
        return out
