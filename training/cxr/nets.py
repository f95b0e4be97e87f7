"""MONAI networks for chest radiographs.

* :func:`lung_unet` -- a small MONAI ``UNet`` for the lung fields (1 output channel, logits).
* :class:`CxrLesionNet` -- one encoder--decoder built from MONAI blocks with per-class
  segmentation heads (*where*), an image-level classification head (*whether*) for the
  five classes, an abnormality head and a pooled, L2-normalised ``embedding`` used for
  similar-case retrieval.

Both exported networks end in probabilities (sigmoid) so the ONNX graphs return what the
runtime reports; the training loops use the ``*_logits`` helpers.
"""
from __future__ import annotations

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn
from torch.nn import functional as F

from models.cxr.preprocess import CLASSES

N_CLASSES = len(CLASSES)


def lung_unet() -> nn.Module:
    """Return the lung-field U-Net (input (N,1,256,256) normalised radiograph, output logits)."""
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16, 32, 64, 128),
        strides=(2, 2, 2, 2),
        num_res_units=1,
        norm="batch",
    )


class LungProbabilities(nn.Module):
    """Wrap the lung U-Net so its output is a probability map (what ONNX exports)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.sigmoid(self.net(image))


def _down(cin: int, cout: int) -> nn.Module:
    return ResidualUnit(2, cin, cout, strides=2, kernel_size=3, subunits=2, norm="batch", act="relu")


class CxrLesionNet(nn.Module):
    """Encoder--decoder with segmentation, classification, abnormality and embedding heads.

    Input (N,1,S,S). Encoder strides 2,4,8,16,32; an FPN-style decoder returns to stride 4
    where a 1x1 convolution gives one segmentation logit map per class. The classification
    head reads global average+max pooled deepest features plus the per-class maximum of the
    segmentation logits (so *whether* sees *where*).
    """

    def __init__(self, width: int = 16, emb_dim: int = 128) -> None:
        super().__init__()
        w = width
        chans = (w, 2 * w, 3 * w, 6 * w, 10 * w)
        self.stem = Convolution(2, 1, chans[0], strides=2, kernel_size=3, norm="batch", act="relu")
        self.enc = nn.ModuleList([_down(chans[i], chans[i + 1]) for i in range(4)])
        dec = 2 * w
        self.lateral = nn.ModuleList(
            [Convolution(2, c, dec, kernel_size=1, norm="batch", act="relu") for c in chans[1:]]
        )
        self.smooth = Convolution(2, dec, dec, kernel_size=3, norm="batch", act="relu")
        self.seg_head = nn.Conv2d(dec, N_CLASSES, kernel_size=1)
        feat = 2 * chans[-1]
        self.embed = nn.Sequential(nn.Linear(feat, emb_dim), nn.ReLU(inplace=True))
        self.cls_head = nn.Linear(emb_dim + N_CLASSES, N_CLASSES)
        self.abn_head = nn.Linear(emb_dim + N_CLASSES, 1)

    def _seg_and_deep(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits (N,5,S/4,S/4) and the deepest (stride 32) features."""
        x = self.stem(image)
        feats = []
        for block in self.enc:
            x = block(x)
            feats.append(x)  # strides 4, 8, 16, 32
        y = self.lateral[3](feats[3])
        for i in (2, 1, 0):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest") + self.lateral[i](feats[i])
        return self.seg_head(self.smooth(y)), feats[3]

    def forward_seg(self, image: torch.Tensor) -> torch.Tensor:
        """Only the segmentation logits (N,5,S/4,S/4): fully convolutional, any input size divisible by 32."""
        return self._seg_and_deep(image)[0]

    def forward_logits(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return logits: ``seg`` (N,5,S/4,S/4), ``scores`` (N,5), ``abnormality`` (N,1), ``embedding``."""
        seg, deep = self._seg_and_deep(image)
        pooled = torch.cat([deep.mean(dim=(2, 3)), deep.amax(dim=(2, 3))], dim=1)
        emb = self.embed(pooled)
        seg_max = seg.amax(dim=(2, 3))
        z = torch.cat([emb, seg_max], dim=1)
        return {"seg": seg, "scores": self.cls_head(z), "abnormality": self.abn_head(z), "embedding": emb}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return probabilities: scores (N,5), abnormality (N,1), seg (N,5,S/4,S/4), embedding (N,D)."""
        out = self.forward_logits(image)
        emb = F.normalize(out["embedding"], dim=1)
        return (
            torch.sigmoid(out["scores"]),
            torch.sigmoid(out["abnormality"]),
            torch.sigmoid(out["seg"]),
            emb,
        )


LESION_OUTPUTS = ("scores", "abnormality", "seg", "embedding")


class NoduleMap(nn.Module):
    """The nodule/mass probability map of a :class:`CxrLesionNet` read on the fine grid.

    ``cxr-nodule`` is a :class:`CxrLesionNet` fine-tuned on the 512-pixel grid
    (:mod:`training.cxr.train_nodule`); only its first segmentation channel is used and
    exported: input (N,1,512,512), output ``nodule`` (N,1,128,128) probabilities (stride 4).
    """

    def __init__(self, net: CxrLesionNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.sigmoid(self.net.forward_seg(image)[:, :1])
