"""Fixtures for the result-object tests: real and generated source images."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from .sources import make_cr, make_ct_series


@pytest.fixture
def cr() -> Dataset:
    return make_cr()


@pytest.fixture
def ct_series() -> list[Dataset]:
    return make_ct_series()


@pytest.fixture
def real_cr(shared_data: Path) -> Dataset:
    files = sorted((shared_data / "cxr" / "samples").glob("*.dcm"))
    if not files:
        pytest.skip("no DICOM sample in ../shared/data/cxr/samples")
    return pydicom.dcmread(files[0])


