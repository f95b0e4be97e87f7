"""Label store: annotations, autosave (kill-safety), undo/redo, review workflow."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from labeling_tool.core.errors import StoreError
from labeling_tool.core.schema import load_schema
from labeling_tool.core.sources import FolderSource, load_image
from labeling_tool.core.store import LabelStore, disk_stroke, polygon_mask, rle_decode, rle_encode


def test_rle_roundtrip():
    rng = np.random.default_rng(1)
    for m in (rng.random((17, 23)) > 0.6, np.ones((4, 5), bool), np.zeros((3, 3), bool)):
        assert np.array_equal(rle_decode(rle_encode(m), m.shape), m)


def test_brush_and_polygon_rasterisation():
    m = disk_stroke((20, 30), [(5, 5), (25, 5)], 2)
    assert m[5, 5] and m[5, 25] and m[5, 15] and not m[15, 15]
    p = polygon_mask((10, 10), [(2, 2), (8, 2), (8, 6), (2, 6)])
    assert p.sum() == 24 and p[3, 3] and not p[7, 3]


def test_schema_cxr():
    s = load_schema("cxr")
    assert s.names == ("nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax",
                       "normal")


def test_user_schema_override(tmp_path, monkeypatch):
    f = tmp_path / "s.toml"
    f.write_text('[tasks.ct_liver]\ntitle="Liver"\n[[tasks.ct_liver.classes]]\nname="lesion"\n')
    monkeypatch.setenv("MEDWS_LABEL_SCHEMAS", str(f))
    assert load_schema("ct_liver").names == ("lesion",)
    assert "cxr" in __import__("labeling_tool.core.schema", fromlist=["x"]).load_schemas()


def test_folder_source_and_store(deid_folder):
    src = FolderSource(deid_folder)
    store = LabelStore.open_for(src)
    rows = store.images()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"unlabelled"}
    img = load_image(src.images()[0])
    assert img.pixels.shape == (64, 48)
    iid = rows[0]["image_id"]
    a = store.add(iid, "ann", "box", "nodule_mass", {"x1": 10, "y1": 20, "x2": 5, "y2": 30})
    assert a.box() == (5, 20, 10, 30)  # normalised
    assert store.status(iid) == "in_progress"
    store.paint(iid, "ann", "consolidation", (64, 48), [(10, 10), (20, 10)], 3)
    store.paint(iid, "ann", "consolidation", (64, 48), [(10, 10)], 3, erase=True)
    mask = [x for x in store.annotations(iid) if x.kind == "mask"][0].mask()
    assert mask[10, 20] and not mask[10, 10]
    # undo the eraser, then the brush, then redo
    assert store.undo()
    assert [x for x in store.annotations(iid) if x.kind == "mask"][0].mask()[10, 10]
    assert store.undo()
    assert not [x for x in store.annotations(iid) if x.kind == "mask"]
    assert store.redo()
    assert [x for x in store.annotations(iid) if x.kind == "mask"]
    with pytest.raises(StoreError):
        store.add(iid, "ann", "box", "x", {"x1": 1, "y1": 1, "x2": 1, "y2": 5})
    with pytest.raises(StoreError):
        store.add("nope", "ann", "label", "normal")


def test_review_workflow(deid_folder):
    store = LabelStore.open_for(FolderSource(deid_folder))
    iid = store.images()[0]["image_id"]
    with pytest.raises(StoreError):
        store.mark_labelled(iid, "ann")  # nothing labelled yet
    store.set_image_label(iid, "ann", "normal")
    store.mark_labelled(iid, "ann")
    with pytest.raises(StoreError):
        store.review(iid, "rev", "return")  # a return needs a comment
    store.review(iid, "rev", "return", "check the left apex")
    assert store.status(iid) == "in_progress"
    assert store.reviews(iid)[-1]["comment"] == "check the left apex"
    store.mark_labelled(iid, "ann")
    store.review(iid, "rev", "approve")
    assert store.status(iid) == "reviewed"


def test_autosave_survives_kill(deid_folder, tmp_path):
    """A process killed with SIGKILL right after a change loses nothing."""
    script = textwrap.dedent(f"""
        import os, signal
        from labeling_tool.core.sources import FolderSource
        from labeling_tool.core.store import LabelStore
        store = LabelStore.open_for(FolderSource({str(deid_folder)!r}))
        iid = store.images()[0]["image_id"]
        store.add(iid, "ann", "box", "pneumothorax", {{"x1": 1, "y1": 2, "x2": 30, "y2": 40}})
        store.paint(iid, "ann", "pleural_effusion", (64, 48), [(5, 50)], 4)
        print("done", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9 and "done" in r.stdout
    store = LabelStore(deid_folder / "medws-labels.sqlite")
    iid = sorted(store.images(), key=lambda x: x["path"])[0]["image_id"]
    kinds = sorted((a.kind, a.label) for a in store.annotations(iid))
    assert kinds == [("box", "pneumothorax"), ("mask", "pleural_effusion")]
    assert store.status(iid) == "in_progress"
