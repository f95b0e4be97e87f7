"""``medws train cxr --dataset DIR --from cxr-lesions``: one short epoch on a tiny labeling export
-> a candidate version (parity-checked ONNX + card) that ``medws models promote`` can find."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")


def _train(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEDWS_MODELS_DIR"}
    return subprocess.run([sys.executable, "-m", "medws", "train", "cxr", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_train_cxr_dataset_makes_candidate(tiny_cxr_export, tmp_path):
    from models.card import sha256_file
    from models.registry import PACKAGE_ZOO, Registry
    from training.promotion.promote import current_version

    current = Registry([PACKAGE_ZOO]).get("cxr-lesions")
    out = tmp_path / "run"
    res = _train(["--dataset", str(tiny_cxr_export), "--from", "cxr-lesions", "--epochs", "1",
                  "--steps-per-epoch", "2", "--threads", "1", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    major, minor, patch = current.card.version.split(".")
    version = f"{major}.{minor}.{int(patch) + 1}"
    vdir = out / "zoo" / "cxr-lesions" / version
    card = json.loads((vdir / "card.json").read_text())
    assert card["sha256"] == sha256_file(vdir / "model.onnx")
    assert max(card["extra"]["parity_max_abs_diff"][o] for o in ("scores", "abnormality", "seg")) < 1e-3
    assert card["extra"]["fine_tuned_from"] == f"cxr-lesions@{current.card.version}"
    manifest = json.loads((tiny_cxr_export / "manifest.json").read_text())
    assert card["extra"]["training_dataset"]["content_sha256"] == manifest["content_sha256"]
    assert card["extra"]["training_runs"][0]["steps"] == 2
    assert (vdir / "weights.pt").is_file() and f"cxr-lesions@{version}" in res.stdout
    # what `MEDWS_MODELS_DIR=OUT/zoo medws models promote` sees: the candidate against the active version
    reg = Registry([PACKAGE_ZOO, out / "zoo"])
    assert reg.get("cxr-lesions", version).onnx_path == vdir / "model.onnx"
    assert current_version(reg, "cxr-lesions", version) == current.card.version
    assert reg.get("cxr-lesions").card.version == current.card.version  # not active until promoted


def test_train_cxr_dataset_errors(tiny_cxr_export, tmp_path):
    no_from = _train(["--dataset", str(tiny_cxr_export), "--out", str(tmp_path / "a")], tmp_path)
    assert no_from.returncode == 2 and "--from" in no_from.stderr
    unknown = _train(["--dataset", str(tiny_cxr_export), "--from", "no-such-model", "--out", str(tmp_path / "b")],
                     tmp_path)
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr
    both = _train(["--dataset", str(tiny_cxr_export), "--data", str(tmp_path), "--out", str(tmp_path / "c")],
                  tmp_path)
    assert both.returncode == 2 and "not allowed with" in both.stderr
