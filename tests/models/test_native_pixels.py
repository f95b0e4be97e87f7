"""The zero-copy reader of native little-endian pixel data equals pydicom's decoder."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from models.imaging import _native_pixels, load_radiograph


def _file(tmp_path, stored: np.ndarray, bits_stored: int, syntax=ExplicitVRLittleEndian, **tags) -> pydicom.Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "CR", stored.shape[0], stored.shape[1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, tags.pop("photometric", "MONOCHROME2")
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = stored.tobytes()
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


@pytest.mark.parametrize("dtype,bits,syntax", [
    (np.uint16, 12, ExplicitVRLittleEndian), (np.uint16, 16, ImplicitVRLittleEndian),
    (np.int16, 16, ExplicitVRLittleEndian), (np.uint8, 8, ExplicitVRLittleEndian), (np.uint16, 10, ExplicitVRLittleEndian),
])
def test_native_view_equals_pydicom(tmp_path, dtype, bits, syntax):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    stored = rng.integers(info.min, info.max, size=(31, 47), endpoint=True).astype(dtype)  # garbage in unused bits too
    ds = _file(tmp_path, stored, bits, syntax)
    got = _native_pixels(ds)
    assert got is not None
    np.testing.assert_array_equal(got, ds.pixel_array)


def test_signed_with_unused_bits_falls_back_to_pydicom(tmp_path):
    ds = _file(tmp_path, np.zeros((4, 4), np.int16), 12)
    assert _native_pixels(ds) is None


def test_windowed_monochrome1_through_the_native_path_equals_the_decoder_path(tmp_path):
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 4096, size=(40, 30)).astype(np.uint16)
    ds = _file(tmp_path, stored, 12, photometric="MONOCHROME1", WindowCenter=1800, WindowWidth=900,
               RescaleSlope=1.5, RescaleIntercept=-20)
    fast = load_radiograph(ds).pixels
    v = stored * 1.5 - 20
    expected = 1.0 - np.clip((v - (1800 - 0.5)) / (900 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(fast, expected, atol=2e-6)
