"""Nodule CAD parts: blob candidates (sphere vs tube), per-nodule segmentation, candidate
patches, the classifier's training sampler and ONNX parity."""
from __future__ import annotations

import numpy as np
import pytest

from models.ct.blobs import closed_lungs, detect, segment_blob
from models.ct.nodules import FPR_PATCH, candidate_patches, normalise
from training.synthesis.ct_nodules import NoduleSpec, insert_nodule


def _lung_with_vessel_and_nodule(kind="solid", d=10.0):
    rng = np.random.default_rng(0)
    hu = (-850 + rng.normal(0, 20, (48, 64, 64))).astype(np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij")
    tube = (yy - 20) ** 2 + (xx - 16) ** 2 <= 2.0 ** 2  # a vessel along z (3 voxels wide)
    hu[tube] = 40.0
    level = 30.0 if kind == "solid" else -600.0
    spec = NoduleSpec((24.0, 40.0, 44.0), d, kind, level, 0.5 if kind == "part-solid" else 0.0,
                      (1.0, 1.0, 1.0), 0.05, 3)
    hu, m = insert_nodule(hu, (1.5, 1.5, 1.5), spec, rng)
    return hu, m, tube


@pytest.mark.parametrize("kind", ["solid", "ground-glass", "part-solid"])
def test_detect_finds_the_sphere_first_and_not_the_tube(kind):
    hu, m, tube = _lung_with_vessel_and_nodule(kind)
    cands = detect(hu, (1.5, 1.5, 1.5), np.ones(hu.shape, bool))
    assert cands, "no candidate"
    top = np.asarray(cands[0].zyx)
    assert np.linalg.norm((top - np.array([24, 40, 44])) * 1.5) < 3.0
    assert 2.0 < cands[0].radius_mm < 10.0  # a 10 mm nodule: radius ~5 mm
    # the tube gives no candidate with a response close to the sphere's
    on_tube = [c.response for c in cands if tube[tuple(int(round(v)) for v in c.zyx)]]
    assert not on_tube or max(on_tube) < 0.5 * cands[0].response


@pytest.mark.parametrize("kind,d", [("solid", 6.0), ("solid", 16.0), ("ground-glass", 12.0), ("part-solid", 14.0)])
def test_segment_blob_matches_inserted_nodule_and_cuts_the_vessel(kind, d):
    rng = np.random.default_rng(1)
    hu = (-850 + rng.normal(0, 20, (48, 64, 64))).astype(np.float32)
    w = 1 if kind == "solid" and d > 10 else 0  # a vessel (4.5 or 1.5 mm wide) through the nodule
    hu[24 - w:25 + w, 40 - w:41 + w, :] = 40.0
    spec = NoduleSpec((24.0, 40.0, 30.0), d, kind, 30.0 if kind == "solid" else -600.0,
                      0.5 if kind == "part-solid" else 0.0, (1.0, 1.0, 1.0), 0.0, 1)
    hu, truth = insert_nodule(hu, (1.5, 1.5, 1.5), spec, rng)
    c = detect(hu, (1.5, 1.5, 1.5), np.ones(hu.shape, bool))[0]  # centre and radius as the pipeline has them
    mask, box = segment_blob(hu, c.zyx, c.radius_mm, (1.5, 1.5, 1.5))
    full = np.zeros(hu.shape, bool)
    full[box] = mask
    dice = 2 * (full & truth).sum() / (full.sum() + truth.sum())
    # part-solid: the ground-glass halo is found but over-segmented (a known weakness, see docs/ct.md)
    assert dice > (0.6 if kind == "part-solid" else 0.68), dice
    assert full[truth].mean() > 0.8
    assert not full[24, 40, 30 + int(d / 1.5) + 6:].any()  # the vessel beyond the nodule is cut


def test_closed_lungs_takes_in_a_wall_notch():
    lungs = np.zeros((30, 40, 40), bool)
    lungs[5:25, 5:35, 5:35] = True
    lungs[12:18, 5:11, 17:23] = False  # a juxtapleural bump at the border
    closed = closed_lungs(lungs, (1.5, 1.5, 1.5), radius_mm=9.0)
    assert closed[15, 7, 20] and closed[lungs].all()
    assert not closed[0, 0, 0]


def test_candidate_patches_centre_and_edge_padding():
    hu = np.full((20, 20, 20), -1000.0, np.float32)
    hu[10, 10, 10] = 400.0
    p = candidate_patches(hu, np.array([[10.2, 9.8, 10.0], [0.0, 0.0, 0.0]]))
    assert p.shape == (2, FPR_PATCH, FPR_PATCH, FPR_PATCH)
    assert p[0, FPR_PATCH // 2, FPR_PATCH // 2, FPR_PATCH // 2] == pytest.approx(1.0)
    lo = normalise(np.full(1, -1000.0))[0]
    assert np.allclose(p[1][:16, :16, :16], lo)  # edge padding of the air corner
    assert p[1][26, 26, 26] == pytest.approx(1.0) and (p[1] > lo).sum() == 1


def test_fpr_sampler_and_classifier_export(tmp_path):
    torch = pytest.importorskip("torch")
    from models.ct.volume import CTVolume
    from training.ct.data import LungVolume
    from training.ct.export import export_onnx
    from training.ct.fpr_data import FprSource, fpr_sample
    from training.ct.networks import fpr_cnn
    from training.ct.train_fpr import train_fpr

    torch.set_num_threads(1)
    hu, _, _ = _lung_with_vessel_and_nodule()
    lungs = np.zeros(hu.shape, bool)
    lungs[4:44, 6:58, 6:58] = True
    src = FprSource(LungVolume(CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3)), lungs),
                    np.array([[24.0, 20.0, 16.0]]), "toy")
    rng = np.random.default_rng(0)
    x1, y1 = fpr_sample([src], rng, p_pos=1.0)
    x0, y0 = fpr_sample([src], rng, p_pos=0.0)
    assert x1.shape == (FPR_PATCH,) * 3 and y1[0] == 1.0 and y0[0] == 0.0
    net = fpr_cnn()
    info = train_fpr(net, lambda r, label: fpr_sample([src], r, p_pos=float(label)), tmp_path, budget_s=60,
                     batch=4, max_iters=2, log_every=1)
    assert info["iterations"] == 2 and (tmp_path / "model.pt").is_file()
    res = export_onnx(net, tmp_path / "fpr.onnx", 1, FPR_PATCH, x1[None, None])
    assert res["parity_max_abs_diff"] < 1e-3
