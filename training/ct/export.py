"""ONNX export with a torch ↔ ONNX Runtime parity check (fixed spatial size, dynamic batch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def export_onnx(net: torch.nn.Module, path: Path, in_channels: int, patch: int,
                sample: np.ndarray | None = None, atol: float = 1e-3) -> dict:
    """Export ``net`` to ``path`` (input "image" [N, C, P, P, P], output "logits") and
    compare torch and ONNX Runtime on a random and an optional real input."""
    import onnxruntime as ort

    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, in_channels, patch, patch, patch)
    kw = dict(input_names=["image"], output_names=["logits"], opset_version=17,
              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    try:
        torch.onnx.export(net, (dummy,), str(path), dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(net, (dummy,), str(path), **kw)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [rng.random((2, in_channels, patch, patch, patch), dtype=np.float32)]
    if sample is not None:
        inputs.append(sample.astype(np.float32))
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = sess.run(["logits"], {"image": x})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    if worst > atol:
        raise RuntimeError(f"ONNX parity failed: max |torch - ort| = {worst} > {atol}")
    return {"parity_max_abs_diff": worst, "parity_atol": atol, "opset": 17,
            "size_bytes": path.stat().st_size}
