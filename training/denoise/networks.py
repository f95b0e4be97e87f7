"""Wavelet residual denoising networks (torch/MONAI).

``WaveletResNet`` follows the seed design (Kang, Min and Ye, Med Phys 44 (2017) e360):
a fixed directional wavelet filter bank gives 15 sub-band channels; 3x3 conv + batch
norm + ReLU modules of 128 channels, each module wrapped by a bypass (identity)
connection; the outputs of all modules are concatenated before the output layers; the
network predicts the *noise* (residual) and the denoised image is ``input - noise``.

``light`` is the CPU variant: same fixed filter bank, then a 2x space-to-depth
(pixel unshuffle) so the convolutions run at half resolution with 32 channels,
and a pixel shuffle back to full resolution for the noise estimate.

Inputs and outputs are ``HU / 1000`` (water 0, air -1), shape ``(N, 1, H, W)``;
``light`` needs even H and W.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn

from models.denoise.filterbank import directional_filter_bank

HU_SCALE = 1000.0


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a wavelet residual network."""

    channels: int = 128
    modules: int = 3
    convs_per_module: int = 3
    downsample: int = 1  # 1: full resolution (seed); 2: pixel unshuffle (light)
    bank_size: int = 13

    def to_dict(self) -> dict:
        return asdict(self)


SEED = NetConfig(channels=128, modules=2, convs_per_module=2, downsample=1)
LIGHT = NetConfig(channels=24, modules=2, convs_per_module=2, downsample=2)
VARIANTS = {"seed": SEED, "light": LIGHT}


def _cbr(cin: int, cout: int) -> nn.Module:
    """3x3 conv + batch norm + ReLU (MONAI block)."""
    return Convolution(spatial_dims=2, in_channels=cin, out_channels=cout, kernel_size=3, act="RELU", norm="BATCH", bias=False)


class _BypassModule(nn.Module):
    """Conv-BN-ReLU stack with an identity bypass: ``y = x + f(x)``."""

    def __init__(self, ch: int, n: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[_cbr(ch, ch) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class WaveletResNet(nn.Module):
    """Directional-wavelet residual (noise-predicting) denoiser."""

    def __init__(self, cfg: NetConfig = SEED) -> None:
        super().__init__()
        self.cfg = cfg
        bank = torch.from_numpy(directional_filter_bank(cfg.bank_size))[:, None]
        self.bank = nn.Conv2d(1, bank.shape[0], cfg.bank_size, padding=cfg.bank_size // 2, bias=False)
        self.bank.weight.data.copy_(bank)
        self.bank.weight.requires_grad_(False)
        s = cfg.downsample
        cin = bank.shape[0] * s * s
        self.unshuffle = nn.PixelUnshuffle(s) if s > 1 else nn.Identity()
        self.head = _cbr(cin, cfg.channels)
        self.blocks = nn.ModuleList([_BypassModule(cfg.channels, cfg.convs_per_module) for _ in range(cfg.modules)])
        self.fuse = _cbr(cfg.channels * cfg.modules, cfg.channels)
        self.out = nn.Conv2d(cfg.channels, s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s) if s > 1 else nn.Identity()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def receptive_radius(self) -> int:
        """Half-width of the receptive field in input pixels (for tiling overlap)."""
        n_conv = 1 + self.cfg.modules * self.cfg.convs_per_module + 1 + 1
        return self.cfg.bank_size // 2 + self.cfg.downsample * (n_conv + 1)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.unshuffle(self.bank(x)))
        feats = []
        for blk in self.blocks:
            h = blk(h)
            feats.append(h)
        return self.shuffle(self.out(self.fuse(torch.cat(feats, dim=1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the predicted noise (same shape as ``x``)."""
        return self.noise(x)


def build(variant: str) -> WaveletResNet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return WaveletResNet(VARIANTS[variant])


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def flops_per_pixel(cfg: NetConfig) -> float:
    """Multiply-accumulates per input pixel (rough, for sizing)."""
    s2 = cfg.downsample**2
    c = cfg.channels
    bank = 15 * cfg.bank_size**2
    convs = 9 * (15 * s2 * c + cfg.modules * cfg.convs_per_module * c * c + cfg.modules * c * c + c * s2) / s2
    return float(bank + convs)
