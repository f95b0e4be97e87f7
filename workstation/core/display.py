"""Pure display pipeline: modality/VOI LUTs, window presets, 8-bit rendering, view geometry.

Everything here is numpy-only and Qt-free so the viewer widget is a thin painter.
Array convention throughout: ``image[row, column]``; a point is ``(x, y)`` =
``(column, row)`` in image pixels, origin at the top-left pixel centre.  Nothing in this
module ever flips or transposes an image (tested with an asymmetric image).

References: DICOM PS3.3 C.11.1 (Modality LUT), C.11.2.1.2 (VOI LUT linear function),
C.7.6.3.1.2 (MONOCHROME1), C.7.6.2.1.1 (Image Orientation Patient),
C.7.6.1.1.1 (Patient Orientation).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


class DisplayError(ValueError):
    """A display parameter is invalid (for example a window width < 1)."""


@dataclass(frozen=True)
class Window:
    """A VOI window: centre and width in modality units (HU for CT)."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.center) or not math.isfinite(self.width):
            raise DisplayError(f"window must be finite, got centre={self.center} width={self.width}")
        if self.width < 1:
            raise DisplayError(f"window width must be >= 1 (PS3.3 C.11.2.1.2), got {self.width}")


#: Named presets (centre, width) in HU.  ``"default"`` is resolved per image from its VOI.
PRESETS: dict[str, Window] = {
    "lung": Window(-600.0, 1500.0),
    "mediastinum": Window(50.0, 350.0),
    "bone": Window(400.0, 1800.0),
    "liver": Window(60.0, 160.0),
}

#: Keyboard order of the presets in the viewer (key 1 = default, 2 = lung, ...).
PRESET_ORDER: tuple[str, ...] = ("default", "lung", "mediastinum", "bone", "liver")


def apply_modality_lut(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Stored values to modality values (PS3.3 C.11.1: ``slope * SV + intercept``) as float32."""
    out = stored.astype(np.float32, copy=True)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def auto_window(values: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> Window:
    """A window spanning the given percentiles of the image (fallback when no VOI is stored)."""
    sample = values[:: max(1, values.shape[0] // 256)] if values.ndim >= 2 else values
    lo, hi = np.percentile(sample, [low_pct, high_pct])
    lo, hi = float(lo), float(hi)
    width = max(hi - lo, 1.0)
    return Window(lo + width / 2.0, width)


def window_from_dataset(ds: object, values: np.ndarray | None = None) -> Window:
    """The image's own VOI window (first WindowCenter/WindowWidth), else percentiles of ``values``.

    A VOI LUT Sequence without window values is approximated by the range it maps.
    """
    wc = getattr(ds, "WindowCenter", None)
    ww = getattr(ds, "WindowWidth", None)
    if wc is not None and ww is not None:
        wc = wc[0] if _is_multi(wc) else wc
        ww = ww[0] if _is_multi(ww) else ww
        try:
            return Window(float(wc), max(float(ww), 1.0))
        except (TypeError, ValueError):
            logger.warning("unreadable WindowCenter/WindowWidth; using image percentiles")
    if values is None:
        raise DisplayError("dataset has no VOI window and no pixel values were given")
    return auto_window(values)


def _is_multi(value: object) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def window_to_uint8(values: np.ndarray, window: Window, invert: bool = False) -> np.ndarray:
    """Apply a linear VOI window (PS3.3 C.11.2.1.2) and return 8-bit display values.

    ``invert`` renders MONOCHROME1 (minimum value displayed white).  The output has the
    same shape as the input: no flip, no transpose.
    """
    c = window.center - 0.5
    w = window.width - 1.0
    lo = c - w / 2.0
    scale = 255.0 / max(w, 1e-6)
    out = (values.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(scale)
    np.clip(out, 0.0, 255.0, out=out)
    out8 = (out + 0.5).astype(np.uint8)
    if invert:
        np.subtract(255, out8, out=out8)
    return out8


def resolve_preset(name: str, default: Window) -> Window:
    """The window for a preset name; ``"default"`` is the image's own VOI window."""
    if name == "default":
        return default
    try:
        return PRESETS[name]
    except KeyError as e:
        raise DisplayError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_ORDER)}") from e


def drag_window(start: Window, dx: float, dy: float, sensitivity: float) -> Window:
    """Window after a mouse drag: right widens, down raises the centre (common PACS convention).

    ``sensitivity`` is modality units per screen pixel.
    """
    return Window(start.center + dy * sensitivity, max(1.0, start.width + dx * sensitivity))


def drag_sensitivity(window: Window) -> float:
    """Modality units per pixel of drag, proportional to the current width."""
    return max(window.width / 256.0, 0.01)


# ---------------------------------------------------------------- view transform
@dataclass(frozen=True)
class ViewTransform:
    """Image → view mapping without rotation or flip.

    ``view_x = x * zoom + offset_x``; ``view_y = y * zoom * aspect + offset_y`` where
    ``aspect`` = row spacing / column spacing, so non-square pixels show at their true
    physical proportions (PS3.3 10.7.1.3).
    """

    zoom: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0
    aspect: float = 1.0

    @property
    def zoom_y(self) -> float:
        return self.zoom * self.aspect

    def image_to_view(self, x: float, y: float) -> tuple[float, float]:
        return x * self.zoom + self.offset_x, y * self.zoom_y + self.offset_y

    def view_to_image(self, vx: float, vy: float) -> tuple[float, float]:
        return (vx - self.offset_x) / self.zoom, (vy - self.offset_y) / self.zoom_y

    def panned(self, dx: float, dy: float) -> ViewTransform:
        return ViewTransform(self.zoom, self.offset_x + dx, self.offset_y + dy, self.aspect)

    def zoomed(self, factor: float, anchor_x: float, anchor_y: float) -> ViewTransform:
        """Zoom by ``factor`` keeping the view point ``(anchor_x, anchor_y)`` fixed."""
        z = min(max(self.zoom * factor, 0.02), 64.0)
        f = z / self.zoom
        return ViewTransform(z, anchor_x - (anchor_x - self.offset_x) * f, anchor_y - (anchor_y - self.offset_y) * f,
                             self.aspect)

    def centred_on(self, x: float, y: float, view_w: float, view_h: float) -> ViewTransform:
        """Same zoom, image point ``(x, y)`` moved to the centre of the view."""
        return ViewTransform(self.zoom, view_w / 2.0 - x * self.zoom, view_h / 2.0 - y * self.zoom_y, self.aspect)


def pixel_aspect(spacing: tuple[float, float] | None) -> float:
    """Row spacing / column spacing (1 when unknown)."""
    if not spacing or spacing[1] <= 0:
        return 1.0
    return float(spacing[0]) / float(spacing[1])


def fit_transform(rows: int, cols: int, view_w: float, view_h: float,
                  aspect: float = 1.0) -> ViewTransform:
    """Fit an image of ``rows x cols`` (pixel aspect ``aspect``) into the view, centred."""
    if rows < 1 or cols < 1 or view_w <= 0 or view_h <= 0:
        raise DisplayError(f"cannot fit a {rows}x{cols} image into a {view_w}x{view_h} view")
    zoom = min(view_w / cols, view_h / (rows * aspect))
    return ViewTransform(zoom, (view_w - cols * zoom) / 2.0, (view_h - rows * aspect * zoom) / 2.0, aspect)


# ---------------------------------------------------------------- measurements
def distance_mm(p1: tuple[float, float], p2: tuple[float, float],
                spacing: tuple[float, float] | None) -> float | None:
    """Distance between two image points ``(x, y)`` in mm.

    ``spacing`` is ``(row_spacing, column_spacing)`` as in PixelSpacing (PS3.3 10.7.1.3):
    the first value is the distance between rows (along y).  ``None`` when unknown.
    """
    if spacing is None:
        return None
    dy = (p2[1] - p1[1]) * float(spacing[0])
    dx = (p2[0] - p1[0]) * float(spacing[1])
    return math.hypot(dx, dy)


def pixel_readout(values: np.ndarray, x: float, y: float, modality: str = "") -> str | None:
    """Text for the value under the cursor, e.g. ``"x 12 y 40  HU -850"``; None outside."""
    col, row = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    if row < 0 or col < 0 or row >= values.shape[0] or col >= values.shape[1]:
        return None
    v = float(values[row, col])
    unit = "HU" if modality.upper() == "CT" else "value"
    vtxt = f"{v:.0f}" if abs(v - round(v)) < 1e-3 or abs(v) >= 100 else f"{v:.2f}"
    return f"x {col} y {row}  {unit} {vtxt}"


# ---------------------------------------------------------------- orientation
_AXES = (("L", "R"), ("P", "A"), ("H", "F"))  # +x → L, +y → P, +z → H (LPS patient system)


def _direction_label(vec: np.ndarray, threshold: float = 0.25) -> str:
    """Letters for a direction in the LPS patient system, strongest component first."""
    parts: list[tuple[float, str]] = []
    for i, (pos, neg) in enumerate(_AXES):
        c = float(vec[i])
        if abs(c) >= threshold:
            parts.append((abs(c), pos if c > 0 else neg))
    parts.sort(reverse=True)
    return "".join(p[1] for p in parts)


def orientation_labels_from_iop(iop: tuple[float, ...] | list[float]) -> dict[str, str]:
    """Edge labels ``{"left","right","top","bottom"}`` from ImageOrientationPatient.

    PS3.3 C.7.6.2.1.1: the first triplet is the direction of increasing column index
    (towards the right edge of the screen), the second the direction of increasing row
    index (towards the bottom).  Standard axial CT gives left edge "R", right "L",
    top "A", bottom "P".
    """
    if iop is None or len(iop) != 6:
        raise DisplayError(f"ImageOrientationPatient needs 6 values, got {iop!r}")
    row_dir = np.asarray(iop[:3], dtype=float)
    col_dir = np.asarray(iop[3:], dtype=float)
    return {
        "right": _direction_label(row_dir),
        "left": _direction_label(-row_dir),
        "bottom": _direction_label(col_dir),
        "top": _direction_label(-col_dir),
    }


_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}


def orientation_labels_from_patient_orientation(po: tuple[str, ...] | list[str] | str) -> dict[str, str]:
    """Edge labels from PatientOrientation (0020,0020), e.g. ``["L", "F"]`` for a PA chest.

    PS3.3 C.7.6.1.1.1: the first value is the direction of the rows (towards the right
    edge), the second the direction of the columns (towards the bottom).
    """
    if isinstance(po, str):
        po = po.split("\\")
    vals = [str(v).strip().upper() for v in po]
    if len(vals) != 2 or not all(vals) or not all(ch in _OPPOSITE for v in vals for ch in v):
        raise DisplayError(f"PatientOrientation needs two values of L/R/A/P/H/F, got {po!r}")
    inv = lambda s: "".join(_OPPOSITE[ch] for ch in s)  # noqa: E731
    return {"right": vals[0], "left": inv(vals[0]), "bottom": vals[1], "top": inv(vals[1])}


def orientation_labels(ds: object) -> dict[str, str] | None:
    """Edge labels from a dataset's geometry (IOP first, then PatientOrientation); None if absent."""
    iop = getattr(ds, "ImageOrientationPatient", None)
    try:
        if iop is not None and len(iop) == 6:
            return orientation_labels_from_iop([float(v) for v in iop])
        po = getattr(ds, "PatientOrientation", None)
        if po:
            return orientation_labels_from_patient_orientation(list(po) if _is_multi(po) else po)
    except DisplayError as e:
        logger.warning("ignoring unusable orientation: %s", e)
    return None


# ---------------------------------------------------------------- overlays
def heatmap_rgba(prob: np.ndarray, opacity: float, color: tuple[int, int, int] = (255, 64, 0),
                 floor: float = 0.1) -> np.ndarray:
    """A probability map in [0, 1] as an RGBA uint8 overlay; alpha ∝ probability × opacity."""
    p = np.clip(prob.astype(np.float32), 0.0, 1.0)
    alpha = np.where(p >= floor, p, 0.0) * float(np.clip(opacity, 0.0, 1.0)) * 255.0
    out = np.empty(p.shape + (4,), dtype=np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = color
    out[..., 3] = alpha.astype(np.uint8)
    return out


def mask_rgba(mask: np.ndarray, opacity: float, color: tuple[int, int, int]) -> np.ndarray:
    """A binary mask as an RGBA uint8 overlay with the given opacity."""
    out = np.zeros(mask.shape + (4,), dtype=np.uint8)
    m = mask.astype(bool)
    out[m, 0], out[m, 1], out[m, 2] = color
    out[m, 3] = int(round(float(np.clip(opacity, 0.0, 1.0)) * 255))
    return out


def contour_bounds(points: list[list[float]] | np.ndarray) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` of a polygon."""
    a = np.asarray(points, dtype=float).reshape(-1, 2)
    if a.size == 0:
        raise DisplayError("empty contour")
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 0].max()), float(a[:, 1].max())


def percent_text(p: float) -> str:
    """A model output as an overlay label: whole percent, or two significant digits below 1 %
    (a finding reported at a low operating point never reads "0%")."""
    return f"{p:.0%}" if p >= 0.01 or p <= 0.0 else f"{100 * p:.2g}%"
