"""Fixtures for the CT denoising tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def ct_series_dir(shared_data: Path) -> Path:
    """The real 20-slice CT series (JPEG 2000 lossless)."""
    return shared_data / "ct" / "totalseg" / "dicom_series"


@pytest.fixture
def ct_three_slices(ct_series_dir: Path, tmp_path: Path) -> Path:
    """Three consecutive held-out real slices copied into a temporary folder."""
    out = tmp_path / "in"
    out.mkdir()
    for f in sorted(ct_series_dir.glob("*.dcm"))[15:18]:
        shutil.copy(f, out / f.name)
    return out
