"""ONNX export with a torch ↔ ONNX Runtime parity check (fixed spatial size, dynamic batch)."""
from __future__ import annotations

import json
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


def write_lineage(out: Path, init: Path) -> None:
    """Record in ``out/lineage.json`` the checkpoint a fine-tuning run started from and
    that run's ``train_info.json`` (read back by :func:`training_record`); for a served
    ``model.onnx``, its card's training record and version."""
    prev = init.parent / "train_info.json"
    card = init.parent / "card.json"
    rec: dict = {"init": str(init), "previous_run": json.loads(prev.read_text()) if prev.is_file() else None}
    if rec["previous_run"] is None and card.is_file():
        c = json.loads(card.read_text())
        rec.update({"previous_run": c.get("extra", {}).get("training"), "model": c.get("name"),
                    "version": c.get("version"), "sha256": c.get("sha256")})
    (out / "lineage.json").write_text(json.dumps(rec, indent=2))


def training_record(ckpt: Path) -> dict:
    """What a model card says about the run behind a checkpoint folder: its ``train_info.json``
    (or, for an intermediate checkpoint, the last ``history.json`` entry) plus the
    ``lineage.json`` of the run it was fine-tuned from, when there is one."""
    info_path = ckpt / "train_info.json"
    record = (json.loads(info_path.read_text()) if info_path.is_file()
              else {"checkpoint": "intermediate", "history_tail": json.loads((ckpt / "history.json").read_text())[-1:]})
    if (ckpt / "lineage.json").is_file():
        record["fine_tuned_from"] = json.loads((ckpt / "lineage.json").read_text())
    return record
