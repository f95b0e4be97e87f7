"""Promotion gate: accepts a better candidate, refuses a worse one; rollback; shadow mode.

End to end: PNG images -> label store -> de-identified dataset export (the locked test
set) -> tiny ONNX models in a temporary registry -> ``medws models promote/rollback``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from training.promotion.gate import auroc, compare
from training.promotion.shadow import ShadowRecorder, summarise

CLASSES = ["nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax"]
S = 40  # model input size; class c is signalled by brightness in rows 8c..8c+8


def test_auroc_known():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert auroc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def _scores(rng, y, quality):
    return y * quality + rng.normal(0, 1, y.shape)


def test_gate_accepts_better_and_refuses_worse():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < 0.4).astype(float)
    good = _scores(rng, y, 2.5)
    weak = good.copy()
    weak[:, 1] = _scores(rng, y[:, 1:2], 0.3)[:, 0]  # much worse for consolidation only
    better = compare(y, weak, good, CLASSES, n_boot=500)
    assert better.accepted, better.table()
    worse = compare(y, good, weak, CLASSES, n_boot=500)
    assert not worse.accepted
    assert [r.label for r in worse.rows if r.verdict == "WORSE"] == ["consolidation"]
    assert "consolidation" in worse.table() and "WORSE" in worse.table()
    same = compare(y, good, good, CLASSES, n_boot=200)
    assert same.accepted and all(r.delta == 0 for r in same.rows)
    # unknown labels (NaN) are left out; a class with no positives is not comparable
    y2 = y.copy()
    y2[:, 4] = 0
    y2[:10, 0] = np.nan
    r = compare(y2, good, good, CLASSES, n_boot=100)
    assert r.rows[4].verdict == "not comparable" and r.rows[0].n_pos + r.rows[0].n_neg == 290 and r.accepted


def _onnx_model(path, weights):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(1, 5), "w")
    b = numpy_helper.from_array(np.full((1, 5), -0.5 * np.asarray(weights, np.float32)), "b")
    shape = numpy_helper.from_array(np.array([-1, 5, S * S // 5], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=0),
        helper.make_node("Mul", ["m", "w"], ["mw"]),
        helper.make_node("Add", ["mw", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["scores"]),
    ]
    graph = helper.make_graph(nodes, "stripes", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, S, S])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 5])], [w, b, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _install(registry, version, weights):
    from models.card import ModelCard, sha256_file

    d = registry / "cxr-test" / version
    d.mkdir(parents=True)
    _onnx_model(str(d / "model.onnx"), weights)
    ModelCard(name="cxr-test", version=version, task="cxr-findings", input={"size": S, "channels": 1},
              outputs={"scores": "(N, 5) per-class probability"}, classes=CLASSES,
              thresholds={c: 0.5 for c in CLASSES}, training_data="test fixture: hand-set weights, no training",
              sha256=sha256_file(d / "model.onnx")).save(d / "card.json")


def _locked_set(tmp_path):
    """40 PNG radiograph stand-ins, labelled and reviewed in the label store, exported."""
    from PIL import Image

    from labeling_tool.core.export import export_dataset
    from labeling_tool.core.sources import FolderSource
    from labeling_tool.core.store import LabelStore

    rng = np.random.default_rng(1)
    folder = tmp_path / "png"
    folder.mkdir()
    truth = {}
    for i in range(40):
        y = rng.random(5) < 0.45
        img = rng.normal(100, 3, (S, S))
        for c in range(5):
            img[8 * c:8 * c + 8] += 25 * y[c] + rng.normal(0, 8)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}_000.png")
        truth[f"{i:04d}_000.png"] = y
    store = LabelStore.open_for(FolderSource(folder))
    for row in store.images():
        y = truth[row["path"].rsplit("/", 1)[1]]
        names = [c for c, v in zip(CLASSES, y) if v] or ["normal"]
        for n in names:
            store.set_image_label(row["image_id"], "alice", n)
        store.mark_labelled(row["image_id"], "alice")
        store.review(row["image_id"], "rev", "approve")
    export_dataset(store, tmp_path / "locked", fractions=(0.0, 0.0, 1.0), version="locked-1")
    return tmp_path / "locked"


def _medws(*args):
    return subprocess.run([sys.executable, "-m", "medws", *args], capture_output=True, text=True, timeout=300)


def test_promote_and_rollback_cli_on_locked_set(tmp_path):
    from models.registry import Registry

    locked = _locked_set(tmp_path)
    reg_dir = tmp_path / "zoo"
    _install(reg_dir, "1.0.0", [8, -8, 8, 8, 8])   # current: blind to consolidation
    _install(reg_dir, "1.1.0", [8, 8, 8, 8, 8])    # better candidate
    _install(reg_dir, "1.2.0", [8, 8, -8, 8, 8])   # worse candidate (interstitial opacity)
    reg = Registry([reg_dir])
    reg.set_active("cxr-test", "1.0.0")
    r = _medws("models", "promote", "cxr-test@1.1.0", "--locked-set", str(locked), "--dir", str(reg_dir),
               "--n-boot", "300", "--report", str(tmp_path / "r1.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PROMOTED" in r.stdout and Registry([reg_dir]).active_version("cxr-test") == "1.1.0"
    rows = {x["label"]: x for x in json.loads((tmp_path / "r1.json").read_text())["rows"]}
    assert rows["consolidation"]["delta"] > 0.3
    r = _medws("models", "promote", "cxr-test@1.2.0", "--locked-set", str(locked), "--dir", str(reg_dir),
               "--n-boot", "300")
    assert r.returncode == 1 and "REFUSED" in r.stderr
    assert "| interstitial_opacity |" in r.stdout and "WORSE" in r.stdout
    assert Registry([reg_dir]).active_version("cxr-test") == "1.1.0"
    assert len(list((reg_dir / "cxr-test" / "promotions").glob("*.json"))) == 2
    r = _medws("models", "rollback", "cxr-test", "--dir", str(reg_dir))
    assert r.returncode == 0, r.stderr
    assert Registry([reg_dir]).active_version("cxr-test") == "1.0.0"


def test_promote_from_predictions_file(tmp_path):
    from models.registry import Registry

    reg_dir = tmp_path / "zoo"
    _install(reg_dir, "1.0.0", [8] * 5)
    _install(reg_dir, "2.0.0", [8] * 5)
    Registry([reg_dir]).set_active("cxr-test", "1.0.0")
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.4).astype(float)
    good = _scores(rng, y, 2.5)
    bad = good.copy()
    bad[:, 3] = rng.normal(0, 1, 200)
    np.savez(tmp_path / "p.npz", y_true=y, current=good, candidate=bad, classes=np.array(CLASSES))
    r = _medws("models", "promote", "cxr-test@2.0.0", "--predictions", str(tmp_path / "p.npz"), "--dir", str(reg_dir),
               "--n-boot", "200")
    assert r.returncode == 1 and "pleural_effusion" in r.stdout
    assert Registry([reg_dir]).active_version("cxr-test") == "1.0.0"


def test_shadow_mode_records_agreement(tmp_path):
    rec = ShadowRecorder(tmp_path / "shadow.jsonl", "m@1", "m@2", ["a", "b"], {"a": 0.5, "b": 0.5})
    out = rec.run("1.2.3", np.zeros((4, 4)), lambda px: [0.9, 0.1], lambda px: [0.8, 0.7])
    assert out == [0.9, 0.1]  # the current model's result is what the pipeline gets
    rec.run("1.2.4", np.zeros((4, 4)), lambda px: [0.2, 0.1], lambda px: [0.3, 0.2])

    def broken(px):
        raise RuntimeError("candidate crashed")

    assert rec.run("1.2.5", np.zeros((4, 4)), lambda px: [0.2, 0.1], broken) == [0.2, 0.1]
    s = summarise(tmp_path / "shadow.jsonl", ["a", "b"])
    assert s["cases"] == 2
    assert s["classes"]["a"]["agreement"] == 1.0 and s["classes"]["b"]["agreement"] == 0.5
    assert s["classes"]["a"]["mean_abs_score_diff"] == pytest.approx(0.1)


def test_scoring_the_installed_cxr_model_on_an_export(shared_data, tmp_path):
    """The gate's scorer runs the shipped cxr-lesions model on exported real radiographs."""
    from labeling_tool.core.export import export_dataset
    from labeling_tool.core.sources import FolderSource
    from labeling_tool.core.store import LabelStore
    from models.errors import ModelError
    from models.registry import Registry
    from training.datasets.medws_export import load_medws_export
    from training.promotion.scoring import score_records

    try:
        entry = Registry().get("cxr-lesions")
        model = Registry().session("cxr-lesions", threads=1)
    except ModelError:
        pytest.skip("cxr-lesions is not installed in the registry")
    folder = tmp_path / "png"
    folder.mkdir()
    for src in sorted((shared_data / "cxr" / "normal-openist" / "images").glob("*.jpg"))[:3]:
        (folder / f"{src.stem}_0.jpg").write_bytes(src.read_bytes())
    store = LabelStore.open_for(FolderSource(folder))
    for row in store.images():
        store.set_image_label(row["image_id"], "alice", "normal")
        store.mark_labelled(row["image_id"], "alice")
        store.review(row["image_id"], "rev", "approve")
    export_dataset(store, tmp_path / "ds", fractions=(0.0, 0.0, 1.0))
    records = load_medws_export(tmp_path / "ds", split="test")
    scores = score_records(model, records, CLASSES, entry.card.classes, int(entry.card.input["size"]))
    assert scores.shape == (3, 5) and np.all((scores >= 0) & (scores <= 1))
