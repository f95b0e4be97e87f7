"""CT series → HU volume with patient geometry.

A :class:`CTVolume` holds HU voxels in ``(z, y, x)`` order (slice, row, column) with the
DICOM patient coordinate system (LPS, PS3.3 C.7.6.2.1.1): ``direction[:, 0]`` is the
row direction (along a row, i.e. increasing column index), ``direction[:, 1]`` the column
direction, ``direction[:, 2]`` the slice normal; ``origin`` is the centre of voxel
``(0, 0, 0)``.  Slices are ordered by their position along the normal (never by file
name or InstanceNumber); gaps (missing slices) and gantry tilt are detected.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.ct.errors import GantryTiltError, MissingSliceError, SeriesError

logger = logging.getLogger(__name__)

_ORIENT_TOL = 1e-3
_GAP_FACTOR = 1.5


@dataclass
class CTVolume:
    """A CT volume in HU with geometry.

    Attributes
    ----------
    hu : ndarray, float32, shape (z, y, x)
    spacing : (dz, dy, dx) in mm (dz is the slice increment, not SliceThickness)
    origin : (3,) LPS position of voxel (0, 0, 0) in mm
    direction : (3, 3) unit column vectors: row dir, column dir, slice normal
    meta : series-level attributes (modality, description, times, contrast, UIDs ...)
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def voxel_to_patient(self, zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Voxel index (z, y, x), possibly fractional, → LPS mm (x, y, z)."""
        zyx = np.asarray(zyx, dtype=float)
        steps = np.stack([zyx[..., 2] * self.spacing[2], zyx[..., 1] * self.spacing[1],
                          zyx[..., 0] * self.spacing[0]], axis=-1)
        return self.origin + steps @ self.direction.T

    def patient_to_voxel(self, xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS mm (x, y, z) → fractional voxel index (z, y, x)."""
        d = (np.asarray(xyz, dtype=float) - self.origin) @ self.direction
        return np.stack([d[..., 2] / self.spacing[0], d[..., 1] / self.spacing[1],
                         d[..., 0] / self.spacing[2]], axis=-1)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def to_sitk(self):
        """As a SimpleITK image (x, y, z spacing order, same LPS geometry)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.hu.astype(np.float32))
        img.SetSpacing((self.spacing[2], self.spacing[1], self.spacing[0]))
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetDirection(tuple(float(v) for v in self.direction.flatten()))
        return img

    @classmethod
    def from_sitk(cls, img, meta: dict[str, Any] | None = None) -> "CTVolume":
        """From a SimpleITK image (e.g. a NIfTI file read by SimpleITK, which gives LPS)."""
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(img).astype(np.float32)
        sx, sy, sz = img.GetSpacing()
        return cls(hu=arr, spacing=(float(sz), float(sy), float(sx)),
                   origin=np.asarray(img.GetOrigin(), dtype=float),
                   direction=np.asarray(img.GetDirection(), dtype=float).reshape(3, 3),
                   meta=dict(meta or {}))

    def with_array(self, arr: np.ndarray) -> "CTVolume":
        """Same geometry and meta, other voxels (e.g. a mask or an enhanced phase)."""
        if arr.shape != self.hu.shape:
            raise ValueError(f"array shape {arr.shape} differs from volume shape {self.hu.shape}")
        return CTVolume(arr, self.spacing, self.origin.copy(), self.direction.copy(), dict(self.meta))


def read_nifti(path: str | os.PathLike, meta: dict[str, Any] | None = None) -> CTVolume:
    """Read a NIfTI/NRRD/MHA volume (HU) through SimpleITK."""
    import SimpleITK as sitk

    return CTVolume.from_sitk(sitk.ReadImage(str(path)), meta)


def _f(ds, name: str, default=None):
    v = ds.get(name, default)
    return default if v is None or v == "" else v


def _time_seconds(value: Any) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) → seconds after midnight."""
    if not value:
        return None
    s = str(value).strip()
    try:
        hh = int(s[0:2]); mm = int(s[2:4] or 0); ss = float(s[4:] or 0)
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


def series_meta(ds) -> dict[str, Any]:
    """Series-level attributes used by routing and phase identification (no patient identifiers)."""
    return {
        "modality": str(_f(ds, "Modality", "")),
        "series_instance_uid": str(_f(ds, "SeriesInstanceUID", "")),
        "study_instance_uid": str(_f(ds, "StudyInstanceUID", "")),
        "frame_of_reference_uid": str(_f(ds, "FrameOfReferenceUID", "")),
        "series_description": str(_f(ds, "SeriesDescription", "")),
        "series_number": int(_f(ds, "SeriesNumber", 0) or 0),
        "body_part": str(_f(ds, "BodyPartExamined", "")),
        "image_type": [str(v) for v in (_f(ds, "ImageType", []) or [])],
        "kvp": float(_f(ds, "KVP", 0) or 0),
        "slice_thickness": float(_f(ds, "SliceThickness", 0) or 0),
        "contrast_bolus_agent": str(_f(ds, "ContrastBolusAgent", "")),
        "contrast_bolus_start_time": _time_seconds(_f(ds, "ContrastBolusStartTime")),
        "contrast_bolus_route": str(_f(ds, "ContrastBolusRoute", "")),
        "acquisition_time": _time_seconds(_f(ds, "AcquisitionTime")),
        "series_time": _time_seconds(_f(ds, "SeriesTime")),
        "cardiac_gated": bool(_f(ds, "CardiacSynchronizationTechnique", "") or _f(ds, "TriggerTime") is not None
                              or _f(ds, "NominalPercentageOfCardiacPhase") is not None),
        "convolution_kernel": str(_f(ds, "ConvolutionKernel", "")),
    }


def _iter_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise SeriesError(f"{p}: no such file or directory")
    return files


def read_datasets(paths: Iterable[str | os.PathLike], stop_before_pixels: bool = False) -> list:
    """Read every DICOM file under the given files/folders (non-DICOM files are skipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for f in _iter_files(paths):
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=stop_before_pixels))
        except (InvalidDicomError, OSError) as e:
            logger.debug("skipping %s: %s", f.name, e)
    return out


def group_series(datasets: Sequence) -> dict[str, list]:
    """Group image datasets by SeriesInstanceUID (slices only: datasets with pixel data and geometry)."""
    groups: dict[str, list] = {}
    for ds in datasets:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    return groups


def _hu(ds) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as e:  # decoder missing or corrupt pixel data
        raise SeriesError(
            f"cannot decode pixel data (transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')}): {e}; "
            "install pylibjpeg-openjpeg / pylibjpeg-libjpeg for compressed CT") from e
    slope = float(_f(ds, "RescaleSlope", 1) or 1)
    intercept = float(_f(ds, "RescaleIntercept", 0) or 0)
    return arr.astype(np.float32) * slope + intercept


def volume_from_datasets(datasets: Sequence, *, allow_missing: bool = False,
                         correct_tilt: bool = False) -> CTVolume:
    """Assemble one series' slices into a :class:`CTVolume`.

    Parameters
    ----------
    datasets : the slices of ONE series (any order)
    allow_missing : if False (default) a gap larger than 1.5 × the regular slice spacing
        raises :class:`MissingSliceError`; if True the gap is filled by linear
        interpolation and listed in ``meta["missing_slices"]``.
    correct_tilt : if False (default) a gantry-tilted series (slice origins not on the
        slice normal, or GantryDetectorTilt ≠ 0 with sheared positions) raises
        :class:`GantryTiltError`; if True each slice is shifted in-plane to undo the shear.
    """
    if not datasets:
        raise SeriesError("no image slices in the series")
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise SeriesError(f"{len(uids)} series mixed; pass the slices of one series (see group_series)")
    if len(datasets) < 2:
        raise SeriesError("a CT volume needs at least 2 slices")
    ref = datasets[0]
    iop = np.asarray([float(v) for v in ref.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    nrm = np.linalg.norm(normal)
    if nrm < 0.5:
        raise SeriesError("ImageOrientationPatient row and column vectors are not orthogonal")
    normal /= nrm
    shape = (int(ref.Rows), int(ref.Columns))
    ps = [float(v) for v in ref.PixelSpacing]
    for ds in datasets:
        o = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(o - iop).max() > _ORIENT_TOL:
            raise SeriesError("slices have different ImageOrientationPatient (a localiser or a "
                              "reformatted series is mixed in); pass one axial series")
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise SeriesError(f"slices have different sizes {shape} vs {(int(ds.Rows), int(ds.Columns))}")
        if np.abs(np.asarray([float(v) for v in ds.PixelSpacing]) - ps).max() > 1e-4:
            raise SeriesError("slices have different PixelSpacing")
    pos = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    d = d[order]
    pos = pos[order]
    datasets = [datasets[i] for i in order]
    steps = np.diff(d)
    if np.any(steps < 1e-3):
        dup = int(np.sum(steps < 1e-3))
        raise SeriesError(f"{dup} duplicate slice position(s): the series holds several acquisitions or "
                          "repeated instances; split it by AcquisitionNumber or remove duplicates")
    dz = float(np.median(steps))
    meta = series_meta(ref)
    # gantry tilt: in-plane drift of the slice origins relative to the first slice
    rel = pos - pos[0]
    inplane = rel - np.outer(rel @ normal, normal)
    drift_mm = float(np.abs(inplane).max())
    tilt_attr = float(_f(ref, "GantryDetectorTilt", 0) or 0)
    meta["gantry_tilt_deg"] = tilt_attr
    if drift_mm > max(0.01, 0.05 * min(ps)):
        angle = float(np.degrees(np.arctan2(np.linalg.norm(inplane[-1]), d[-1] - d[0])))
        if not correct_tilt:
            raise GantryTiltError(
                f"slice origins drift {drift_mm:.2f} mm in-plane over the series (gantry tilt about "
                f"{angle:.1f} deg, GantryDetectorTilt={tilt_attr}); the voxels are sheared. Load with "
                "correct_tilt=True (medws: --correct-tilt) to resample onto an orthogonal grid, or "
                "ask for a non-tilted reconstruction")
        meta["tilt_corrected_deg"] = angle
    elif abs(tilt_attr) > 0.01:
        logger.info("GantryDetectorTilt %.2f deg but slice positions lie on the normal (already corrected)", tilt_attr)
    slices = [_hu(ds) for ds in datasets]
    if correct_tilt and "tilt_corrected_deg" in meta:
        from scipy import ndimage

        for k in range(len(slices)):
            shift_rc = ((inplane[k] @ col) / ps[0], (inplane[k] @ row) / ps[1])
            slices[k] = ndimage.shift(slices[k], shift_rc, order=1, mode="nearest")
    # missing slices
    gaps = np.nonzero(steps > _GAP_FACTOR * dz)[0]
    missing: list[dict[str, Any]] = []
    if len(gaps):
        desc = ", ".join(f"{steps[g]:.2f} mm after position {d[g]:.2f}" for g in gaps)
        if not allow_missing:
            raise MissingSliceError(
                f"{len(gaps)} gap(s) in slice positions (regular spacing {dz:.2f} mm): {desc}; "
                "slices are missing — resend the complete series, or load with allow_missing=True "
                "to interpolate across the gap")
        filled: list[np.ndarray] = []
        for k, s in enumerate(slices):
            filled.append(s)
            if k < len(steps) and steps[k] > _GAP_FACTOR * dz:
                n_new = int(round(steps[k] / dz)) - 1
                for j in range(1, n_new + 1):
                    w = j / (n_new + 1)
                    filled.append((1 - w) * s + w * slices[k + 1])
                missing.append({"after_position_mm": float(d[k]), "count": n_new})
        slices = filled
    elif np.abs(steps - dz).max() > 0.05 * dz:
        logger.warning("irregular slice spacing (%.3f–%.3f mm); using the median %.3f mm",
                       steps.min(), steps.max(), dz)
    meta["missing_slices"] = missing
    meta["n_slices_received"] = len(datasets)
    # the image each plane of ``hu`` comes from (None when planes were interpolated into gaps)
    meta["sop_instance_uids"] = None if missing else [str(ds.get("SOPInstanceUID", "")) for ds in datasets]
    meta["acquisition_times"] = [t for t in (_time_seconds(_f(ds, "AcquisitionTime")) for ds in datasets) if t is not None]
    hu = np.stack(slices).astype(np.float32)
    direction = np.stack([row, col, normal], axis=1)
    return CTVolume(hu=hu, spacing=(dz, ps[0], ps[1]), origin=pos[0].copy(), direction=direction, meta=meta)


def load_series(paths: str | os.PathLike | Iterable[str | os.PathLike], *, series_uid: str | None = None,
                allow_missing: bool = False, correct_tilt: bool = False) -> CTVolume:
    """Load one CT series from files/folders.

    When the folder holds several series, ``series_uid`` chooses one; without it the
    series with the most slices is used (logged).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    groups = group_series(read_datasets(paths))
    if not groups:
        raise SeriesError("no DICOM image slices with ImagePositionPatient/ImageOrientationPatient found")
    if series_uid is not None:
        if series_uid not in groups:
            raise SeriesError(f"series {series_uid} not among the {len(groups)} series found")
        chosen = groups[series_uid]
    else:
        chosen = max(groups.values(), key=len)
        if len(groups) > 1:
            logger.info("%d series found; using the largest (%d slices)", len(groups), len(chosen))
    return volume_from_datasets(chosen, allow_missing=allow_missing, correct_tilt=correct_tilt)


def load_study(paths: str | os.PathLike | Iterable[str | os.PathLike], *, min_slices: int = 2,
               allow_missing: bool = False, correct_tilt: bool = False) -> list[CTVolume]:
    """Every CT series (≥ ``min_slices`` slices) under the given files/folders, one volume each."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    vols = []
    for uid, dss in group_series(read_datasets(paths)).items():
        if len(dss) < min_slices:
            continue
        vols.append(volume_from_datasets(dss, allow_missing=allow_missing, correct_tilt=correct_tilt))
    if not vols:
        raise SeriesError("no CT series found")
    return vols


def resample(vol: CTVolume, spacing: tuple[float, float, float], order: int = 1,
             fill: float = -1024.0) -> CTVolume:
    """Resample onto a grid with the given (dz, dy, dx) spacing, same origin and direction
    (SimpleITK, linear for ``order=1``, nearest neighbour for ``order=0``)."""
    import SimpleITK as sitk

    img = vol.to_sitk()
    # sample only inside the source extent (first to last voxel centre): a grid that runs past
    # it is filled with ``fill`` (air), which would join the lungs to the air around the patient
    size = [max(1, int(np.floor((n - 1) * s / t + 1e-6)) + 1) for n, s, t in
            zip(img.GetSize(), img.GetSpacing(), (spacing[2], spacing[1], spacing[0]))]
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear if order else sitk.sitkNearestNeighbor,
                        img.GetOrigin(), (spacing[2], spacing[1], spacing[0]), img.GetDirection(),
                        float(fill), sitk.sitkFloat32)
    return CTVolume.from_sitk(out, vol.meta)


def resample_mask(mask: np.ndarray, src: CTVolume, dst: CTVolume) -> np.ndarray:
    """Nearest-neighbour resampling of a label array on ``src``'s grid onto ``dst``'s grid."""
    import SimpleITK as sitk

    m = src.with_array(mask.astype(np.float32)).to_sitk()
    ref = dst.to_sitk()
    out = sitk.Resample(m, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).astype(mask.dtype)


def mask_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of ``mask``'s voxels enlarged by ``margin`` voxels on each side,
    clipped to the array (``mask`` must have a voxel)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
