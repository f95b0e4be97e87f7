"""ONNX export of a trained denoiser with a torch / ONNX Runtime parity check.

The fixed directional filter bank is part of the graph, so the ONNX file maps
``image`` (N, 1, H, W; HU / 1000; H, W even for the light variant) to ``noise``
(same shape).  Batch norm runs in inference mode (folded by ONNX Runtime).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from models.denoise.task import INPUT_NAME, OUTPUT_NAME
from training.denoise.networks import NetConfig, WaveletResNet

logger = logging.getLogger(__name__)

OPSET = 17


class ParityError(RuntimeError):
    """ONNX Runtime output differs from torch beyond tolerance."""


def load_checkpoint(path: str | Path) -> WaveletResNet:
    """Model in eval mode from a training checkpoint."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = WaveletResNet(NetConfig(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def export_onnx(model: WaveletResNet, path: str | Path) -> Path:
    """Write the ONNX file (dynamic batch and spatial size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        torch.onnx.export(model, dummy, str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                        OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}},
                          opset_version=OPSET, dynamo=False)
    return path


def parity(model: WaveletResNet, onnx_path: str | Path, inputs: list[np.ndarray], atol_hu: float = 0.05) -> float:
    """Max |torch - ORT| over ``inputs`` in HU; raises :class:`ParityError` above ``atol_hu``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    worst = 0.0
    model = model.eval()
    for x in inputs:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with torch.no_grad():
            t = model(torch.from_numpy(x)).numpy()
        o = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        worst = max(worst, float(np.max(np.abs(t - o))) * 1000.0)
    if worst > atol_hu:
        raise ParityError(f"ONNX Runtime differs from torch by {worst:.4f} HU > {atol_hu} HU")
    return worst
