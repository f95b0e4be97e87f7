"""Helpers shared by the result-object writers (SR, SEG, GSPS).

Keeps the common DICOM conventions in one place: the pixel-coordinate shift,
the algorithm/device identity of the AI, and repair of attribute values that
the writers inherit from source images.
"""
from __future__ import annotations

import logging
import re
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset
from skimage.measure import approximate_polygon, find_contours

from .findings import Finding, ResultError, SliceRegion

logger = logging.getLogger(__name__)

MANUFACTURER = "medws"
SOFTWARE_VERSION = "0.1.0"
#: Our findings use pixel-centre coordinates (numpy indices: the centre of the
#: top-left pixel is (0, 0)); SR SCOORD and GSPS PIXEL coordinates put the
#: top-left corner of the top-left pixel at (0, 0) (PS3.3 C.18.6.1.2, C.10.5.1.2).
HALF_PIXEL = 0.5

_AGE = re.compile(r"^\d{3}[DWMY]$")


def to_dicom_xy(points: Sequence[Sequence[float]], ds: Dataset, closed: bool) -> np.ndarray:
    """Pixel-centre (x, y) points → DICOM image coordinates, clipped to the image."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2) + HALF_PIXEL
    arr[:, 0] = np.clip(arr[:, 0], 0.0, float(ds.Columns))
    arr[:, 1] = np.clip(arr[:, 1], 0.0, float(ds.Rows))
    if closed and len(arr) > 1 and not np.array_equal(arr[0], arr[-1]):
        arr = np.vstack([arr, arr[:1]])
    return arr


def from_dicom_xy(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Inverse of :func:`to_dicom_xy` (drops the closing point)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) - HALF_PIXEL
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    return tuple((float(x), float(y)) for x, y in pts)


def repair_inherited(ds: Dataset) -> Dataset:
    """Repair values copied from a source image that are invalid for their VR.

    highdicom copies the Patient/Study modules from the source; a source with a
    malformed Patient's Age (AS must be ``nnnD|W|M|Y``, PS3.5 6.2) would make our
    object fail validation.  A bare number of years is rewritten (``62`` →
    ``062Y``); anything else unparseable is emptied (the attribute is type 3).
    """
    age = ds.get("PatientAge")
    if age not in (None, "") and not _AGE.match(str(age)):
        text = str(age).strip().upper().rstrip("Y")
        ds.PatientAge = f"{int(text):03d}Y" if text.isdigit() and int(text) < 1000 else None
        if ds.PatientAge is None:
            del ds.PatientAge
    return ds


def copy_series_anatomy(ds: Dataset, source: Dataset) -> Dataset:
    """Copy Body Part Examined and Laterality of the source into a new series.

    General Series Laterality is type 2C (required for paired body parts); a
    series without Body Part Examined fails that condition in validators, so
    the anatomy of the annotated images is carried over when it is known.
    """
    for keyword in ("BodyPartExamined", "Laterality"):
        value = source.get(keyword)
        if value not in (None, "") and keyword not in ds:
            setattr(ds, keyword, value)
    return ds


def rasterise(contour: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """Filled polygon mask of pixel-centre (x, y) points on an image of ``shape`` (rows, cols).

    Scan-line fill with the even-odd rule: pixel ``(r, c)`` is inside when its
    centre lies inside the polygon (half-open in y, closed in x), so the cost
    grows with the polygon's height, not the image size.
    """
    mask = np.zeros(shape, dtype=bool)
    pts = np.asarray(contour, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return mask
    x, y = pts[:, 0], pts[:, 1]
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    r0, r1 = max(0, int(np.ceil(y.min()))), min(shape[0] - 1, int(np.floor(y.max())))
    if r1 < r0:
        return mask
    ry = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
    cross = ((y <= ry) & (ry < y2)) | ((y2 <= ry) & (ry < y))
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x + (ry - y) * (x2 - x) / (y2 - y)
    xs = np.sort(np.where(cross, xs, np.inf), axis=1)
    for i, row in enumerate(xs):
        row = row[np.isfinite(row)]
        for a, b in zip(row[0::2], row[1::2]):
            c0, c1 = max(0, int(np.ceil(a))), min(shape[1] - 1, int(np.floor(b)))
            if c1 >= c0:
                mask[r0 + i, c0:c1 + 1] = True
    return mask


def finding_mask_2d(f: Finding, shape: tuple[int, int]) -> np.ndarray:
    """The finding's 2-D mask: its own mask, else its filled contour or box."""
    if f.mask is not None:
        m = np.asarray(f.mask)
        if m.ndim != 2 or m.shape != shape:
            raise ResultError(f"{f.label}: mask shape {m.shape} does not match the source image {shape}")
        return m
    contour = f.region_contour
    if not contour:
        raise ResultError(f"{f.label}: no mask, contour or box to segment")
    return rasterise(contour, shape)


def slice_masks(f: Finding, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-slice masks of a CT finding keyed by SOP Instance UID."""
    out: dict[str, np.ndarray] = {}
    if f.mask is not None and np.asarray(f.mask).ndim == 3:
        for ref, plane in zip(f.mask_images, np.asarray(f.mask)):
            if plane.shape != shape:
                raise ResultError(f"{f.label}: mask plane {plane.shape} does not match the slices {shape}")
            out[ref.sop_instance_uid] = plane
        return out
    region: SliceRegion
    for region in f.slices:
        m = rasterise(region.contour, shape)
        prev = out.get(region.image.sop_instance_uid)
        out[region.image.sop_instance_uid] = m if prev is None else (prev | m)
    return out


def mask_outline(plane: np.ndarray, tolerance: float = 0.5) -> tuple[tuple[float, float], ...]:
    """Outline (pixel-centre x, y) of the largest connected region of a 2-D mask, or ().

    Marching squares at level 0.5 (skimage ``find_contours``), simplified with
    Douglas-Peucker at ``tolerance`` pixels.
    """
    plane = np.asarray(plane, dtype=np.float32)
    if not plane.any():
        return ()
    padded = np.pad(plane, 1)  # closes contours that touch the border
    contours = find_contours(padded, 0.5)
    if not contours:
        return ()
    longest = max(contours, key=len) - 1.0
    simple = approximate_polygon(longest, tolerance=tolerance)
    if len(simple) > 1 and np.array_equal(simple[0], simple[-1]):
        simple = simple[:-1]
    if len(simple) < 3:
        return ()
    return tuple((float(c), float(r)) for r, c in simple)


def outline_regions(f: Finding) -> tuple[SliceRegion, ...]:
    """Per-image outlines of a finding: its slices, else outlines traced from its 3-D mask."""
    if f.slices:
        return f.slices
    if f.mask is not None and np.asarray(f.mask).ndim == 3:
        out = []
        for ref, plane in zip(f.mask_images, np.asarray(f.mask)):
            contour = mask_outline(plane >= 0.5 if plane.dtype != bool else plane)
            if contour:
                out.append(SliceRegion(ref, contour))
        return tuple(out)
    return ()


def outline_2d(f: Finding) -> tuple[tuple[float, float], ...]:
    """The 2-D outline: contour, else box, else traced from a 2-D mask."""
    if f.region_contour:
        return f.region_contour
    if f.mask is not None and np.asarray(f.mask).ndim == 2:
        m = np.asarray(f.mask)
        return mask_outline(m >= 0.5 if m.dtype != bool else m)
    return ()

