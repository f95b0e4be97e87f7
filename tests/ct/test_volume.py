"""Series → HU volume on the real JPEG 2000 CT series, and on edited copies of it."""
from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from models.ct.errors import GantryTiltError, MissingSliceError, SeriesError
from models.ct.volume import CTVolume, load_series, resample, volume_from_datasets


def test_real_jpeg2000_series(totalseg):
    v = load_series(totalseg / "dicom_series")
    assert v.shape == (20, 512, 512)
    assert v.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    # sorted by position along the normal (feet → head), not by file name
    assert v.origin[2] == pytest.approx(-804.5)
    assert v.voxel_to_patient([19, 0, 0])[2] == pytest.approx(-766.5)
    # HU: air outside the body, soft tissue in the liver region, bone
    assert v.hu[10, 5, 5] == pytest.approx(-1024, abs=30)
    assert -50 < np.median(v.hu[10, 240:260, 150:170]) < 200
    assert v.hu.max() > 700
    assert v.meta["contrast_bolus_agent"] == "APPLIED"
    assert v.meta["missing_slices"] == []
    xyz = v.voxel_to_patient([3, 100, 200])
    assert np.allclose(v.patient_to_voxel(xyz), [3, 100, 200])


def _datasets(totalseg):
    return [pydicom.dcmread(p) for p in sorted((totalseg / "dicom_series").glob("*.dcm"))]


def test_order_independent_of_file_order(totalseg):
    dss = _datasets(totalseg)
    a = volume_from_datasets(dss)
    b = volume_from_datasets(list(reversed(dss)))
    assert np.array_equal(a.hu, b.hu)
    # the slice at the lowest z is the one whose IPP z is -804.5
    low = min(dss, key=lambda d: float(d.ImagePositionPatient[2]))
    assert np.array_equal(a.hu[0], low.pixel_array.astype(np.float32) - 1024)


def test_missing_slice_detected_and_interpolated(totalseg):
    dss = _datasets(totalseg)
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    del dss[7]
    with pytest.raises(MissingSliceError, match="missing"):
        volume_from_datasets(dss)
    v = volume_from_datasets(dss, allow_missing=True)
    assert v.shape[0] == 20 and v.meta["missing_slices"][0]["count"] == 1


def test_gantry_tilt_rejected_or_corrected(totalseg):
    dss = _datasets(totalseg)
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    ref = volume_from_datasets(dss)
    shear = np.tan(np.radians(10.0))  # 10 deg tilt: y origin moves with z
    for k, d in enumerate(dss):
        x, y, z = (float(t) for t in d.ImagePositionPatient)
        d.ImagePositionPatient = [x, y + shear * (z - (-804.5)), z]
        d.GantryDetectorTilt = 10.0
    with pytest.raises(GantryTiltError, match="tilt"):
        volume_from_datasets(dss)
    v = volume_from_datasets(dss, correct_tilt=True)
    assert v.meta["tilt_corrected_deg"] == pytest.approx(10.0, abs=0.1)
    # the last slice was shifted back by its in-plane offset: same as the untilted slice moved
    off_px = shear * 38.0 / 0.9765625
    k = int(round(off_px))
    assert np.abs(v.hu[-1, 100:400, 100:400] - ref.hu[-1, 100 - k:400 - k, 100:400]).mean() < 40


def test_mixed_series_and_orientation_rejected(totalseg, tmp_path):
    dss = _datasets(totalseg)
    dss[3].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(SeriesError, match="ImageOrientationPatient"):
        volume_from_datasets(dss)
    with pytest.raises(SeriesError, match="no DICOM"):
        load_series(tmp_path)


def test_resample_keeps_geometry(totalseg):
    v = load_series(totalseg / "dicom_series")
    r = resample(v, (2.0, 2.0, 2.0))
    assert r.shape == (20, 250, 250)
    p = v.voxel_to_patient([10, 256, 256])
    q = r.patient_to_voxel(p)
    assert abs(r.hu[int(round(q[0])), int(round(q[1])), int(round(q[2]))] - v.hu[10, 256, 256]) < 150


def test_sitk_roundtrip():
    hu = np.random.default_rng(0).normal(0, 100, (4, 5, 6)).astype(np.float32)
    v = CTVolume(hu, (2.0, 0.5, 0.7), np.array([1.0, 2.0, 3.0]), np.eye(3))
    w = CTVolume.from_sitk(v.to_sitk())
    assert np.allclose(w.hu, hu) and w.spacing == v.spacing and np.allclose(w.origin, v.origin)
