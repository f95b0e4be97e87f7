"""Source images (generated CR/CT) and DICOM validators for the result-object tests."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid


def _base(sop_class: str, modality: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "MEDWS-TEST-1"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.Modality = modality
    ds.Manufacturer = "medws-test"
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def make_cr(rows: int = 256, cols: int = 224) -> Dataset:
    """A synthetic PA chest CR (CR Image Storage) with an asymmetric pattern."""
    ds = _base(ComputedRadiographyImageStorage, "CR", generate_uid(), generate_uid())
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.Rows, ds.Columns = rows, cols
    ds.ImagerPixelSpacing = [0.7, 0.7]
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    yy, xx = np.mgrid[0:rows, 0:cols]
    img = (xx * 7 + yy * 3) % 4096
    ds.PixelData = img.astype(np.uint16).tobytes()
    return ds


def make_ct_series(n: int = 6, size: int = 64) -> list[Dataset]:
    """Synthetic axial CT slices (1 mm pixels, 2.5 mm apart) with one frame of reference."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = _base(CTImageStorage, "CT", study, series)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i + 1
        ds.BodyPartExamined = "CHEST"
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-32.0, -32.0, -100.0 + 2.5 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -100.0 + 2.5 * i
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.5
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.Rows = ds.Columns = size
        ds.PixelData = np.full((size, size), 1024 - 800, dtype=np.uint16).tobytes()
        out.append(ds)
    return out


def roundtrip(ds: Dataset, path: Path) -> Dataset:
    """Write as a DICOM file and read it back."""
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (scripts/test.sh installs dcmtk and dicom3tools)")
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) from dicom3tools' dciodvfy."""
    proc = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    warnings = [ln for ln in lines if ln.startswith("Warning")]
    return errors, warnings


#: Warnings we accept, each for a reason given here.
ACCEPTED_WARNINGS = (
    # DICOMDIR completeness: not a validity problem for network objects
    "Missing attribute or value that would be needed to build DICOMDIR",
    # inherited from the real sample (its Patient's Name is a bare UUID)
    "Retired Person Name form",
    # our private coding scheme (subtype/category codes without a standard code); it is
    # declared in the Coding Scheme Identification Sequence, dciodvfy still lists it
    "Unrecognized defined term <99MEDWS>",
)


def assert_valid(path: Path) -> None:
    """dciodvfy reports no errors, only accepted warnings; DCMTK's dcmdump reads it."""
    errors, warnings = dciodvfy(path)
    assert errors == [], "\n".join(errors)
    unexpected = [w for w in warnings if not any(a in w for a in ACCEPTED_WARNINGS)]
    assert unexpected == [], "\n".join(unexpected)
    proc = subprocess.run([_tool("dcmdump"), str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def dsr2xml(path: Path) -> str:
    """DCMTK's dsr2xml of an SR file (asserts exit status 0)."""
    proc = subprocess.run([_tool("dsr2xml"), str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cxr_result(ds: Dataset, name: str = "cxr-lesion", version: str = "1.2.0"):
    """A chest X-ray result with two findings of known values on ``ds``."""
    from dicom_node.findings import AnalysisResult, Finding, ImageRef, ModelInfo

    ref = ImageRef.from_dataset(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    ptx = Finding("pneumothorax", 0.93, box=(0.55 * cols, 0.1 * rows, 0.85 * cols, 0.4 * rows),
                  contour=((0.55 * cols, 0.1 * rows), (0.85 * cols, 0.12 * rows), (0.8 * cols, 0.4 * rows),
                           (0.6 * cols, 0.38 * rows)),
                  laterality="left", zone="upper", image=ref)
    eff = Finding("pleural_effusion", 0.71, box=(0.1 * cols, 0.7 * rows, 0.4 * cols, 0.9 * rows),
                  laterality="right", zone="lower", image=ref)
    return AnalysisResult("cxr", ModelInfo(name, version), (ptx, eff), abnormality=0.95,
                          scores={"pneumothorax": 0.93, "pleural_effusion": 0.71}, source=ref)
