"""Fine-grid nodule/mass model: score rule, training batches, a training step, export parity."""
from __future__ import annotations

import numpy as np
import pytest

from models.cxr.nodule import coarse_map, lung_support, nodule_score


def test_lung_support_pools_a_256_mask_to_the_map_grid_and_dilates():
    lung = np.zeros((256, 256), dtype=np.float32)
    lung[100:140, 60:100] = 0.9  # 40 px of the 256 grid = 20 cells of a 128 map
    sup = lung_support(lung, 128, margin=0)
    assert sup.shape == (128, 128)
    assert sup[50:70, 30:50].all() and sup.sum() == 20 * 20
    grown = lung_support(lung, 128, margin=2)
    assert grown[48, 40] and grown[71, 40] and not grown[47, 40]
    assert not lung_support(np.zeros((256, 256)), 128).any()


def test_nodule_score_is_the_maximum_inside_the_lungs_only():
    m = np.zeros((128, 128), np.float32)
    m[10, 10] = 0.95  # outside the lungs (a nipple, a tube): ignored
    m[60, 40] = 0.4
    sup = np.zeros((128, 128), bool)
    sup[50:70, 30:50] = True
    assert nodule_score(m, sup) == pytest.approx(0.4)
    assert nodule_score(m, np.zeros_like(sup)) == pytest.approx(0.95)  # no lungs found: whole map


def test_coarse_map_max_pools():
    m = np.zeros((128, 128), np.float32)
    m[61, 41] = 0.7
    c = coarse_map(m, 64)
    assert c.shape == (64, 64) and c[30, 20] == pytest.approx(0.7) and c.sum() == pytest.approx(0.7)
    with pytest.raises(ValueError):
        coarse_map(np.zeros((100, 100)), 64)


@pytest.mark.parametrize("shape", [(2048, 2048), (2048, 1660), (2021, 1733), (700, 512)])
def test_fine_grid_shares_the_box_reduction_exactly(shape):
    from models.cxr.preprocess import prepare

    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    both = prepare(x, 256, fine_size=512)
    np.testing.assert_allclose(both.tensor, prepare(x, 256).tensor, atol=2e-6)
    np.testing.assert_allclose(both.fine, prepare(x, 512).tensor, atol=2e-6)
    assert prepare(x, 256).fine is None and both.fine.shape == (1, 1, 512, 512)


torch = pytest.importorskip("torch")
pytest.importorskip("monai")


@pytest.fixture(scope="module")
def fine_tiny():
    """Three NIH images (with nodule/mass boxes where available) and four OpenIST normals at 512."""
    from models.registry import Registry
    from training.cxr.data import grid_from_pairs, grid_from_records, nih_records, openist_pairs
    from training.cxr.train_nodule import predicted_lungs

    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "cxr"
    if not root.is_dir():
        pytest.skip(f"no chest X-ray data at {root}")
    recs = nih_records(root / "nih")
    pick = [r for r in recs if any(b[0] == "nodule_mass" for b in r.boxes)][:1]
    pick += [r for r in recs if r.label_vector()[0] == 0][:2]
    nih = grid_from_records(pick, 512)
    nih.lungs = predicted_lungs(Registry().session("cxr-lung", threads=1), nih.images)
    normals = grid_from_pairs(openist_pairs(root / "normal-openist")[:4], 512)
    return nih, normals, root


def test_batches_hold_nodule_crops_with_exact_masks_and_lung_support(fine_tiny):
    from training.cxr.train_nodule import CROP, make_batch

    nih, normals, _ = fine_tiny
    b = make_batch(np.random.default_rng(0), nih, normals, mix=(3, 1, 2, 1), box_p=0.5)
    n = 7
    assert b["image"].shape == (n, 1, CROP, CROP) and b["seg"].shape == (n, 1, CROP // 4, CROP // 4)
    assert (b["label"][:3] == 1).all() and (b["label"][3:4] == 0).all() and (b["label"][6] == 0)
    # every synthetic nodule lies in its crop (exact mask) and inside the crop's lung support
    for k in range(3):
        assert b["seg"][k].sum() > 0
        assert (b["support"][k][b["seg"][k] > 0] > 0).all()
    assert (b["seg"][3:] == 0).all()
    # a real box positive trains the image score only
    real = b["label"][4:6]
    assert np.all(b["seg_weight"][4:6][real == 1] == 0) and np.all(b["seg_weight"][4:6][real == 0] == 1)


def test_a_training_step_then_a_parity_checked_export(fine_tiny, tmp_path):
    from models.registry import Registry
    from training.cxr.export import export_nodule
    from training.cxr.train_nodule import train_nodule

    torch.set_num_threads(1)
    nih, normals, root = fine_tiny
    info = train_nodule(nih, normals, tmp_path / "run", init_from=None, budget_s=60, max_iters=1,
                        mix=(1, 1, 1, 1), bn_batches=1)
    assert info["iterations"] == 1 and info["bn_recalibration_batches"] == 1
    out = export_nodule(tmp_path / "run" / "model.pt", tmp_path / "zoo", "0.0.1", root, info, n_parity=1)
    reg = Registry([tmp_path / "zoo"])
    entry = reg.get("cxr-nodule")
    entry.verify()
    assert entry.card.extra["parity_max_abs_diff"]["nodule"] < 1e-3
    got = reg.session("cxr-nodule", threads=1).run({"image": np.zeros((1, 1, 512, 512), np.float32)})["nodule"]
    assert got.shape == (1, 1, 128, 128) and (out / "weights.pt").exists()


def test_peak_hit_rate_counts_maxima_on_the_nodule():
    from training.cxr.evaluate_nodule import peak_hit_rate

    mask = np.zeros((512, 512), bool)
    mask[200:220, 300:320] = True  # cells 50..54, 75..79
    peaks = np.array([[52, 77], [53, 81], [10, 10]])  # on it, one cell beside it (margin 1 -> no), far
    assert peak_hit_rate(peaks, np.stack([mask] * 3), margin=1) == pytest.approx(1 / 3)
    assert peak_hit_rate(peaks[:2], np.stack([mask] * 2), margin=2) == pytest.approx(1.0)
