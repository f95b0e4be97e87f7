"""Liver-lesion candidate logic (hysteresis, in-liver rule, body mask, orientation) on
constructed probability maps, and the real series' orientation/candidate check."""
from __future__ import annotations

import numpy as np
import pytest

from models.ct.liver import LiverPipeline, body_mask, canonical, liver_region
from models.ct.volume import CTVolume


def _ball(shape, c, r):
    zz, yy, xx = np.indices(shape)
    return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r ** 2


def _maps(hole: bool = False):
    shape = (40, 60, 60)
    liver = np.zeros(shape, np.float32)
    liver[5:35, 10:50, 10:40] = 0.95
    les = np.zeros(shape, np.float32)
    inner = _ball(shape, (20, 30, 25), 5)  # lesion inside the liver: core 0.9, halo 0.3
    les[_ball(shape, (20, 30, 25), 7)] = 0.3
    les[inner] = 0.9
    if hole:
        liver[inner] = 0.2  # the liver channel leaves the lesion out (a hole)
    beside = _ball(shape, (20, 30, 41), 4)  # hypodense structure just outside the liver
    les[beside] = 0.9
    return np.stack([liver, les]), inner, beside


def test_hysteresis_grows_the_seed_region_and_drops_unseeded_halo():
    prob, inner, _ = _maps()
    prob[1][_ball(prob.shape[1:], (8, 15, 15), 3)] = 0.3  # low blob with no seed: not a lesion
    _, plain = LiverPipeline(model=object(), threshold=0.5).segment(prob)
    _, hyst = LiverPipeline(model=object(), threshold=0.5, grow_threshold=0.25).segment(prob)
    k = plain[20, 30, 25]
    assert k and (plain == k).sum() == inner.sum()
    k = hyst[20, 30, 25]
    assert (hyst == k).sum() > inner.sum()  # grown into the 0.3 halo
    assert hyst[8, 15, 15] == 0


def test_in_liver_rule_keeps_intrahepatic_lesion_drops_adjacent_structure():
    """The liver channel covers intrahepatic lesions (its training target is the whole
    liver); a structure beside the liver lies mostly outside it and is surrounded by other
    tissue."""
    prob, inner, beside = _maps()
    _, lab = LiverPipeline(model=object(), threshold=0.5).segment(prob)
    assert lab[20, 30, 25] and lab[20, 30, 41]  # both within 4.5 mm of the liver
    _, lab = LiverPipeline(model=object(), threshold=0.5, min_in_liver=0.5).segment(prob)
    assert lab[20, 30, 25] == 1 and lab[20, 30, 41] == 0 and lab.max() == 1


def test_liver_region_fills_lesion_holes_and_respects_body():
    prob, inner, _ = _maps(hole=True)
    liver, near = liver_region(prob[0])
    assert not liver[20, 30, 25] and near[20, 30, 25]
    body = np.zeros(prob.shape[1:], bool)
    body[:, :, :30] = True
    liver, near = liver_region(prob[0], body)
    assert not near[:, :, 30:].any() and liver[20, 30, 12]


def test_body_mask_excludes_outside_air_keeps_lungs():
    hu = np.full((6, 50, 50), -1000.0, np.float32)
    hu[:, 5:45, 5:45] = 40.0  # body wall and abdomen
    hu[:, 15:35, 15:35] = -850.0  # lungs inside
    hu[:, 48:, :] = 200.0  # the table: separate, smaller
    m = body_mask(hu)
    assert m[3, 25, 25] and m[3, 6, 6] and not m[3, 1, 1] and not m[3, 49, 25]


def test_canonical_reorients_lps_to_training_orientation():
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    v = CTVolume(a, (2.0, 1.0, 1.5), np.array([10.0, -20.0, 30.0]), np.eye(3), {})
    c = canonical(v)
    assert c.direction.tolist() == [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]
    for idx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:  # same intensity at the same patient point
        p = v.voxel_to_patient(np.array(idx, float))
        j = np.round(c.patient_to_voxel(p)).astype(int)
        assert c.hu[tuple(j)] == a[idx]
    assert canonical(c) is c


def test_real_series_reoriented_and_few_candidates(totalseg):
    """The real portal-venous series (DICOM, LPS) runs in the training orientation, and the
    shipped model reports few lesion candidates there (68 before the fixes; none is known)."""
    from models.ct.volume import load_study

    vols = load_study(totalseg / "dicom_series")
    pipe = LiverPipeline(threads=1)
    x = pipe.pre_process(vols)
    assert np.allclose(x.work.direction, np.diag([-1, -1, 1]))
    res = pipe.post_process(pipe.predict(x), x)
    assert res["n_lesions"] <= 5
    assert res["_mask"].shape == vols[0].shape


class _Pointwise:
    """Stand-in network: logits are a pointwise function of the portal-venous channel, so
    any misplacement of windows or of the mirrored edge padding shows in the output."""

    input_names = ["image"]

    def run(self, feeds):
        x = feeds["image"]
        return [np.stack([x[:, 1] * 8 - 4, x[:, 1] * 8 - 4], axis=1)]


@pytest.mark.parametrize("edge_pad", [0, 8])
def test_predict_windows_and_edge_padding_keep_voxels_in_place(edge_pad):
    from models.ct.liver import LiverInput, _windows, normalise

    rng = np.random.default_rng(0)
    hu = rng.uniform(-100, 300, (59, 70, 66)).astype(np.float32)
    work = CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3), np.diag([-1.0, -1.0, 1.0]), {})
    x = LiverInput(work, work, np.stack([hu] * 3), {"portal-venous": hu}, [], {},
                   _windows([max(n, 64) for n in hu.shape]))
    prob = LiverPipeline(model=_Pointwise(), edge_pad=edge_pad).predict(x)
    expect = 1 / (1 + np.exp(-(normalise(hu) * 8 - 4)))
    assert prob.shape == (2,) + hu.shape
    assert np.allclose(prob[1], expect, atol=1e-5)
