"""Projection-domain low-dose simulation: noise scaling and HU preservation."""
from __future__ import annotations

import numpy as np
import pytest

from training.lowdose.simulate import LowDoseError, LowDoseSimulator, ScanModel, hu_to_mu, mu_to_hu, simulate_low_dose

N = 256
PX = 1.0


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[:N, :N]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r**2


def phantom() -> tuple[np.ndarray, dict[str, tuple[slice, slice]]]:
    """Water cylinder (20 cm) in air with fat, soft-tissue and air inserts."""
    img = np.full((N, N), -1000.0)
    img[_disc(128, 128, 100)] = 0.0
    img[_disc(90, 90, 22)] = -100.0   # fat
    img[_disc(90, 166, 22)] = 40.0    # soft tissue
    img[_disc(166, 90, 22)] = -1000.0  # air insert
    rois = {
        "water": np.s_[150:190, 140:180],
        "fat": np.s_[78:102, 78:102],
        "soft": np.s_[78:102, 154:178],
        "air": np.s_[154:178, 78:102],
        "outside_air": np.s_[2:20, 2:20],
    }
    return img, rois


@pytest.fixture(scope="module")
def projected():
    img, rois = phantom()
    sim = LowDoseSimulator(ScanModel(n_views=180))
    return img, rois, sim, sim.project(img, PX)


def test_hu_mu_round_trip():
    hu = np.array([-1000.0, -100.0, 0.0, 40.0, 1000.0])
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu, atol=1e-9)


def test_noise_sd_scales_as_inverse_sqrt_dose(projected):
    img, rois, sim, proj = projected
    rng = np.random.default_rng(1)
    sd = {}
    for dose in (0.5, 0.25, 0.1):
        sd[dose] = np.mean([np.std(sim.noise(proj, dose, rng)[rois["water"]]) for _ in range(3)])
    for dose in (0.25, 0.1):
        expected = np.sqrt(0.5 / dose)
        ratio = sd[dose] / sd[0.5]
        assert abs(ratio / expected - 1) < 0.10, (dose, ratio, expected, sd)
    # the noise is CT-textured, not white: neighbouring pixels are correlated
    n = sim.noise(proj, 0.25, rng)[rois["water"]]
    corr = np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]
    assert corr > 0.2


@pytest.mark.parametrize("dose", [0.25, 0.1])
def test_mean_hu_unchanged_in_air_fat_soft_tissue(projected, dose):
    img, rois, sim, proj = projected
    rng = np.random.default_rng(2)
    lows = [sim.simulate(proj, dose, rng) for _ in range(4)]
    for name in ("fat", "soft", "air", "water"):
        shift = np.mean([lo[rois[name]].mean() for lo in lows]) - img[rois[name]].mean()
        assert abs(shift) < 5.0, (name, shift)
    # and the image really is noisier
    assert np.std(lows[0][rois["water"]]) > 2.0


def test_real_slice_keeps_mean_hu(shared_data):
    from models.denoise.series import read_ct_slices
    from training.denoise.metrics import uniform_rois

    files = sorted((shared_data / "ct" / "totalseg" / "dicom_series").glob("*.dcm"))
    (s,) = read_ct_slices([files[16]])
    hu = s.hu
    low = simulate_low_dose(hu, 0.25, s.pixel_mm, seed=3, model=ScanModel(n_views=180))
    rois = uniform_rois(hu, size=21, count=3)
    assert rois
    for r in rois:
        assert abs(low[r].mean() - hu[r].mean()) < 5.0
    fat = (hu > -150) & (hu < -60)
    assert abs(low[fat].mean() - hu[fat].mean()) < 5.0
    assert np.std(low - hu) > 5.0


@pytest.mark.parametrize("bad", [np.zeros((10, 12)), np.zeros((4, 4, 4)), np.full((8, 8), np.nan)])
def test_bad_slices_rejected(bad):
    with pytest.raises(LowDoseError):
        simulate_low_dose(bad, 0.25, 1.0)


def test_bad_dose_rejected():
    with pytest.raises(LowDoseError):
        simulate_low_dose(np.zeros((16, 16)), 0.0, 1.0)
