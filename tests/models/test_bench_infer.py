"""Smoke test of benchmarks/bench_infer.py (tiny N, small image, untrained networks)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_infer_smoke(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("models.cxr.pipeline")
    pytest.importorskip("training.cxr.nets")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_infer.py"), "--n", "2", "--warmup", "1",
         "--size", "512", "--threads", "1", "--random-init", "--processes", "2", "--out", str(tmp_path),
         "--name", "smoke"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert set(result["stats"]) == {"onnxruntime", "torch_eager"}
    for path in result["stats"].values():
        assert set(path) == {"decode", "pre", "predict", "post", "total", "cpu_total"}
        assert path["total"]["median_ms"] > 0
    assert result["image"]["rows"] == 512 and result["image"]["photometric"] == "MONOCHROME1"
    assert "random-init" in result["models"]["cxr-lesions"]["weights"]
    assert (tmp_path / "smoke.md").read_text().startswith("# Chest X-ray inference latency")
    # two independent processes, their samples pooled, each one's speed-up listed
    assert len(result["processes"]) == 2 and result["n_total"] == 4
    assert all(p["speedup"] > 0 for p in result["processes"])
