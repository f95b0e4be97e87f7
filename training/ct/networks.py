"""Small MONAI 3-D U-Nets for CPU inference (a few hundred thousand parameters)."""
from __future__ import annotations

import torch
from monai.networks.nets import UNet


def small_unet(in_channels: int = 1, out_channels: int = 1, channels=(8, 16, 32, 64)) -> torch.nn.Module:
    """3-D U-Net, strides 2 (input sides must be multiples of 8), one residual unit per level."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")


def fpr_cnn(channels=(8, 16, 32, 64)) -> torch.nn.Module:
    """Candidate classifier for 32^3 patches: MONAI conv blocks (conv-BN-PReLU) with 2x max
    pooling after each level, global average pooling, one logit ("nodule")."""
    from monai.networks.blocks import Convolution

    layers: list[torch.nn.Module] = []
    c_in = 1
    for k, c in enumerate(channels):
        layers.append(Convolution(3, c_in, c, kernel_size=3, norm="batch", act="prelu"))
        if k >= 2:
            layers.append(Convolution(3, c, c, kernel_size=3, norm="batch", act="prelu"))
        layers.append(torch.nn.MaxPool3d(2))
        c_in = c
    layers += [torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(c_in, 1)]
    return torch.nn.Sequential(*layers)


class MeanLogit(torch.nn.Module):
    """Several classifiers as one network: the mean of their logits (an ensemble exported
    as one ONNX graph, so the runtime pipeline and its card are unchanged)."""

    def __init__(self, nets: list[torch.nn.Module]) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([n(x) for n in self.nets], 0).mean(0)
