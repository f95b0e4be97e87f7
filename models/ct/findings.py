"""Per-finding measurements shared by the CT tasks (pure numpy): centre, axes, volume, HU."""
from __future__ import annotations

from typing import Any

import numpy as np


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON part of a task result (keys starting with ``_`` hold arrays such as masks)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def axes_mm(mask: np.ndarray, spacing) -> tuple[float, float]:
    """Long and short axis (mm) on the axial slice of largest area (Lung-RADS / RECIST style):
    long = maximal in-plane extent (principal axis length via extreme projections), short =
    extent perpendicular to it."""
    areas = mask.sum(axis=(1, 2))
    if areas.max() == 0:
        return 0.0, 0.0
    z = int(np.argmax(areas))
    yy, xx = np.nonzero(mask[z])
    pts = np.stack([yy * spacing[1], xx * spacing[2]], axis=1)
    if len(pts) == 1:
        return float(min(spacing[1], spacing[2])), float(min(spacing[1], spacing[2]))
    best = (0.0, 0.0)
    pix = float(min(spacing[1], spacing[2]))
    for ang in np.linspace(0, np.pi, 36, endpoint=False):
        u = np.array([np.cos(ang), np.sin(ang)])
        p = pts @ u
        q = pts @ np.array([-u[1], u[0]])
        ln = float(p.max() - p.min()) + pix
        if ln > best[0]:
            best = (ln, float(q.max() - q.min()) + pix)
    return best


def subvoxel_axes_mm(mask: np.ndarray, hu: np.ndarray, level: float, spacing, factor: int = 4
                     ) -> tuple[float, float]:
    """Long and short axis (mm) as :func:`axes_mm`, measured below the voxel size: on the
    mask's largest axial slice, the HU image is sampled ``factor`` × finer (linear) and
    thresholded at ``level`` (the segmentation's own HU level) within the mask dilated by one
    voxel, keeping the parts that overlap the mask; falls back to :func:`axes_mm` when that
    leaves nothing."""
    from scipy import ndimage

    areas = mask.sum(axis=(1, 2))
    if areas.max() == 0:
        return 0.0, 0.0
    z = int(np.argmax(areas))
    region = ndimage.binary_dilation(mask[z], iterations=1)
    yy, xx = np.nonzero(region)
    y0, y1 = max(yy.min() - 1, 0), min(yy.max() + 2, mask.shape[1])
    x0, x1 = max(xx.min() - 1, 0), min(xx.max() + 2, mask.shape[2])
    h = np.asarray(hu[z, y0:y1, x0:x1], np.float32)
    # sample points at the centres of the fine pixels, in coarse voxel coordinates
    fy = (np.arange((y1 - y0) * factor) + 0.5) / factor - 0.5
    fx = (np.arange((x1 - x0) * factor) + 0.5) / factor - 0.5
    gy, gx = np.meshgrid(fy, fx, indexing="ij")
    fine_hu = ndimage.map_coordinates(h, [gy, gx], order=1, mode="nearest")
    near = np.clip(np.round([gy, gx]).astype(int), 0, [[[h.shape[0] - 1]], [[h.shape[1] - 1]]])
    fine = (fine_hu >= level) & region[y0:y1, x0:x1][near[0], near[1]]
    lab, n = ndimage.label(fine)
    if n == 0:
        return axes_mm(mask, spacing)
    core = mask[z, y0:y1, x0:x1][near[0], near[1]]
    ids = np.unique(lab[core & (lab > 0)])
    fine = np.isin(lab, ids) if ids.size else fine
    sp = (float(spacing[0]), float(spacing[1]) / factor, float(spacing[2]) / factor)
    long_ax, short_ax = axes_mm(fine[None], sp)
    return long_ax, short_ax


def grow(sl: tuple[slice, ...], margin: int, shape) -> tuple[slice, ...]:
    """A bounding box (from ``ndimage.find_objects``) enlarged by ``margin`` voxels."""
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(sl, shape))


def describe(mask: np.ndarray, hu: np.ndarray, vol, offset=(0, 0, 0)) -> dict[str, Any]:
    """Centre (voxel and patient mm), long/short axis, volume, mean HU of one lesion mask
    (``mask``/``hu`` may be a crop whose first voxel is ``offset`` in ``vol``)."""
    zz, yy, xx = np.nonzero(mask)
    c = np.array([zz.mean(), yy.mean(), xx.mean()]) + np.asarray(offset, float)
    long_ax, short_ax = axes_mm(mask, vol.spacing)
    return {
        "centre_voxel_zyx": [round(float(v), 2) for v in c],
        "centre_patient_mm": [round(float(v), 2) for v in vol.voxel_to_patient(c)],
        "long_axis_mm": round(long_ax, 1), "short_axis_mm": round(short_ax, 1),
        "volume_mm3": round(float(mask.sum()) * vol.voxel_volume_mm3, 1),
        "mean_hu": round(float(hu[mask].mean()), 1),
    }
