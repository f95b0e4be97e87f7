"""ONNX export of the retrieval network with a torch / ONNX Runtime parity check, and
its registry folder (``models/zoo/cxr-embed/<version>/``)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from training.embedding.nets import EmbedNet

logger = logging.getLogger(__name__)

OPSET = 17
INPUT, OUTPUT = "image", "embedding"


class ParityError(RuntimeError):
    """ONNX Runtime output differs from torch beyond tolerance."""


def load_checkpoint(path: str | Path) -> EmbedNet:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = EmbedNet()
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def export_onnx(model: EmbedNet, path: str | Path, size: int = 256) -> Path:
    """Write the graph ``image`` (N,1,size,size) -> ``embedding`` (N,D), dynamic batch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model.eval(), torch.zeros(1, 1, size, size), str(path), input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    return path


def parity(model: EmbedNet, onnx_path: str | Path, inputs: np.ndarray, atol: float = 1e-4) -> float:
    """Max |torch - ORT| over ``inputs`` (N,1,S,S); raises :class:`ParityError` above ``atol``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    with torch.no_grad():
        t = model.eval()(torch.from_numpy(x)).numpy()
    o = sess.run([OUTPUT], {INPUT: x})[0]
    worst = float(np.max(np.abs(t - o)))
    if worst > atol:
        raise ParityError(f"ONNX Runtime differs from torch by {worst:.2e} > {atol:.0e}")
    return worst
