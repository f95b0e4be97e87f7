"""The retrieval network: a small MONAI convolutional encoder with a pooled projection.

Input ``image`` (N, 1, 256, 256) from :func:`models.cxr.preprocess.prepare`; it is
average-pooled to 128 px inside the graph, encoded by five MONAI ``Convolution``
blocks (conv + batch norm + ReLU, four of stride 2), pooled (mean and max), projected
to ``dim`` and L2-normalised (``embedding``).  ``logits`` (auxiliary multi-label head,
training only) are not exported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

EMBED_DIM = 128


class EmbedNet(nn.Module):
    def __init__(self, dim: int = EMBED_DIM, n_labels: int = 7, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 6 * width, 8 * width]
        blocks = []
        for i in range(5):
            blocks.append(Convolution(2, chans[i], chans[i + 1], strides=2 if i < 4 else 1, kernel_size=3,
                                      norm="batch", act="relu"))
        self.pool = nn.AvgPool2d(2)
        self.encoder = nn.Sequential(*blocks)
        self.project = nn.Sequential(nn.Linear(2 * chans[-1], 2 * chans[-1]), nn.ReLU(), nn.Linear(2 * chans[-1], dim))
        self.head = nn.Linear(dim, n_labels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.pool(x))
        return torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.project(self.features(x))
        return F.normalize(e, dim=1), self.head(e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exported graph: L2-normalised embedding (N, dim)."""
        return F.normalize(self.project(self.features(x)), dim=1)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) with multi-label positives:
    two images are positives when their label sets share a label."""
    sim = z @ z.t() / tau
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = ((labels @ labels.t()) > 0) & ~eye
    sim = sim.masked_fill(eye, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    npos = pos.sum(1)
    keep = npos > 0
    if not keep.any():
        return z.sum() * 0.0
    loss = -(log_prob * pos).sum(1)[keep] / npos[keep]
    return loss.mean()
