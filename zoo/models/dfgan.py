"""DF-GAN, the reference: ``tobran/DF-GAN``'s modules with their attribute names, so the
official state dicts load as they are (``DFGAN.netG.load_state_dict(ckpt['model']['netG'])``
after the ``module.`` prefix is stripped; ``LegacyNetG.load_state_dict(torch.load('netG.pth'))``).

Current code (``code/models/GAN.py``): ``NetG``, ``NetD``, ``NetC``, ``G_Block``, ``D_Block``,
``DFBLK``, ``Affine``; the first release (``code/model.py``): ``LegacyNetG`` (its ``NetG``),
``LegacyGBlock`` (its ``G_Block``), ``LegacyAffine`` (its ``affine``). The affine layers are
initialized as the official ``Affine._initialize`` does (``fc_gamma.linear2``: weight 0, bias 1;
``fc_beta.linear2``: weight 0, bias 0: the identity transform at the start of training); every
other layer keeps PyTorch's default. Activations are not in place (the same numbers; autograd
of the gradient penalty stays simple). Up-sampling is ``F.interpolate(scale_factor=2)``,
nearest, as there.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from zoo.families.dfgan import LEGACY_G_CHANNELS, DFGANConfig, DFGANLegacyConfig
from zoo.registry import register_model
from zoo.tensor_format import Format
from zoo.validate import check_inputs

__all__ = [
    "Affine",
    "DFBLK",
    "DFGAN",
    "D_Block",
    "G_Block",
    "LegacyAffine",
    "LegacyGBlock",
    "LegacyNetG",
    "NetC",
    "NetD",
    "NetG",
]

#: the slope of every LeakyReLU in DF-GAN
SLOPE = 0.2


def _map(module: nn.Module) -> nn.Module:
    """An activation of the maps (B, C, H, W), its output declared channels-first for the parity
    records (a 64 x 64 map of 64 channels reads the same in either order)."""
    module.output_format = Format.CHANNELS_FIRST
    return module


def _mlp(cond_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("linear1", nn.Linear(cond_dim, hidden)),
                ("relu1", nn.ReLU()),
                ("linear2", nn.Linear(hidden, out)),
            ]
        )
    )


class Affine(nn.Module):
    """``weight(y) * x + bias(y)`` per channel: x (B, C, H, W), y (B, cond_dim); ``fc_gamma`` /
    ``fc_beta``: Linear(cond_dim, C) -> ReLU -> Linear(C, C), initialized to the identity."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, cond_dim: int, num_features: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = num_features if hidden is None else hidden
        self.fc_gamma = _mlp(cond_dim, hidden, num_features)
        self.fc_beta = _mlp(cond_dim, hidden, num_features)
        self._initialize()

    def _initialize(self) -> None:
        nn.init.zeros_(self.fc_gamma.linear2.weight.data)
        nn.init.ones_(self.fc_gamma.linear2.bias.data)
        nn.init.zeros_(self.fc_beta.linear2.weight.data)
        nn.init.zeros_(self.fc_beta.linear2.bias.data)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self.fc_gamma(y)[:, :, None, None]
        bias = self.fc_beta(y)[:, :, None, None]
        return weight * x + bias


class LegacyAffine(Affine):
    """The first release's ``affine``: the hidden width is the sentence's (256 there)."""

    def __init__(self, cond_dim: int, num_features: int) -> None:
        super().__init__(cond_dim, num_features, hidden=cond_dim)


class DFBLK(nn.Module):
    """affine0 -> LeakyReLU 0.2 -> affine1 -> LeakyReLU 0.2."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, cond_dim: int, in_ch: int) -> None:
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.affine0(x, y), SLOPE)
        return F.leaky_relu(self.affine1(h, y), SLOPE)


class G_Block(nn.Module):  # noqa: N801 (the official name)
    """Nearest 2x up-sampling, then shortcut (``c_sc`` 1x1 where the width changes) + residual
    (fuse1 -> c1 -> fuse2 -> c2)."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBLK(cond_dim, in_ch)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2)
        shortcut = self.c_sc(x) if self.learnable_sc else x
        h = self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))
        return shortcut + h


class NetG(nn.Module):
    """noise (B, nz), sentence (B, cond_dim) -> image (B, ch_size, S, S) in [-1, 1]."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, ngf: int, nz: int, cond_dim: int, imsize: int, ch_size: int) -> None:
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        pairs = DFGANConfig(ngf=ngf, img_size=imsize).g_channels
        self.GBlocks = nn.ModuleList(G_Block(cond_dim + nz, i, o) for i, o in pairs)
        self.to_rgb = nn.Sequential(
            _map(nn.LeakyReLU(SLOPE)),
            nn.Conv2d(pairs[-1][1], ch_size, 3, 1, 1),
            _map(nn.Tanh()),
        )

    def forward(self, noise: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, c), dim=1)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class D_Block(nn.Module):  # noqa: N801 (the official name)
    """x (B, fin, H, W) -> (B, fout, H/2, W/2): shortcut (``conv_s`` 1x1 where the width changes;
    built always, as there) average-pooled + ``gamma`` x residual (4x4 stride-2 conv, 3x3)."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, fin: int, fout: int, downsample: bool = True) -> None:
        super().__init__()
        self.downsample = downsample
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False),
            _map(nn.LeakyReLU(SLOPE)),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False),
            _map(nn.LeakyReLU(SLOPE)),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv_r(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x + self.gamma * res


class NetD(nn.Module):
    """image (B, ch_size, S, S) -> features (B, 8 ndf, 4, 4)."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, ndf: int, imsize: int = 128, ch_size: int = 3) -> None:
        super().__init__()
        self.conv_img = nn.Conv2d(ch_size, ndf, 3, 1, 1)
        pairs = DFGANConfig(ndf=ndf, img_size=imsize).d_channels
        self.DBlocks = nn.ModuleList(D_Block(i, o) for i, o in pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nn.Module):
    """features (B, 8 ndf, 4, 4), sentence (B, cond_dim) -> logits (B, 1, 1, 1): the sentence
    tiled over the 4 x 4 map, concatenated, ``joint_conv``."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, ndf: int, cond_dim: int = 256) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            _map(nn.LeakyReLU(SLOPE)),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.view(-1, self.cond_dim, 1, 1).repeat(1, 1, 4, 4)
        return self.joint_conv(torch.cat((out, y), 1))


@register_model("dfgan", "torch")
class DFGAN(nn.Module):
    """``netG``, ``netD``, ``netC`` of one DF-GAN (the official checkpoint's ``model`` dict).

    Call: noise (B, nz), sentence (B, cond_dim) -> (image (B, ch_size, S, S), logits
    (B, 1, 1, 1)): ``netG``'s image and ``netC(netD(image), sentence)``. Each network is
    callable alone; training losses: ``zoo.dfgan_training``.
    """

    output_format = Format.CHANNELS_FIRST

    def __init__(self, config: DFGANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.netG = NetG(c.ngf, c.nz, c.cond_dim, c.img_size, c.ch_size)
        self.netD = NetD(c.ndf, c.img_size, c.ch_size)
        self.netC = NetC(c.ndf, c.cond_dim)

    def forward(self, noise: torch.Tensor, sent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_inputs(self, "torch", noise, sent)
        image = self.netG(noise, sent)
        return image, self.netC(self.netD(image), sent)


class LegacyGBlock(nn.Module):
    """The first release's ``G_Block`` (no up-sampling of its own): shortcut + ``gamma`` x
    residual (affine0, affine1 -> c1 -> affine2, affine3 -> c2), LeakyReLU 0.2 after each
    affine."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.affine0 = LegacyAffine(cond_dim, in_ch)
        self.affine1 = LegacyAffine(cond_dim, in_ch)
        self.affine2 = LegacyAffine(cond_dim, out_ch)
        self.affine3 = LegacyAffine(cond_dim, out_ch)
        self.gamma = nn.Parameter(torch.zeros(1))
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shortcut = self.c_sc(x) if self.learnable_sc else x
        h = F.leaky_relu(self.affine0(x, y), SLOPE)
        h = self.c1(F.leaky_relu(self.affine1(h, y), SLOPE))
        h = F.leaky_relu(self.affine2(h, y), SLOPE)
        h = self.c2(F.leaky_relu(self.affine3(h, y), SLOPE))
        return shortcut + self.gamma * h


@register_model("dfgan_legacy", "torch")
class LegacyNetG(nn.Module):
    """The first release's ``NetG``: noise (B, nz), sentence (B, cond_dim) -> image (B, 3, 256,
    256) in [-1, 1]; ``block0`` at 4 x 4, each later block after a nearest 2x up-sampling."""

    output_format = Format.CHANNELS_FIRST

    def __init__(self, config: DFGANLegacyConfig) -> None:
        super().__init__()
        self.config = config
        ngf = config.ngf
        self.ngf = ngf
        self.fc = nn.Linear(config.nz, ngf * 8 * 4 * 4)
        for i, (a, b) in enumerate(LEGACY_G_CHANNELS):
            setattr(self, f"block{i}", LegacyGBlock(config.cond_dim, a * ngf, b * ngf))
        self.conv_img = nn.Sequential(
            _map(nn.LeakyReLU(SLOPE)), nn.Conv2d(ngf, 3, 3, 1, 1), _map(nn.Tanh())
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        check_inputs(self, "torch", x, c)
        out = self.fc(x).view(x.size(0), 8 * self.ngf, 4, 4)
        for i in range(len(LEGACY_G_CHANNELS)):
            if i:
                out = F.interpolate(out, scale_factor=2)
            out = getattr(self, f"block{i}")(out, c)
        return self.conv_img(out)
