"""Tiny training runs (a few steps on a handful of real images) and the export parity check."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")


@pytest.fixture
def tiny(cxr_data):
    from training.cxr.data import grid_from_pairs, grid_from_records, nih_records, openist_pairs

    normals = grid_from_pairs(openist_pairs(cxr_data / "normal-openist")[:4], size=64)
    recs = [r for r in nih_records(cxr_data / "nih") if r.boxes][:3]
    return grid_from_records(recs, size=64), normals


def test_one_step_lung_and_lesion_training(tiny, tmp_path):
    from training.cxr.train_lesion import train_lesion
    from training.cxr.train_lung import train_lung

    torch.set_num_threads(1)
    real, normals = tiny
    s = train_lung(normals, normals, epochs=1, out_dir=tmp_path, batch=2, max_steps=1)
    assert (tmp_path / "lung.pt").exists() and 0.0 <= s["best_test_dice"] <= 1.0
    s = train_lesion(real, normals, epochs=1, out_dir=tmp_path, steps_per_epoch=1, batch=(1, 1, 2))
    assert (tmp_path / "lesion.pt").exists() and np.isfinite(s["history"][0]["loss"])
    # continue from the checkpoint (the --from / fine-tuning path)
    s = train_lesion(real, normals, epochs=1, out_dir=tmp_path / "ft", init_from=tmp_path / "lesion.pt",
                     steps_per_epoch=1, batch=(1, 1, 2))
    assert s["steps"] == 1


def test_batches_carry_exact_synthetic_masks_and_weak_boxes(tiny):
    from training.cxr.train_lesion import make_batch

    real, normals = tiny
    b = make_batch(np.random.default_rng(0), real, normals, 3, 0, 4)
    assert b["image"].shape == (7, 1, 64, 64) and b["seg"].shape == (7, 5, 16, 16)
    synth = slice(3, 7)
    # synthetic positives have a non-empty mask for exactly their labelled classes
    assert np.array_equal(b["labels"][synth] > 0, b["seg"][synth].max(axis=(2, 3)) > 0)
    # real images: box classes are weakly localised, positives without a box get no seg loss
    for i in range(3):
        for c in range(5):
            if b["labels"][i, c] > 0 and b["seg"][i, c].max() == 0:
                assert b["seg_weight"][i, c] == 0


def test_lesion_net_outputs_and_embedding():
    from training.cxr.nets import CxrLesionNet

    net = CxrLesionNet().eval()
    with torch.no_grad():
        scores, abn, seg, emb = net(torch.rand(2, 1, 128, 128))
    assert scores.shape == (2, 5) and abn.shape == (2, 1) and seg.shape == (2, 5, 32, 32)
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_bn_recalibration_uses_the_plain_batch_average_and_restores_momentum():
    from training.cxr.train_lesion import recalibrate_bn

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    bn = net[1]
    bn.running_mean.fill_(100.0)
    batches = [np.full((2, 1, 4, 4), v, np.float32) for v in (1.0, 3.0)]
    assert recalibrate_bn(net.eval(), iter(batches)) == 2
    with torch.no_grad():
        conv = [net[0](torch.from_numpy(b)).mean(dim=(0, 2, 3)) for b in batches]
    torch.testing.assert_close(bn.running_mean, (conv[0] + conv[1]) / 2)
    assert bn.momentum == 0.1 and not net.training


def test_class_boost_oversamples_real_positives(tiny):
    from training.cxr.train_lesion import real_sampling_p

    real, _ = tiny
    real.labels[:] = 0
    real.labels[0, 3] = 1  # one effusion positive
    p = real_sampling_p(real, {"pleural_effusion": 3.0})
    assert p[0] == pytest.approx(3 * p[1]) and p.sum() == pytest.approx(1.0)
