"""Lesion insertion (nodules, liver lesions), lung masks and FROC/CPM on hand examples."""
from __future__ import annotations

import numpy as np
import pytest

from models.ct.liver import enhancement_pattern
from models.ct.lungs import lung_mask
from models.ct.nodules import lung_rads, nodule_type
from training.ct.froc import froc
from training.synthesis.ct_nodules import NoduleSpec, insert_nodule


def _lung_phantom():
    rng = np.random.default_rng(0)
    hu = np.full((40, 80, 100), -1000.0) + rng.normal(0, 15, (40, 80, 100))
    hu[:, 10:70, 10:90] = 40 + rng.normal(0, 15, (40, 60, 80))  # body
    hu[5:35, 20:60, 15:45] = -850 + rng.normal(0, 30, (30, 40, 30))  # right lung (low column)
    hu[5:35, 20:60, 55:85] = -850 + rng.normal(0, 30, (30, 40, 30))  # left lung
    hu[20:26, 62:68, 45:55] = -1000  # bowel gas: air, not lung
    return hu


def test_lung_mask_excludes_outside_air_and_gas():
    hu = _lung_phantom()
    m = lung_mask(hu, (2.0, 2.0, 2.0), min_volume_ml=5)
    truth = np.zeros(hu.shape, bool)
    truth[5:35, 20:60, 15:45] = truth[5:35, 20:60, 55:85] = True
    assert 2 * (m & truth).sum() / (m.sum() + truth.sum()) > 0.97
    assert not m[22, 65, 50] and not m[0, 0, 0]


def test_lung_mask_on_real_cropped_chest(totalseg):
    from models.ct.volume import read_nifti

    v = read_nifti(totalseg / "cardiac_crop" / "ct_cropped.nii.gz")
    m = lung_mask(v.hu, v.spacing)
    ml = m.sum() * v.voxel_volume_mm3 / 1000
    assert 1000 < ml < 2500  # both lungs beside the heart in the crop
    assert np.median(v.hu[m]) < -600


@pytest.mark.parametrize("kind,d", [("solid", 6.0), ("solid", 20.0), ("ground-glass", 12.0), ("part-solid", 16.0)])
def test_nodule_insertion_volume_and_type(kind, d):
    hu = np.full((50, 50, 50), -850.0, np.float32)
    hu[25, :, 10] = 40  # a vessel through the nodule region
    spec = NoduleSpec((25.0, 25.0, 25.0), d, kind, 30.0 if kind == "solid" else -600.0,
                      0.5 if kind == "part-solid" else 0.0, (1.0, 1.0, 1.0), 0.0, 1)
    out, m = insert_nodule(hu, (1.0, 1.0, 1.0), spec, np.random.default_rng(0))
    assert m.sum() == pytest.approx(np.pi / 6 * d ** 3, rel=0.15)
    assert nodule_type(out[m])[0] == kind
    assert out[25, 25, 10] == pytest.approx(40, abs=1.0)  # vessel kept


def test_lung_rads_table():
    assert lung_rads("solid", 5.9, 5.9) == "2" and lung_rads("solid", 6, 6) == "3"
    assert lung_rads("solid", 8, 8) == "4A" and lung_rads("solid", 15, 15) == "4B"
    assert lung_rads("part-solid", 5, 2) == "2" and lung_rads("part-solid", 10, 4) == "3"
    assert lung_rads("part-solid", 10, 7) == "4A" and lung_rads("part-solid", 12, 9) == "4B"
    assert lung_rads("ground-glass", 29, 0) == "2" and lung_rads("ground-glass", 30, 0) == "3"


def test_enhancement_pattern_rules():
    liver = {"non-contrast": 50, "arterial": 65, "portal-venous": 105, "delayed": 85}
    hcc = {"non-contrast": 40, "arterial": 120, "portal-venous": 85, "delayed": 65}
    rim = {"non-contrast": 50, "arterial": 70, "portal-venous": 125, "delayed": 105}
    assert enhancement_pattern(hcc, liver, rim) == {"arterial_hyperenhancement": True, "washout": True,
                                                    "capsule": True}
    cyst = {p: 8.0 for p in liver}
    assert enhancement_pattern(cyst, liver, liver) == {"arterial_hyperenhancement": False, "washout": False,
                                                       "capsule": False}


def test_froc_hand_example():
    # 2 cases, 3 lesions. Scores: 0.9 hit(0,1), 0.8 FP, 0.7 hit(1,1), 0.6 hit(0,1) again (ignored),
    # 0.5 FP, 0.4 FP, 0.3 hit(0,2)
    cases = [[(0.9, 1), (0.8, None), (0.6, 1), (0.3, 2)], [(0.7, 1), (0.5, None), (0.4, None)]]
    r = froc(cases, n_lesions=3, n_cases=2)
    s = r["sensitivity_at_fp_per_scan"]
    # allowed FPs = rate × 2: 0.25 → 0 FP → only the 0.9 hit; 0.5 → 1 FP → 0.9, 0.7; 1 → 2 FP; 2 → 4 FP: all 3
    assert s["0.125"] == pytest.approx(1 / 3) and s["0.25"] == pytest.approx(1 / 3)
    assert s["0.5"] == pytest.approx(2 / 3) and s["1.0"] == pytest.approx(2 / 3)
    assert s["2.0"] == pytest.approx(1.0) and s["8.0"] == pytest.approx(1.0)
    assert r["cpm"] == pytest.approx((1 / 3 * 2 + 2 / 3 * 2 + 1 * 3) / 7)
