"""Inference-graph rewrites applied before ONNX export: the same function, cheaper operators.

A rewrite must be exact in real arithmetic (float rounding only); the export parity check
(:func:`training.cxr.export.parity`) compares the exported graph with the *training*
module, so a wrong rewrite cannot ship.

* ``PReLU`` with one shared slope (MONAI's default activation) is ``LeakyReLU`` with that
  slope.  ONNX Runtime fuses ``LeakyRelu`` into the preceding convolution, while ``PRelu``
  runs as a separate pass with layout reorders around it (a large share of the lung U-Net's
  CPU time in ONNX Runtime's profile).  Tried and not kept: the
  transposed convolutions as sub-pixel convolutions (2x2 ``Conv`` + ``DepthToSpace``) were
  slower in ONNX Runtime 1.32 than ``ConvTranspose``.
"""
from __future__ import annotations

import copy

from torch import nn


def _rewrite(module: nn.Module) -> int:
    n = 0
    for name, child in module.named_children():
        if isinstance(child, nn.PReLU) and child.weight.numel() == 1:
            setattr(module, name, nn.LeakyReLU(float(child.weight.detach())))
            n += 1
        else:
            n += _rewrite(child)
    return n


def for_inference(module: nn.Module) -> nn.Module:
    """A rewritten eval-mode copy of ``module`` for export (the original is untouched)."""
    out = copy.deepcopy(module).eval()
    _rewrite(out)
    return out
