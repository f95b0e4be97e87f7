"""Load a study's image series into display-ready arrays (Qt-free).

Each image series becomes a :class:`DisplaySeries`: a stack ``frames[n, rows, cols]`` of
modality values (float32: HU for CT), sorted for CT by position along the slice normal
(PS3.3 C.7.6.2.1.1), with pixel spacing, the image's own VOI window, MONOCHROME1 flag and
orientation edge labels.  Non-image objects (SR, SEG, GSPS, KO) are listed separately.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from dicom_node.privacy import phi

from workstation.core import display

logger = logging.getLogger(__name__)

_NON_IMAGE_MODALITIES = {"SR", "SEG", "PR", "KO", "REG", "RTSTRUCT", "DOC"}


class StudyLoadError(Exception):
    """A study or instance could not be loaded for display; the message names the file."""


@dataclass
class DisplaySeries:
    """One image series, ready to window and paint."""

    series_uid: str
    modality: str
    description: str
    frames: np.ndarray  # (n, rows, cols) float32 modality values
    sop_uids: list[str]
    positions: list[float | None]  # slice position along the normal in mm (CT), None for projections
    spacing: tuple[float, float] | None  # (row, col) mm
    window: display.Window
    invert: bool
    edge_labels: dict[str, str] | None
    view_position: str = ""
    laterality: str = ""
    derived: bool = False  # Image Type value 1 is DERIVED (e.g. a denoised series)
    derivation: str = ""  # Derivation Description (model and version for medws' derived series)
    source_sops: list[str] = field(default_factory=list)  # per frame: Source Image Sequence SOP UID, "" if none
    origin: tuple[float, float, float] | None = None  # Image Position (Patient) of frame 0
    iop: tuple[float, ...] | None = None  # Image Orientation (Patient)

    @property
    def n(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def index_of(self, sop_uid: str) -> int | None:
        try:
            return self.sop_uids.index(sop_uid)
        except ValueError:
            return None


@dataclass
class LoadedStudy:
    study_uid: str
    series: list[DisplaySeries]
    other: list[tuple[str, str, Path]] = field(default_factory=list)  # (modality, sop_uid, path)
    patient_id: str = ""
    patient_name: str = ""

    def series_for(self, sop_uid: str) -> tuple[DisplaySeries, int] | None:
        for s in self.series:
            i = s.index_of(sop_uid)
            if i is not None:
                return s, i
        return None


def _spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = getattr(ds, kw, None)
        if v is not None and len(v) == 2:
            try:
                r, c = float(v[0]), float(v[1])
            except (TypeError, ValueError):
                continue
            if r > 0 and c > 0:
                return r, c
    return None


def _modality_values(ds: pydicom.Dataset) -> np.ndarray:
    arr = ds.pixel_array
    if arr.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        arr = arr[0]  # first frame of a multi-frame projection image
    if arr.ndim != 2:
        raise StudyLoadError(f"instance {ds.SOPInstanceUID}: only greyscale images are displayed (shape {arr.shape})")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        from pydicom.pixels import apply_modality_lut
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    return display.apply_modality_lut(arr, slope, intercept)


def _normal_position(ds: pydicom.Dataset) -> float | None:
    iop = getattr(ds, "ImageOrientationPatient", None)
    ipp = getattr(ds, "ImagePositionPatient", None)
    if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
        return None
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return float(np.dot(np.cross(r, c), np.asarray(ipp, float)))


def load_series(datasets: list[pydicom.Dataset]) -> DisplaySeries:
    """Build one display series from datasets of the same series (CT sorted by slice position)."""
    if not datasets:
        raise StudyLoadError("empty series")
    keyed = [(_normal_position(ds), int(getattr(ds, "InstanceNumber", 0) or 0), ds) for ds in datasets]
    if all(k[0] is not None for k in keyed) and len(keyed) > 1:
        keyed.sort(key=lambda k: k[0])  # ascending along the normal: feet → head for axial
    else:
        keyed.sort(key=lambda k: k[1])
    first = keyed[0][2]
    frames = []
    shape = None
    for _, _, ds in keyed:
        v = _modality_values(ds)
        if shape is None:
            shape = v.shape
        elif v.shape != shape:
            raise StudyLoadError(f"series {first.SeriesInstanceUID}: instance {ds.SOPInstanceUID} is {v.shape}, "
                                 f"others are {shape}")
        frames.append(v)
    stack = np.stack(frames)
    window = display.window_from_dataset(first, stack[len(stack) // 2])
    return DisplaySeries(
        series_uid=str(first.SeriesInstanceUID), modality=str(getattr(first, "Modality", "OT")),
        description=str(getattr(first, "SeriesDescription", "") or ""), frames=stack,
        sop_uids=[str(k[2].SOPInstanceUID) for k in keyed], positions=[k[0] for k in keyed],
        spacing=_spacing(first), window=window,
        invert=str(getattr(first, "PhotometricInterpretation", "")) == "MONOCHROME1",
        edge_labels=display.orientation_labels(first),
        view_position=str(getattr(first, "ViewPosition", "") or ""),
        laterality=str(getattr(first, "ImageLaterality", "") or getattr(first, "Laterality", "") or ""),
        derived=_image_type_1(first) == "DERIVED",
        derivation=str(getattr(first, "DerivationDescription", "") or ""),
        source_sops=[_source_sop(k[2]) for k in keyed],
        origin=_floats(getattr(first, "ImagePositionPatient", None), 3),
        iop=_floats(getattr(first, "ImageOrientationPatient", None), 6))


def _floats(v, n: int) -> tuple | None:
    try:
        return tuple(float(x) for x in v) if v is not None and len(v) == n else None
    except (TypeError, ValueError):
        return None


def _image_type_1(ds: pydicom.Dataset) -> str:
    """Value 1 of Image Type (0008,0008): ORIGINAL or DERIVED (PS3.3 C.7.6.1.1.2)."""
    v = getattr(ds, "ImageType", None)
    if v is None:
        return ""
    first = v if isinstance(v, str) else (v[0] if len(v) else "")
    return str(first).split("\\")[0].strip().upper()


def _source_sop(ds: pydicom.Dataset) -> str:
    """The first Source Image Sequence reference (PS3.3 C.7.6.1.1.4), "" when there is none."""
    for item in getattr(ds, "SourceImageSequence", []) or []:
        uid = str(getattr(item, "ReferencedSOPInstanceUID", "") or "")
        if uid:
            return uid
    return ""


def load_study_files(paths: Iterable[Path | str], study_uid: str = "") -> LoadedStudy:
    """Read the DICOM files of one study; image series become display series.

    An unreadable file is logged and skipped (the others still display); a study with no
    displayable image raises :class:`StudyLoadError`.
    """
    by_series: dict[str, list[pydicom.Dataset]] = {}
    other: list[tuple[str, str, Path]] = []
    pid = pname = ""
    for p in paths:
        p = Path(p)
        try:
            ds = pydicom.dcmread(p)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped with a log line
            logger.warning("skipping unreadable DICOM file %s: %s", phi(p.name), e)
            continue
        study_uid = study_uid or str(getattr(ds, "StudyInstanceUID", ""))
        pid = pid or str(getattr(ds, "PatientID", "") or "")
        pname = pname or str(getattr(ds, "PatientName", "") or "")
        mod = str(getattr(ds, "Modality", ""))
        if mod in _NON_IMAGE_MODALITIES or "PixelData" not in ds:
            other.append((mod, str(getattr(ds, "SOPInstanceUID", "")), p))
            continue
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    series: list[DisplaySeries] = []
    for uid, dss in by_series.items():
        try:
            series.append(load_series(dss))
        except Exception as e:  # noqa: BLE001 - a broken series must not hide the others
            logger.warning("series %s not displayable: %s", phi(uid), e)
    if not series:
        raise StudyLoadError(f"study {study_uid or '?'} has no displayable image series")
    # projections first (the reading image), then cross-sections; derived series after their originals
    series.sort(key=lambda s: (s.modality == "CT", s.derived, s.series_uid))
    return LoadedStudy(study_uid, series, other, pid, pname)


def read_seg_overlays(path: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """Masks of a DICOM SEG (PS3.3 A.51): segment (finding label) → source SOP Instance UID → 2-D mask.

    Labels are the segments' Tracking ID, else their label with spaces as underscores
    (as :mod:`dicom_node.seg` writes them).  Fractional segments come back as floats.
    """
    import highdicom as hd  # noqa: PLC0415 - only needed when a study has a SEG

    doc = hd.seg.Segmentation.from_dataset(pydicom.dcmread(path), copy=False)
    uids = [uid for _, _, uid in doc.get_source_image_uids()]
    out: dict[str, dict[str, np.ndarray]] = {}
    for number in doc.segment_numbers:
        desc = doc.get_segment_description(number)
        label = str(desc.get("TrackingID") or str(desc.SegmentLabel).replace(" ", "_"))
        arr = doc.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number],
                                                combine_segments=False, rescale_fractional=True,
                                                skip_overlap_checks=True)
        out[label] = {uid: arr[i, ..., 0] for i, uid in enumerate(uids)}
    return out


def align_plane_masks(loaded: LoadedStudy, state: Any) -> int:
    """Turn the per-slice masks of CT findings (``state.seg_planes``) into series-aligned overlays.

    Each finding's planes are placed on the frames of the series holding them
    (``(n, rows, cols)``, the layout the viewer indexes by slice) and become that finding's
    SEG overlay.  Returns how many findings got one; planes of images not in the study are
    ignored.
    """
    done = 0
    for it in state.items:
        planes = state.seg_planes.get(it.id)
        if not planes:
            continue
        hit = next((h for h in (loaded.series_for(uid) for uid in planes) if h is not None), None)
        if hit is None:
            continue
        stack = seg_stack(planes, hit[0])
        if stack is None:
            continue
        state.segs[it.id] = stack if hit[0].n > 1 else stack[0]
        it.seg_key = it.id
        done += 1
    return done


def seg_stack(planes: dict[str, np.ndarray], series: DisplaySeries) -> np.ndarray | None:
    """Per-source-image masks aligned to a series' frames (``(n, rows, cols)``); None if none match."""
    stack: np.ndarray | None = None
    for uid, m in planes.items():
        i = series.index_of(uid)
        if i is None or m.shape != series.shape:
            continue
        if stack is None:
            stack = np.zeros((series.n, *series.shape), dtype=m.dtype)
        stack[i] = m
    return stack
