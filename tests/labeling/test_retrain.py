"""One-epoch retraining smoke test: label -> export -> fine-tune the lesion model (2 steps)."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")


def test_one_epoch_retraining_on_export(tiny_cxr_export, tmp_path):
    from training.promotion.retrain import fine_tune_from_export

    first = fine_tune_from_export(tiny_cxr_export, tmp_path / "run0", epochs=1, steps_per_epoch=1, batch=(2, 1, 0),
                                  threads=1)
    # "--from CURRENT": continue from the previous weights
    again = fine_tune_from_export(tiny_cxr_export, tmp_path / "run1", init_from=str(tmp_path / "run0" / "lesion.pt"),
                                  epochs=1, steps_per_epoch=2, batch=(2, 1, 0), threads=1)
    assert first["epochs_run"] == 1 and again["steps"] == 2 and again["real_n"] == 6
    assert (tmp_path / "run1" / "lesion.pt").is_file()
    assert all(math.isfinite(h["loss"]) for h in again["history"])
