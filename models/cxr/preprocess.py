"""Numpy-only pre-processing shared by chest X-ray training and inference.

A radiograph in presentation values (higher = brighter, after modality/VOI LUTs and
MONOCHROME1 inversion, see :mod:`models.imaging`) is letterboxed to a square model grid
(aspect preserved, zero padding, :func:`models.geometry.letterbox`) and its intensities
are scaled by robust percentiles of the image content to [0, 1]; padding stays 0.
The returned :class:`models.geometry.Letterbox` maps model-grid coordinates back to the
source pixels exactly.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.geometry import (Letterbox, box_reduce, box_reduce_halves, letterbox, letterbox_mask,
                             reduction_factors)

if TYPE_CHECKING:
    from models.imaging import AffineGrey

CLASSES: tuple[str, ...] = (
    "nodule_mass",
    "consolidation",
    "interstitial_opacity",
    "pleural_effusion",
    "pneumothorax",
)
INPUT_SIZE = 256
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0
REDUCING_GAP = 2.0
"""Shrink in two steps (PIL box reduction by an integer factor, then the antialiased bilinear
filter over the last >= 2x), cheaper than the one-step filter on full-size radiographs; the
measured grid difference and effect on the held-out AUROCs are in
``benchmarks/results/cxr_prep_check.md``.  Models from 0.5.0 on
are evaluated with it; training grids built before used the one-step filter."""


@dataclass(frozen=True)
class Prepared:
    """Model input (1,1,S,S) float32, its letterbox geometry and the content box in model pixels."""

    tensor: np.ndarray
    geometry: Letterbox
    content: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the image inside the padding
    source_shape: tuple[int, int]
    fine: np.ndarray | None = None  # (1,1,F,F) the same image on the fine grid (cxr-nodule), when asked for


def content_box(geometry: Letterbox, source_shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """Return the model-grid pixel box (x0, y0, x1, y1) covered by the source image."""
    x0, y0, x1, y1 = geometry.content_box
    # letterbox fills whole model pixels only (floor of the scaled extent)
    return (int(x0), int(y0), min(size, int(np.floor(x1 + 1e-6))), min(size, int(np.floor(y1 + 1e-6))))


_SAMPLE = 4096
_SAMPLE_STRIDE = 7919  # a prime: the sample visits every row and column phase of the image
_BRACKET_SIGMAS = 5.0


def _order_stats(flat: np.ndarray, ranks: list[int]) -> dict[int, float] | None:
    """Exact order statistics ``sorted(flat)[r]`` for ranks close together, or None.

    A sorted sample of :data:`_SAMPLE` values brackets the ranks by two values; the elements
    between them (a few percent of the image for a tail percentile) are counted and
    partially sorted instead of the whole image.  The sample takes every
    :data:`_SAMPLE_STRIDE`-th value modulo the size (a prime stride, so it does not keep
    picking the same columns of a row-major image, which biased a plain ``flat[::k]``
    sample), and the bracket is :data:`_BRACKET_SIGMAS` binomial standard deviations of
    the sample rank wide.  None when the bracket misses (the caller then sorts everything).
    """
    n = flat.size
    m = min(_SAMPLE, n)
    idx = (np.arange(m, dtype=np.int64) * _SAMPLE_STRIDE) % n if n > m else slice(None)
    sample = np.sort(flat[idx])
    p_lo, p_hi = min(ranks) / n, max(ranks) / n
    margin = int(np.ceil(_BRACKET_SIGMAS * np.sqrt(m * max(p_lo * (1 - p_lo), p_hi * (1 - p_hi))))) + 2
    lo_i = max(int(p_lo * m) - margin, 0)
    hi_i = min(int(p_hi * m) + margin, m - 1)
    lo_v, hi_v = sample[lo_i], sample[hi_i]
    below = int(np.count_nonzero(flat < lo_v)) if lo_i > 0 else 0
    if lo_v == hi_v:  # a run of equal values (e.g. pixels clipped by the window) around the ranks
        upto = int(np.count_nonzero(flat <= hi_v))
        return {r: float(lo_v) for r in ranks} if below <= min(ranks) and upto > max(ranks) else None
    sel = flat[(flat >= lo_v) & (flat <= hi_v)] if lo_i > 0 else flat[flat <= hi_v]
    if below > min(ranks) or below + sel.size <= max(ranks):
        return None
    part = np.partition(sel, [r - below for r in ranks])
    return {r: float(part[r - below]) for r in ranks}


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``numpy.percentile(values, qs)`` (linear interpolation), exact.

    Each percentile needs two order statistics; tail percentiles are found by
    :func:`_order_stats` among the few values near them, else from one partial sort.
    """
    flat = np.asarray(values, dtype=np.float32).ravel()
    pos = [q / 100.0 * (flat.size - 1) for q in qs]
    need = [(int(np.floor(p)), min(int(np.floor(p)) + 1, flat.size - 1)) for p in pos]
    stats: dict[int, float] = {}
    if flat.size >= 16384:
        for pair in need:
            got = _order_stats(flat, list(pair))
            if got is None:
                stats = {}
                break
            stats.update(got)
    if not stats:
        ks = sorted({k for pair in need for k in pair})
        part = np.partition(flat, ks)
        stats = {k: float(part[k]) for k in ks}
    out = []
    for p, (i, j) in zip(pos, need):
        lo, hi = stats[i], stats[j]
        out.append(lo + (hi - lo) * (p - i))
    return out


def normalize_intensity(grid: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Scale the content of ``grid`` by its 1st/99th percentiles to [0, 1]; padding becomes 0."""
    x0, y0, x1, y1 = box
    content = grid[y0:y1, x0:x1]
    lo, hi = _percentiles(content, (LOW_PERCENTILE, HIGH_PERCENTILE))
    scale = np.float32(1.0 / max(float(hi - lo), 1e-6))
    out = np.zeros_like(grid, dtype=np.float32)
    view = out[y0:y1, x0:x1]
    np.subtract(content, np.float32(lo), out=view)
    view *= scale
    np.clip(view, 0.0, 1.0, out=view)
    return out


def _grid(pixels: np.ndarray, size: int, reduced: tuple[np.ndarray, int, int] | None = None
          ) -> tuple[np.ndarray, Letterbox, tuple[int, int, int, int]]:
    grid, geometry = letterbox(pixels, size, reducing_gap=REDUCING_GAP, reduced=reduced)
    box = content_box(geometry, pixels.shape, size)
    return normalize_intensity(np.asarray(grid, dtype=np.float32), box), geometry, box


def _helper() -> ThreadPoolExecutor:
    """One shared helper thread for :func:`prepare` with ``workers=2`` (created on first use)."""
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is None:
            _HELPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-prepare")
        return _HELPER


_HELPER: ThreadPoolExecutor | None = None
_HELPER_LOCK = threading.Lock()


def _box_reduce_split(pixels: np.ndarray, ky: int, kx: int, pool: ThreadPoolExecutor | None) -> np.ndarray:
    """:func:`models.geometry.box_reduce`, the top and bottom halves at the same time when ``pool``.

    (:func:`models.geometry.box_reduce_halves`: the result is that of one call; numpy
    releases the GIL in the sums).  An :class:`models.imaging.AffineGrey` reduces itself
    from its stored values.
    """
    if hasattr(pixels, "box_reduce"):
        return pixels.box_reduce(ky, kx, pool)

    def rows(r0: int, r1: int, out: np.ndarray) -> None:
        out[r0 // ky:-(-r1 // ky)] = box_reduce(pixels[r0:r1], ky, kx)

    return box_reduce_halves(rows, pixels.shape[0], pixels.shape[1], ky, kx, pool)


def prepare(pixels: np.ndarray | AffineGrey, size: int = INPUT_SIZE, fine_size: int | None = None,
            workers: int = 1) -> Prepared:
    """Letterbox and normalise one radiograph (H, W) of presentation values for the networks.

    ``pixels`` is the float image, or an :class:`models.imaging.AffineGrey` (a DICOM
    image's stored values and affine grayscale map, :meth:`models.imaging.Radiograph.image_source`),
    which is box-reduced straight from the stored values (the same numbers, without the
    full-size float image).  With ``fine_size`` the same image is also prepared on that
    grid (``Prepared.fine``), normalised by the percentiles of its own content; the
    full-size image is box-reduced once for both grids (exactly what each would compute,
    see :func:`models.geometry.letterbox`).  With ``workers`` >= 2 (and a fine grid) a
    second thread takes half of the box reduction, then the fine grid while the calling
    thread prepares the coarse one: the same arithmetic, so the result is identical to
    ``workers=1``.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale radiograph, got shape {pixels.shape}")
    if not hasattr(pixels, "box_reduce"):
        pixels = np.asarray(pixels, dtype=np.float32)
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    pool = _helper() if workers >= 2 else None
    if not fine_size:
        norm, geometry, box = _grid(pixels, size)
        return Prepared(norm[None, None], geometry, box, shape)
    reduced = None
    ky, kx = reduction_factors(shape, fine_size, REDUCING_GAP)
    if ky > 1 or kx > 1:
        reduced = (_box_reduce_split(pixels, ky, kx, pool), ky, kx)
    # the fine grid (about twice the work of the coarse one) on the helper thread
    fine_job = pool.submit(_grid, pixels, fine_size, reduced) if pool is not None else None
    norm, geometry, box = _grid(pixels, size, reduced)
    fine = (fine_job.result() if fine_job is not None else _grid(pixels, fine_size, reduced))[0]
    return Prepared(norm[None, None], geometry, box, shape, fine[None, None])


def prepare_mask(mask: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Letterbox a binary mask onto the model grid (bool), same geometry as :func:`prepare`."""
    return letterbox_mask(np.asarray(mask, dtype=bool), size).astype(bool)
