"""Read a CT series into HU slices (pydicom; PS3.3 C.8.2.1 CT Image Module).

Slices are ordered along the slice normal using Image Position (Patient) and Image
Orientation (Patient) (PS3.3 C.7.6.2), falling back to Instance Number.  HU come from
the modality LUT: ``HU = stored * RescaleSlope + RescaleIntercept`` (PS3.3 C.11.1).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from models.denoise.errors import DenoiseError, NotCtSeriesError

logger = logging.getLogger(__name__)


@dataclass
class CtSlice:
    """One CT image with its HU pixels."""

    dataset: Dataset
    hu: np.ndarray  # float32 (rows, cols)

    @property
    def pixel_mm(self) -> float:
        ps = getattr(self.dataset, "PixelSpacing", None)
        return float(ps[0]) if ps else 1.0


def rescale(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) of the modality LUT, defaulting to (1, 0)."""
    return float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)


def to_hu(ds: Dataset) -> np.ndarray:
    """HU image of a single-frame CT dataset (float32).

    Raises
    ------
    NotCtSeriesError
        When the dataset is not a single-frame greyscale CT image.
    """
    if str(getattr(ds, "Modality", "")) != "CT":
        raise NotCtSeriesError(f"modality is {getattr(ds, 'Modality', 'missing')!r}, expected 'CT'")
    if "PixelData" not in ds:
        raise NotCtSeriesError("dataset has no Pixel Data")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1 or int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise NotCtSeriesError("only single-frame greyscale CT images are supported")
    try:
        arr = ds.pixel_array
    except Exception as e:  # decoder missing / corrupt data
        raise DenoiseError(f"cannot decode pixel data ({ds.file_meta.TransferSyntaxUID if 'file_meta' in ds else '?'}): {e}") from e
    slope, intercept = rescale(ds)
    return (arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _position_key(ds: Dataset) -> float:
    ipp = getattr(ds, "ImagePositionPatient", None)
    iop = getattr(ds, "ImageOrientationPatient", None)
    if ipp is not None and iop is not None and len(iop) == 6:
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        return float(np.dot(normal, np.asarray(ipp, float)))
    return float(getattr(ds, "InstanceNumber", 0) or 0)


def sort_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Datasets ordered along the slice normal (PS3.3 C.7.6.2)."""
    return sorted(datasets, key=_position_key)


def list_dicom_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand directories (recursively) and files into a sorted list of files."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise DenoiseError(f"input not found: {p}")
    return files


def read_datasets(inputs: Iterable[str | os.PathLike]) -> list[Dataset]:
    """Read every DICOM file among ``inputs``; non-DICOM files are skipped with a log line."""
    out = []
    for f in list_dicom_files(inputs):
        try:
            out.append(pydicom.dcmread(f))
        except (pydicom.errors.InvalidDicomError, OSError) as e:
            logger.warning("skipping %s: not readable as DICOM (%s)", f.name, e)
    return out


def read_ct_slices(inputs: Iterable[str | os.PathLike]) -> list[CtSlice]:
    """Read CT images from files/directories, ordered along the slice normal."""
    dss = [d for d in read_datasets(inputs) if str(getattr(d, "Modality", "")) == "CT" and "PixelData" in d]
    return [CtSlice(dataset=d, hu=to_hu(d)) for d in sort_slices(dss)]


def pair_with_derived(original: Sequence[Dataset], derived: Sequence[Dataset]) -> list[tuple[Dataset, Dataset | None]]:
    """Pair each original slice with its derived (denoised) slice for side-by-side display.

    Matches by the derived image's Source Image Sequence when it references the original
    SOP Instance UID, otherwise by slice position along the normal (same geometry).
    Returns the originals in slice order with ``None`` where no derived slice matches.
    """
    by_source: dict[str, Dataset] = {}
    by_pos: dict[float, Dataset] = {}
    for d in derived:
        for item in getattr(d, "SourceImageSequence", []) or []:
            uid = str(getattr(item, "ReferencedSOPInstanceUID", "") or "")
            if uid:
                by_source[uid] = d
        by_pos[round(_position_key(d), 3)] = d
    pairs = []
    for o in sort_slices(original):
        uid = str(getattr(o, "SOPInstanceUID", "") or "")
        pairs.append((o, by_source.get(uid) if uid in by_source else by_pos.get(round(_position_key(o), 3))))
    return pairs
