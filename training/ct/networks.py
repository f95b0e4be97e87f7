"""Small MONAI 3-D U-Nets for CPU inference (a few hundred thousand parameters)."""
from __future__ import annotations

import torch
from monai.networks.nets import UNet


def small_unet(in_channels: int = 1, out_channels: int = 1, channels=(8, 16, 32, 64)) -> torch.nn.Module:
    """3-D U-Net, strides 2 (input sides must be multiples of 8), one residual unit per level."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")
