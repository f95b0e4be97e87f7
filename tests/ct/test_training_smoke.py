"""Training smoke test (a few steps on tiny patches) and ONNX export parity (torch vs ORT)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")


def test_train_export_parity(tmp_path):
    from training.ct.export import export_onnx
    from training.ct.networks import small_unet
    from training.ct.train import train

    torch.set_num_threads(1)

    def sample(rng):
        x = rng.random((1, 16, 16, 16), dtype=np.float32)
        y = (x > 0.7).astype(np.float32)
        return x, y

    net = small_unet(1, 1, channels=(4, 8, 16))
    info = train(net, sample, tmp_path, budget_s=60, batch=2, max_iters=3, log_every=1)
    assert info["iterations"] == 3 and (tmp_path / "model.pt").is_file()
    res = export_onnx(net, tmp_path / "m.onnx", 1, 16)
    assert res["parity_max_abs_diff"] < 1e-3


def test_nodule_patch_sampler():
    from models.ct.volume import CTVolume
    from training.ct.data import LungVolume, nodule_patch

    rng = np.random.default_rng(0)
    hu = np.full((40, 60, 60), 40.0, np.float32)
    hu[5:35, 10:50, 10:50] = -850 + rng.normal(0, 20, (30, 40, 40))
    lungs = hu < -400
    lv = LungVolume(CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3)), lungs)
    x, y = nodule_patch(lv, rng, size=32, p_pos=1.0)
    assert x.shape == (32, 32, 32) and 0 <= x.min() and x.max() <= 1.05 and y.sum() > 0
    x, y = nodule_patch(lv, rng, size=32, p_pos=0.0)
    assert y.sum() == 0


def test_training_record_reads_info_and_lineage(tmp_path) -> None:
    import json

    from training.ct.export import training_record

    (tmp_path / "history.json").write_text(json.dumps([{"step": 1}, {"step": 2}]))
    assert training_record(tmp_path) == {"checkpoint": "intermediate", "history_tail": [{"step": 2}]}
    (tmp_path / "train_info.json").write_text(json.dumps({"steps": 9}))
    (tmp_path / "lineage.json").write_text(json.dumps({"from": "run-1"}))
    assert training_record(tmp_path) == {"steps": 9, "fine_tuned_from": {"from": "run-1"}}


def test_lineage_of_a_run_started_from_a_served_onnx(tmp_path) -> None:
    import json

    from training.ct.export import training_record, write_lineage

    served = tmp_path / "zoo" / "ct-nodule-fpr" / "1.1.0"
    served.mkdir(parents=True)
    (served / "model.onnx").write_bytes(b"x")
    (served / "card.json").write_text(json.dumps({"name": "ct-nodule-fpr", "version": "1.1.0", "sha256": "ab",
                                                  "extra": {"training": {"iterations": 1517}}}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_info.json").write_text(json.dumps({"iterations": 5}))
    write_lineage(run, served / "model.onnx")
    rec = training_record(run)["fine_tuned_from"]
    assert rec["previous_run"] == {"iterations": 1517}
    assert (rec["model"], rec["version"], rec["sha256"]) == ("ct-nodule-fpr", "1.1.0", "ab")


def test_card_words_for_face_training() -> None:
    from training.ct.evaluate_nodules import _face_note

    assert _face_note({}) == ""
    note = _face_note({"faces": 0.3, "cut_sources": 0.2,
                       "fine_tuned_from": {"model": "ct-nodule-fpr", "version": "1.4.0"}})
    assert "share 0.3 of the patches" in note and "share 0.2 of the samples" in note
    assert "4-8 mm" in _face_note({"small_share": 0.4}) and "4-8 mm" not in note
    assert note.endswith("Fine-tuned from ct-nodule-fpr 1.4.0 (weights recovered from its ONNX).")
