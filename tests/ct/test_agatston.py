"""Agatston / volume / mass scores against hand-computed values on constructed volumes."""
from __future__ import annotations

import numpy as np
import pytest

from models.ct import agatston


def _vol():
    hu = np.zeros((10, 40, 40), np.float32)  # 0 HU background
    # slice 2: 4x4 px at 0.5 mm -> 4 mm², uniform 250 HU -> weight 2 -> 8
    hu[2, 5:9, 5:9] = 250
    # slice 5: 2x3 px -> 1.5 mm², 450 HU peak (mean 450) -> weight 4 -> 6
    hu[5, 20:22, 20:23] = 450
    # slice 5: 3 px -> 0.75 mm² < 1 mm² -> not a lesion
    hu[5, 30, 30:33] = 900
    # slices 7 and 8: 4x2 px -> 2 mm² each; 135 HU (w 1) and 320 HU (w 3) -> 2 + 6
    hu[7, 10:14, 30:32] = 135
    hu[8, 10:14, 30:32] = 320
    # 129 HU is below threshold everywhere
    hu[9, 0:10, 0:10] = 129
    return hu


def test_hand_computed_scores_at_3mm():
    s = agatston.score(_vol(), (3.0, 0.5, 0.5), calibration=0.8)
    assert s.agatston == pytest.approx(8 + 6 + 2 + 6)
    assert s.volume_mm3 == pytest.approx((4 + 1.5 + 2 + 2) * 3)
    mass = 0.8 * (250 * 4 * 3 + 450 * 1.5 * 3 + 135 * 2 * 3 + 320 * 2 * 3) / 1000
    assert s.mass_mg == pytest.approx(mass)
    assert s.category == "1-99"
    assert len(s.lesions) == 4
    assert s.mask.sum() == 16 + 6 + 8 + 8


def test_normalised_to_3mm_increment():
    s = agatston.score(_vol(), (1.5, 0.5, 0.5))
    assert s.agatston == pytest.approx(22 * 0.5)
    assert s.volume_mm3 == pytest.approx(9.5 * 1.5)


def test_threshold_is_inclusive_and_8_connected():
    hu = np.zeros((1, 10, 10), np.float32)
    hu[0, 2, 2] = 130
    hu[0, 3, 3] = 130  # diagonal neighbour -> same lesion
    hu[0, 4, 4] = 130
    hu[0, 5, 5] = 130
    s = agatston.score(hu, (3.0, 0.5, 0.5))
    assert len(s.lesions) == 1 and s.lesions[0].area_mm2 == pytest.approx(1.0)
    assert s.agatston == pytest.approx(1.0)


@pytest.mark.parametrize("peak,w", [(129.9, 0), (130, 1), (199.9, 1), (200, 2), (299, 2), (300, 3),
                                    (399.9, 3), (400, 4), (2000, 4)])
def test_density_weight(peak, w):
    assert agatston.density_weight(peak) == w


@pytest.mark.parametrize("score,cat", [(0, "0"), (0.5, "1-99"), (99.9, "1-99"), (100, "100-399"),
                                       (399, "100-399"), (400, ">=400")])
def test_category(score, cat):
    assert agatston.category(score) == cat


def test_region_and_per_artery():
    hu = _vol()
    region = np.ones(hu.shape, bool)
    region[5] = False  # the 450 HU lesion lies outside the coronary territory
    terr = np.zeros(hu.shape, np.uint8)
    terr[:, :, :20] = 2  # LAD
    terr[:, :, 20:] = 4  # RCA
    s = agatston.score(hu, (3.0, 0.5, 0.5), region, terr)
    assert s.agatston == pytest.approx(16)
    assert s.per_artery["LAD"]["agatston"] == pytest.approx(8)
    assert s.per_artery["RCA"]["agatston"] == pytest.approx(8)
    assert s.per_artery["LM"]["agatston"] == 0 and s.per_artery["LCX"]["agatston"] == 0
