"""Sample studies for the demo and the tests.

- A real chest CR: ``RG1_UNCR.dcm`` from the ``pydicom-data`` package (found with
  pydicom's data manager), sent unchanged.
- Generated CT series: 512 x 512, 16-bit, axial slices with consistent geometry
  (Image Plane module, PS3.3 C.7.6.2) of a simple chest phantom (body, lungs,
  spine, heart; Hounsfield units through Rescale Slope/Intercept).
- A generated DX (Digital X-Ray, For Presentation) chest radiograph phantom.

Generated objects carry synthetic patient data only (``MEDWS^SYNTHETIC``).
"""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from dicom_node.dicom_file import IMPLEMENTATION_CLASS_UID
from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

CHEST_CR_NAME = "RG1_UNCR.dcm"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root


def chest_cr_path() -> Path:
    """Path of the real chest CR shipped by ``pydicom-data``."""
    path = get_testdata_file(CHEST_CR_NAME)
    if not path:
        raise NodeError(f"{CHEST_CR_NAME} not found; install the 'pydicom-data' package")
    return Path(path)


def _uid(*parts: object) -> str:
    """A UID derived from ``parts`` (same parts, same UID; PS3.5 B.2)."""
    return generate_uid(UID_PREFIX, entropy_srcs=[str(p) for p in parts])


def _meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    return meta


def _patient_study(ds: Dataset, patient_id: str, study_uid: str, description: str, when: _dt.datetime) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "MEDWS^SYNTHETIC"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = patient_id[-8:]
    ds.StudyDescription = description
    ds.Manufacturer = "medws synthetic"
    ds.InstitutionName = "medws"


def ct_phantom_slice(z_mm: float, size: int = 512, rng: np.random.Generator | None = None) -> np.ndarray:
    """Hounsfield units of one axial chest phantom slice at height ``z_mm`` (0..300)."""
    rng = rng or np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    s = size / 512.0
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    body = ((x - c) / (220 * s)) ** 2 + ((y - c) / (150 * s)) ** 2 <= 1
    hu[body] = 40
    lung_scale = float(np.clip(np.sin(np.pi * np.clip(z_mm, 0, 300) / 300), 0.15, 1.0))
    for side in (-1, 1):
        lung = ((x - c - side * 95 * s) / (70 * s * lung_scale)) ** 2 + ((y - c + 5 * s) / (105 * s * lung_scale)) ** 2 <= 1
        hu[lung & body] = -850
    heart = ((x - c + 20 * s) / (55 * s)) ** 2 + ((y - c + 30 * s) / (45 * s)) ** 2 <= 1
    if 100 <= z_mm <= 220:
        hu[heart] = 45
    spine = (x - c) ** 2 + (y - c - 110 * s) ** 2 <= (22 * s) ** 2
    hu[spine] = 700
    hu[body] += rng.normal(0, 12, size=int(body.sum())).astype(np.float32)
    return hu


def ct_series(n_slices: int = 40, size: int = 512, seed: int = 0, patient_id: str = "MEDWS-CT-0001",
              study_uid: str | None = None, slice_mm: float = 2.5) -> list[Dataset]:
    """A generated axial CT series (CT Image Storage, PS3.3 A.3) as file data sets."""
    rng = np.random.default_rng(seed)
    when = _dt.datetime(2024, 1, 15, 9, 30, 0)
    study_uid = study_uid or _uid("ct-study", patient_id, seed)
    series_uid = _uid("ct-series", study_uid, seed, n_slices)
    frame_uid = _uid("ct-frame", series_uid)
    spacing = 350.0 / size
    out = []
    for i in range(n_slices):
        z = -i * slice_mm
        sop_uid = _uid("ct-image", series_uid, i)
        ds = Dataset()
        ds.file_meta = _meta(CTImageStorage, sop_uid)
        _patient_study(ds, patient_id, study_uid, "CT CHEST (synthetic phantom)", when)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 2
        ds.SeriesDescription = "Chest 2.5 mm"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = i + 1
        ds.AcquisitionNumber = 1
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = ds.StudyTime
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [f"{-spacing * size / 2:.3f}", f"{-spacing * size / 2:.3f}", f"{z:.3f}"]
        ds.SliceThickness = f"{slice_mm:g}"
        ds.SliceLocation = f"{z:.3f}"
        ds.KVP = "120"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        hu = ct_phantom_slice(300 - i * slice_mm * 300 / max(1, n_slices * slice_mm) , size, rng)
        ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
        out.append(ds)
    return out


def dx_chest(size: int = 1024, seed: int = 0, patient_id: str = "MEDWS-DX-0001") -> Dataset:
    """A generated PA chest radiograph (DX Image Storage - For Presentation, PS3.3 A.26)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 0.15 + 0.1 * rng.random((size, size), dtype=np.float32)
    thorax = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.45) ** 2 <= 1
    img[thorax] = 0.55
    for cx in (0.32, 0.68):
        lung = ((x - cx) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2 <= 1
        img[lung] = 0.25
    mediastinum = (np.abs(x - 0.5) < 0.06) & (y > 0.2) & (y < 0.9)
    img[mediastinum] = 0.75
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    pixels = np.clip(img * 4095, 0, 4095).astype(np.uint16)
    when = _dt.datetime(2024, 2, 1, 14, 0, 0)
    sop_uid = _uid("dx-image", patient_id, seed, size)
    ds = Dataset()
    ds.file_meta = _meta(DigitalXRayImageStorageForPresentation, sop_uid)
    _patient_study(ds, patient_id, _uid("dx-study", patient_id, seed), "XR CHEST PA (synthetic phantom)", when)
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DX"
    ds.SeriesInstanceUID = _uid("dx-series", patient_id, seed)
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Chest PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.InstanceNumber = 1
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = ds.StudyTime
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.BurnedInAnnotation = "NO"
    ds.ImagerPixelSpacing = ["0.35", "0.35"]
    ds.PixelSpacing = ["0.35", "0.35"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.DetectorType = "SCINTILLATOR"
    ds.PixelData = pixels.tobytes()
    ds.AcquisitionContextSequence = []
    ds.AnatomicRegionSequence = [_code("51185008", "SCT", "Chest")]
    ds.ViewCodeSequence = [_code("399348003", "SCT", "postero-anterior")]
    ds.PositionerType = ""
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def save(ds: Dataset, path: Path) -> Path:
    """Write a file data set (explicit VR little endian, PS3.10)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_samples(folder: Path, ct_slices: int = 40) -> list[Path]:
    """Write the demo's sample studies (chest CR, CT series, DX) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "cr" / CHEST_CR_NAME]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_bytes(chest_cr_path().read_bytes())
    for i, ds in enumerate(ct_series(ct_slices)):
        paths.append(save(ds, folder / "ct" / f"ct_{i:04d}.dcm"))
    paths.append(save(dx_chest(), folder / "dx" / "dx_0001.dcm"))
    return paths


def read_header(path: Path) -> Dataset:
    """Header of a DICOM file (stops before Pixel Data)."""
    return pydicom.dcmread(path, stop_before_pixels=True)
