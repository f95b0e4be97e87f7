"""Lung and body masks from HU thresholds (works on any chest CT without given masks),
and lobe lookup from real lobe masks when a site provides them."""
from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

LOBES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_lower")


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """The patient's body: largest 3-D component above ``threshold`` HU, holes filled per slice
    (table and cables are small separate components)."""
    m = hu > threshold
    m = ndimage.binary_opening(m, structure=np.ones((1, 3, 3), bool))
    lab, n = ndimage.label(m)
    if n == 0:
        return m
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    m = lab == (int(np.argmax(sizes)) + 1)
    return np.stack([ndimage.binary_fill_holes(s) for s in m])


def lung_mask(hu: np.ndarray, spacing: tuple[float, float, float], threshold: float = -400.0,
              min_volume_ml: float = 5.0, max_median_air_hu: float = -975.0) -> np.ndarray:
    """Both lungs of any chest CT (no given masks needed).

    Air (< ``threshold`` HU) is split into 3-D components; a component is lung when it holds
    ≥ ``min_volume_ml`` and its median HU is above ``max_median_air_hu`` (parenchyma is
    about -850 HU; the air around the patient and bowel gas are about -1000 HU).  The result
    is closed and its holes filled per slice so vessels and nodules lie inside.  Works on
    fields of view cropped inside the body, where the lungs reach the image border.
    """
    air = hu < threshold
    air = ndimage.binary_opening(air, structure=np.ones((1, 3, 3), bool))
    lab, n = ndimage.label(air)
    if n == 0:
        return air
    vox_ml = float(np.prod(spacing)) / 1000.0
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(air, lab, index=idx) * vox_ml
    keep = []
    for i in idx[sizes >= min_volume_ml]:
        vals = hu[lab == i]
        if float(np.median(vals)) > max_median_air_hu:
            keep.append(i)
    m = np.isin(lab, keep)
    r = max(1, int(round(3.0 / spacing[1])))
    m = ndimage.binary_closing(m, structure=np.ones((1, 2 * r + 1, 2 * r + 1), bool))
    m = np.stack([ndimage.binary_fill_holes(s) for s in m])
    return m


def split_left_right(lungs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Label 1 = right lung, 2 = left lung (patient sides; LPS +x is patient left)."""
    out = np.zeros(lungs.shape, np.uint8)
    zz, yy, xx = np.nonzero(lungs)
    if xx.size == 0:
        return out
    sign = np.sign(direction[0, 0]) or 1.0  # column index increases towards +x (left) when > 0
    mid = np.median(xx)
    left = (xx - mid) * sign > 0
    out[zz[left], yy[left], xx[left]] = 2
    out[zz[~left], yy[~left], xx[~left]] = 1
    return out


def lung_extent(lungs: np.ndarray) -> tuple[float, float, float] | None:
    """(median column, first slice, last slice) of a lung mask, for :func:`approximate_lobe`."""
    cols = lungs.any(axis=(0, 1))
    zs = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if zs.size == 0:
        return None
    w = lungs.sum(axis=(0, 1)).astype(float)
    cum = np.cumsum(w)
    mid = float(np.searchsorted(cum, cum[-1] / 2))
    del cols
    return mid, float(zs[0]), float(zs[-1])


def approximate_lobe(zyx: np.ndarray, lungs: np.ndarray, direction: np.ndarray,
                     extent: tuple[float, float, float] | None = None) -> str:
    """Lobe of a point by position when no lobe masks are given: side by the lung midline,
    upper/middle/lower by the height within the lung (approximation, says so in its name)."""
    extent = extent or lung_extent(lungs)
    if extent is None:
        return "unknown"
    mid, lo, hi = extent
    sign = np.sign(direction[0, 0]) or 1.0
    side = "left" if (zyx[2] - mid) * sign > 0 else "right"
    zsign = np.sign(direction[2, 2]) or 1.0  # slice index increases towards head when > 0
    frac = (zyx[0] - lo) / max(hi - lo, 1)
    height = frac if zsign > 0 else 1 - frac  # 0 = base, 1 = apex
    if side == "left":
        return "left_upper (approx.)" if height > 0.45 else "left_lower (approx.)"
    if height > 0.6:
        return "right_upper (approx.)"
    if height > 0.4:
        return "right_middle (approx.)"
    return "right_lower (approx.)"
