"""Sample studies: the real CR from pydicom-data and generated CT/DX (validated)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node import samples


def test_chest_cr_is_real_and_shipped() -> None:
    ds = pydicom.dcmread(samples.chest_cr_path())
    assert (ds.Modality, ds.BodyPartExamined) == ("CR", "CHEST")
    assert ds.pixel_array.shape == (1955, 1841)


def test_ct_series_geometry_and_hu() -> None:
    series = samples.ct_series(4, size=128, seed=1)
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert np.allclose(np.diff(z), -2.5)
    assert len({ds.SeriesInstanceUID for ds in series}) == 1 and len({ds.SOPInstanceUID for ds in series}) == 4
    hu = series[1].pixel_array.astype(np.float32) * float(series[1].RescaleSlope) + float(series[1].RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 500  # air/lung and bone present
    # asymmetric: the spine is posterior (bottom rows), not anterior
    assert hu[64:, :].max() > 500 and hu[:64, :].max() < 300
    assert samples.ct_series(2, size=64, seed=1)[0].SOPInstanceUID == samples.ct_series(2, size=64, seed=1)[0].SOPInstanceUID


@pytest.mark.parametrize("kind", ["ct", "dx"])
def test_generated_objects_pass_dciodvfy(kind: str, tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools not installed")
    ds = samples.ct_series(1, size=64)[0] if kind == "ct" else samples.dx_chest(128)
    path = samples.save(ds, tmp_path / f"{kind}.dcm")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
