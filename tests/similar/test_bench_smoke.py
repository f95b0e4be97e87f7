"""``benchmarks/bench_cbir.py`` end to end on a tiny index (the real run is not a test)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("cxr_embed_model")
ROOT = Path(__file__).resolve().parents[2]


def test_bench_cbir_smoke(tmp_path, shared_data):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cbir.py"), "--sizes", "1500", "--queries",
                        "40", "--real-limit", "60", "--compare-max", "0", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "bench_cbir.json").read_text())
    h = r["sizes"]["1500"]["hnswlib"]
    assert h["complete"] and h["indexed"] == 1500 and r["dim"] == 128
    assert h["by_ef"]["256"]["recall_at_10"] >= 0.9
    assert "| 1500 | hnswlib |" in (tmp_path / "bench_cbir.md").read_text()
