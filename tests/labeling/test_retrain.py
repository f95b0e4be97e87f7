"""One-epoch retraining smoke test: label -> export -> fine-tune the lesion model (2 steps)."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")


def test_one_epoch_retraining_on_export(shared_data, tmp_path):
    from labeling_tool.core.export import export_dataset
    from labeling_tool.core.sources import FolderSource
    from labeling_tool.core.store import LabelStore
    from training.promotion.retrain import fine_tune_from_export

    folder = tmp_path / "png"
    folder.mkdir()
    src = sorted((shared_data / "cxr" / "normal-openist" / "images").glob("*.jpg"))[:6]
    for i, p in enumerate(src):
        (folder / f"{i:04d}_000.jpg").write_bytes(p.read_bytes())
    store = LabelStore.open_for(FolderSource(folder))
    for i, row in enumerate(store.images()):
        if i < 3:  # smoke-test labels: a box, not a clinical finding
            store.add(row["image_id"], "alice", "box", "consolidation", {"x1": 100, "y1": 150, "x2": 180, "y2": 260})
        else:
            store.set_image_label(row["image_id"], "alice", "normal")
        store.mark_labelled(row["image_id"], "alice")
        store.review(row["image_id"], "rev", "approve")
    export_dataset(store, tmp_path / "ds", fractions=(1.0, 0.0, 0.0))
    first = fine_tune_from_export(tmp_path / "ds", tmp_path / "run0", epochs=1, steps_per_epoch=1, batch=(2, 1, 0),
                                  threads=1)
    # "--from CURRENT": continue from the previous weights
    again = fine_tune_from_export(tmp_path / "ds", tmp_path / "run1", init_from=str(tmp_path / "run0" / "lesion.pt"),
                                  epochs=1, steps_per_epoch=2, batch=(2, 1, 0), threads=1)
    assert first["epochs_run"] == 1 and again["steps"] == 2 and again["real_n"] == 6
    assert (tmp_path / "run1" / "lesion.pt").is_file()
    assert all(math.isfinite(h["loss"]) for h in again["history"])
