"""Write a (synthetic) CT volume as an uncompressed DICOM CT Image series (pydicom only).

For test fixtures and benchmarks: the volume keeps its geometry (ImagePositionPatient per
slice along the normal, ImageOrientationPatient, PixelSpacing), HU are stored as
int16 with RescaleIntercept 0.  Optional per-series attributes (description, contrast,
acquisition time, gating) let phase identification and routing be exercised.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_series(vol, folder: str | Path, *, series_description: str = "synthetic CT",
                 study_uid: str | None = None, series_number: int = 1, extra: dict[str, Any] | None = None,
                 shuffle_names: bool = True, seed: int = 0) -> list[Path]:
    """Write ``vol`` (a :class:`models.ct.volume.CTVolume`) as one file per slice.

    File names are shuffled (``shuffle_names``) so readers cannot rely on them for order.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(seed)
    names = rng.permutation(vol.shape[0]) if shuffle_names else np.arange(vol.shape[0])
    row, col = vol.direction[:, 0], vol.direction[:, 1]
    paths = []
    for k in range(vol.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientName = "Synthetic^Phantom"
        ds.PatientID = "SYNTH0001"
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        pos = vol.voxel_to_patient([k, 0, 0])
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row, col])]
        ds.PixelSpacing = [f"{vol.spacing[1]:.6f}", f"{vol.spacing[2]:.6f}"]
        ds.SliceThickness = f"{vol.spacing[0]:.4f}"
        ds.KVP = "120"
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.clip(np.round(vol.hu[k]), -32768, 32767).astype("<i2").tobytes()
        p = folder / f"IM{int(names[k]):05d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths
