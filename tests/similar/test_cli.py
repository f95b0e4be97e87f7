"""``medws similar --json`` and ``medws similar-index`` on a small archive."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dicom_node.embeddings import StudyIndexer

pytestmark = pytest.mark.usefixtures("cxr_embed_model")


def medws(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDWS_ORT_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "medws", *args], capture_output=True, text=True, timeout=120, env=env)


def test_similar_cli_json_and_index_commands(small_archive, tmp_path):
    sa = small_archive
    uid = next(u for u, s in sa.studies.items() if s["label"] == "pleural_effusion")
    # backfill computes the embeddings of every study (as the analysis hook does)
    p = medws("similar-index", "backfill", "--root", str(sa.root))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"studies": 10, "added": 14, "kept": 0, "removed": 0, "failed": 0}
    p = medws("similar", "--root", str(sa.root), "--study", uid, "--k", "3", "--json",
              "--thumbnails", str(tmp_path / "th"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["query"]["study_uid"] == uid and len(out["cases"]) == 3
    assert uid not in {c["study_uid"] for c in out["cases"]}
    assert {"similarity", "findings", "report_excerpt", "report_state", "matched", "modality"} <= set(out["cases"][0])
    assert len(list((tmp_path / "th").glob("*.png"))) == 3
    p = medws("similar", "--root", str(sa.root), "--study", uid, "--finding", "pleural_effusion", "--json")
    assert p.returncode == 0, p.stderr
    assert all(any(f["label"] == "pleural_effusion" for f in c["findings"]) for c in json.loads(p.stdout)["cases"])
    # index files: delete them, status says so, rebuild restores them
    for f in (sa.root / "index").glob("*.hnsw"):
        f.unlink()
    st = json.loads(medws("similar-index", "status", "--root", str(sa.root)).stdout)
    assert st and not any(s["file"] for s in st)
    assert json.loads(medws("similar-index", "rebuild", "--root", str(sa.root)).stdout)
    st = json.loads(medws("similar-index", "status", "--root", str(sa.root)).stdout)
    assert all(s["valid"] and s["indexed"] == s["stored"] for s in st)
    # errors are clear, exit code 2
    p = medws("similar", "--root", str(sa.root), "--study", "1.2.3.999", "--json")
    assert p.returncode == 2 and "no study 1.2.3.999" in p.stderr
    p = medws("similar", "--root", str(sa.root), "--study", uid, "--from", "2024-99-99")
    assert p.returncode == 2 and "not a date" in p.stderr
