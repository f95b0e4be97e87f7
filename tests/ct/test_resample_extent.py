"""Resampling stays inside the source extent, so lungs never join the air around the patient."""
from __future__ import annotations

import numpy as np

from dicom_node import samples
from models.ct.lungs import lung_mask
from models.ct.volume import load_series, resample, volume_from_datasets


def test_resampled_grid_does_not_run_past_the_last_slice() -> None:
    vol = volume_from_datasets(samples.ct_series(n_slices=40, size=256))
    out = resample(vol, (1.5, 1.5, 1.5), order=1)
    src_extent = (vol.hu.shape[0] - 1) * vol.spacing[0]
    assert (out.hu.shape[0] - 1) * out.spacing[0] <= src_extent + 1e-6
    # no slab of fill value (-1024 HU) appears at either end of the resampled stack
    assert out.hu[-1].max() > -900 and out.hu[0].max() > -900
    assert lung_mask(out.hu, out.spacing).sum() > 0


def test_lung_bases_found_on_real_series(shared_data) -> None:
    vol = load_series(shared_data / "ct" / "totalseg" / "dicom_series")
    work = resample(vol, (1.5, 1.5, 1.5), order=1)
    lungs = lung_mask(work.hu, work.spacing)
    ml = lungs.sum() * np.prod(work.spacing) / 1000.0
    assert ml > 10.0, f"only {ml:.1f} mL of lung found in a series that shows both lung bases"
