"""Nodule/mass read on the fine grid: lung support, image score and the coarse map for findings.

A 5 mm nodule spans about 3 pixels of the 256-pixel grid the findings network reads, too
few to tell from vessel crossings (``cxr-lesions`` 0.5.0 reached a synthetic nodule AUROC
of 0.60 for 5--10 mm).  ``cxr-nodule`` reads the same radiograph letterboxed to
:data:`NODULE_INPUT_SIZE` and returns a nodule probability map at stride 4.  Its image
score is the map's maximum inside the lung fields (dilated by :data:`SUPPORT_MARGIN`
cells), the same rule its training loss uses (:mod:`training.cxr.train_nodule`), so bone
edges, tubes and nipple shadows outside the lungs cannot raise it.
"""
from __future__ import annotations

import numpy as np

NODULE_INPUT_SIZE = 512
NODULE_STRIDE = 4
SUPPORT_MARGIN = 3
"""Cells of the stride-4 map (12 pixels of the 512 grid, about 5 mm) added around the lungs."""


def _pool_max(mask: np.ndarray, grid: int) -> np.ndarray:
    """Max-pool a square (S, S) array to (grid, grid); S must be a multiple of ``grid``."""
    k = mask.shape[0] // grid
    if k * grid != mask.shape[0] or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"cannot pool a {mask.shape} map to {grid}x{grid}")
    out = mask[::k, ::k].copy()  # k*k strided maxima: far cheaper than a reduction over small axes
    for dy in range(k):
        for dx in range(k):
            if dy or dx:
                np.maximum(out, mask[dy::k, dx::k], out=out)
    return out


def lung_support(lung: np.ndarray, grid: int, margin: int = SUPPORT_MARGIN) -> np.ndarray:
    """Cells of a (grid, grid) map that touch the lung fields, dilated by ``margin`` cells.

    ``lung`` is a lung probability map or mask on any square grid of the same letterbox
    family (256 or 512 pixels): grids are aligned up to one padding pixel.
    """
    lung = np.asarray(lung)
    mask = lung >= 0.5 if lung.dtype != bool else lung
    if mask.shape[0] < grid:
        reps = grid // mask.shape[0]
        mask = np.repeat(np.repeat(mask, reps, axis=0), reps, axis=1)
    cells = _pool_max(mask, grid)
    if margin and cells.any():
        cells = dilate_city_block(cells, margin)
    return cells


def dilate_city_block(mask: np.ndarray, radius: int) -> np.ndarray:
    """``scipy.ndimage.binary_dilation(mask, iterations=radius)`` (4-connected cross, zero border).

    ``radius`` cross dilations reach the pixels within that city-block distance; inside a
    rectangle a monotone path stays inside it, so this is the OR of the mask shifted by
    every offset of the distance-``radius`` diamond (fewer passes for small radii).
    """
    h, w = mask.shape
    r = int(radius)
    padded = np.zeros((h + 2 * r, w + 2 * r), bool)
    padded[r:r + h, r:r + w] = mask
    out = np.array(mask, dtype=bool, copy=True)
    for dy in range(-r, r + 1):
        k = r - abs(dy)
        for dx in range(-k, k + 1):
            if dy or dx:
                out |= padded[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


def nodule_score(nodule_map: np.ndarray, support: np.ndarray) -> float:
    """Image-level nodule/mass probability: the map's maximum inside ``support`` (whole map if empty)."""
    m = np.asarray(nodule_map, dtype=np.float32)
    if support is not None and support.any():
        return float(m[support].max())
    return float(m.max())


def coarse_map(nodule_map: np.ndarray, grid: int) -> np.ndarray:
    """Max-pool the fine map to the findings network's map grid (for :func:`models.cxr.postprocess.post_process`)."""
    return _pool_max(np.asarray(nodule_map, dtype=np.float32), grid)
