"""Nodule candidates: multiscale Hessian dot-enhancement ("blobness") filter on the lungs.

Li, Sone & Doi, Med. Phys. 30 (2003) 2040: with the Hessian eigenvalues of the
Gaussian-smoothed image ordered |l1| >= |l2| >= |l3|, a bright sphere has l1, l2, l3 < 0 and
similar, a tube (vessel) has l3 ~ 0 and a plate (fissure, wall) l2 ~ l3 ~ 0.  The dot
response ``|l3|^2 / |l1|`` (scale-normalised by sigma^2) is large only for spheres.  The image
is clipped to [-1000, ``clip_hi``] HU first so that solid and ground-glass nodules get
comparable contrast.  Candidates are the scale-space local maxima of the response inside
the (dilated) lungs, merged by non-maximum suppression; a candidate's radius is
sqrt(3) x its scale (the radius of the sphere that answers best at that scale).
Scales >= ``COARSE_SIGMA_MM`` are computed on a 2x coarser grid (same result, 8x fewer voxels).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

SIGMAS_MM = (1.2, 1.7, 2.4, 3.4, 4.8, 6.8)
COARSE_SIGMA_MM = 3.0
CLIP_LO, CLIP_HI = -1000.0, -400.0


@dataclass
class Candidate:
    """A blob: centre (voxel zyx, work grid), scale (mm), radius estimate (mm), response."""

    zyx: tuple[float, float, float]
    sigma_mm: float
    radius_mm: float
    response: float
    source: str = "blob"  # "blob" or "juxta" (see :func:`lung_candidates`)


def hessian_dot(img: np.ndarray, sigma_vox: float, region: np.ndarray, mode: str = "reflect") -> np.ndarray:
    """Scale-normalised dot response ``sigma^2 |l3|^2/|l1|`` where all eigenvalues are < 0
    (zero elsewhere and outside ``region``).  Second derivatives by central differences
    of the Gaussian-smoothed image; ``mode``: the smoothing's border rule ("reflect": a
    nodule cut by the first or last slice is mirrored into a whole blob; "nearest" would
    extend its cut face into a tube, which the dot filter rejects)."""
    g = ndimage.gaussian_filter(img, sigma_vox, mode=mode)
    gz, gy, gx = np.gradient(g)
    hzz = np.gradient(gz, axis=0)
    idx = region & (hzz < 0)
    out = np.zeros(img.shape, np.float32)
    if not idx.any():
        return out
    hyy = np.gradient(gy, axis=1)[idx]
    hxx = np.gradient(gx, axis=2)[idx]
    hzy = np.gradient(gz, axis=1)[idx]
    hzx = np.gradient(gz, axis=2)[idx]
    hyx = np.gradient(gy, axis=2)[idx]
    h = np.empty((hyy.size, 3, 3), np.float32)
    h[:, 0, 0] = hzz[idx]
    h[:, 1, 1] = hyy
    h[:, 2, 2] = hxx
    h[:, 0, 1] = h[:, 1, 0] = hzy
    h[:, 0, 2] = h[:, 2, 0] = hzx
    h[:, 1, 2] = h[:, 2, 1] = hyx
    ev = np.linalg.eigvalsh(h)  # ascending: ev[:, 0] most negative, ev[:, 2] closest to 0 for a blob
    l1, l3 = ev[:, 0], ev[:, 2]
    val = np.where(l3 < 0, l3 * l3 / np.minimum(l1, -1e-6) * -1.0, 0.0) * sigma_vox ** 2
    out[idx] = val
    return out


def _maxima(resp: np.ndarray, floor: float) -> np.ndarray:
    peak = ndimage.maximum_filter(resp, size=3, mode="constant")
    return np.argwhere((resp == peak) & (resp > floor))


def detect(hu: np.ndarray, spacing, region: np.ndarray, sigmas_mm=SIGMAS_MM, clip_hi: float = CLIP_HI,
           floor: float = 8.0, max_candidates: int = 400,
           fill_outside: bool = False) -> list[Candidate]:
    """Blob candidates in ``region`` (bool, same grid as ``hu``), strongest first.

    ``floor``: minimum dot response (HU units after clipping); ``max_candidates``: cap after
    non-maximum suppression (a candidate suppresses weaker ones within its radius)."""
    img = np.clip(hu, CLIP_LO, clip_hi).astype(np.float32)
    if fill_outside:  # chest wall / mediastinum → parenchyma level: juxtapleural nodules become blobs
        img[~region] = float(np.median(img[region])) if region.any() else CLIP_LO
    sp = np.asarray(spacing, float)
    coarse = None
    found: list[Candidate] = []
    for s in sigmas_mm:
        if s >= COARSE_SIGMA_MM:
            if coarse is None:
                # 2x block mean (pad to even), region by any
                pad = [(0, n % 2) for n in img.shape]
                ip = np.pad(img, pad, mode="edge")
                rp = np.pad(region, pad)
                sh = [n // 2 for n in ip.shape]
                cimg = ip.reshape(sh[0], 2, sh[1], 2, sh[2], 2).mean((1, 3, 5))
                creg = rp.reshape(sh[0], 2, sh[1], 2, sh[2], 2).any((1, 3, 5))
                coarse = (cimg, creg)
            cimg, creg = coarse
            sv = s / (sp * 2)
            r = hessian_dot(cimg, float(sv.mean()), creg)
            pts = _maxima(r, floor)
            vals = r[tuple(pts.T)]
            pts = pts * 2.0 + 0.5
        else:
            sv = s / sp
            r = hessian_dot(img, float(sv.mean()), region)
            pts = _maxima(r, floor)
            vals = r[tuple(pts.T)]
        for p, v in zip(pts, vals):
            found.append(Candidate(tuple(float(c) for c in p), s, float(np.sqrt(3) * s), float(v)))
    found.sort(key=lambda c: -c.response)
    kept: list[Candidate] = []
    cen = np.zeros((0, 3))
    rad = np.zeros(0)
    for c in found:
        p = np.asarray(c.zyx) * sp
        if len(kept):
            d = np.linalg.norm(cen - p, axis=1)
            if (d < np.maximum(rad, 0.6 * c.radius_mm)).any():
                continue
        kept.append(c)
        cen = np.vstack([cen, p])
        rad = np.append(rad, 0.8 * c.radius_mm)
        if len(kept) >= max_candidates:
            break
    return kept


def lung_candidates(hu: np.ndarray, spacing, lungs: np.ndarray, floor: float = 4.0,
                    max_candidates: int = 1500, juxta_floor: float = 4.0, juxta_max: int = 300,
                    dilate: int = 3) -> list[Candidate]:
    """Nodule candidates of a lung CT: two passes of :func:`detect`, shared by training and
    inference.

    1. ``blob``: the lungs dilated by ``dilate`` voxels, image as is (free-standing nodules,
       vessels, bifurcations).
    2. ``juxta``: the lungs only, with everything outside them set to the parenchyma level
       (``fill_outside``): a nodule touching the chest wall, mediastinum or diaphragm is a
       shoulder on a brighter structure in the raw image (no dot response) but a blob once
       the wall is flattened.  At most ``juxta_max`` of these; one within the radius of a
       pass-1 candidate is dropped.
    """
    region = ndimage.binary_dilation(lungs, iterations=dilate) if dilate else lungs
    a = detect(hu, spacing, region, floor=floor, max_candidates=max_candidates)
    if juxta_max <= 0 or not lungs.any():
        return a
    b = detect(hu, spacing, lungs, floor=juxta_floor, max_candidates=juxta_max, fill_outside=True)
    sp = np.asarray(spacing, float)
    if a:
        pa = np.array([c.zyx for c in a]) * sp
        ra = np.array([c.radius_mm for c in a])
    out = list(a)
    for c in b:
        if a:
            d = np.linalg.norm(pa - np.asarray(c.zyx) * sp, axis=1)
            if (d < np.maximum(0.8 * ra, 0.6 * c.radius_mm)).any():
                continue
        c.source = "juxta"
        out.append(c)
    return out


def closed_lungs(lungs: np.ndarray, spacing, radius_mm: float = 9.0) -> np.ndarray:
    """The lungs closed with a ball of ``radius_mm`` (distance transforms): nodules attached
    to the chest wall or mediastinum, which the air threshold leaves out, fall inside."""
    if not lungs.any():
        return lungs.copy()
    pad = int(np.ceil(radius_mm / min(spacing))) + 1
    m = np.pad(lungs, pad)
    dil = ndimage.distance_transform_edt(~m, sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dil, sampling=spacing) > radius_mm
    closed |= m
    sl = tuple(slice(pad, pad + n) for n in lungs.shape)
    return closed[sl]


def _ball(r: int) -> np.ndarray:
    g = np.arange(-r, r + 1)
    return (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r + 0.5


# segment_blob options chosen on validation cases (issue #7, 2026-12-07): the opening ball
# from the mask's inscribed radius near the centre, regrown by one voxel
INSCRIBED_OPENING = {"open_from": "inscribed", "open_scale": 0.6, "regrow": 1}


def segment_blob(hu: np.ndarray, zyx, radius_mm: float, spacing, allowed: np.ndarray | None = None,
                 level_pct: float = 60.0, core_fraction: float = 0.6, halo_hu: float = 60.0,
                 halo_pct: float = 30.0, open_from: str = "candidate", open_scale: float = 0.4,
                 regrow: int | None = None, info: dict | None = None) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Mask of the nodule at a candidate: threshold halfway between the nodule level
    (``level_pct`` percentile of HU within ``core_fraction`` × the blob radius) and the lung
    background (median HU < -700 around it), inside a sphere of 2 × radius + 4 mm, opened
    with a ball of ~0.4 × radius to cut attached vessels, the component at the centre, then
    grown back by the opening radius inside the threshold mask.  ``open_from="inscribed"``
    sizes the ball from the threshold mask's inscribed radius near the centre instead of the
    blob radius (``open_scale`` × it, 1-3 voxels), so a vessel or wall band thinner than the
    nodule is cut even when the blob radius under-estimates it; ``regrow`` (voxels) replaces
    the regrowth by the ball.  Returns (mask, box); ``info`` (a dict), when given, receives
    ``level``: the HU the returned mask was thresholded at (None when nothing was segmented)."""
    sp = np.asarray(spacing, float)
    c = np.asarray(zyx, float)
    lim = max(2.0 * radius_mm + 4.0, 9.0)
    half = np.ceil(lim / sp).astype(int) + 1
    lo = np.maximum(np.round(c).astype(int) - half, 0)
    hi = np.minimum(np.round(c).astype(int) + half + 1, hu.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = hu[box]
    grids = np.meshgrid(*[(np.arange(a, b) - cc) * s for a, b, cc, s in zip(lo, hi, c, sp)], indexing="ij")
    d = np.sqrt(sum(g * g for g in grids))
    core = d <= max(core_fraction * radius_mm, 1.6)
    level = float(np.percentile(sub[core], level_pct))
    bgv = sub[(d <= lim) & (sub < -700)]
    bg = float(np.median(bgv)) if bgv.size > 20 else -850.0
    if info is not None:
        info["level"] = None
    if level <= bg + 60:  # no contrast at the centre: nothing to segment
        return np.zeros(sub.shape, bool), box
    opts = {"open_from": open_from, "open_scale": open_scale, "regrow": regrow}
    t = 0.5 * (level + bg)
    keep = _grow(sub, d, lim, t, c - lo, radius_mm, sp, None if allowed is None else allowed[box], **opts)
    if keep.any() and halo_hu > 0:  # a ground-glass halo around a solid core: part-solid nodule
        shell = ndimage.binary_dilation(keep, iterations=3) & ~ndimage.binary_dilation(keep) & (d <= lim)
        halo = float(np.percentile(sub[shell], halo_pct)) if shell.any() else bg
        if halo - bg > halo_hu and halo < -300:
            big = _grow(sub, d, lim, 0.5 * (halo + bg), c - lo, radius_mm, sp,
                        None if allowed is None else allowed[box], **opts)
            if big.sum() > keep.sum():
                keep, t = big, 0.5 * (halo + bg)
    if info is not None and keep.any():
        info["level"] = float(t)
    return keep, box


def _grow(sub, d, lim, t, ci_f, radius_mm, sp, allowed, open_from="candidate", open_scale=0.4, regrow=None):
    m = (sub >= t) & (d <= lim)
    if allowed is not None:
        m &= allowed
    r = radius_mm
    if open_from == "inscribed":  # the thickest part of the mask near the centre (its inscribed radius)
        edt = ndimage.distance_transform_edt(m, sampling=sp)
        near = d <= max(radius_mm, 2.0)
        r = float(edt[near].max()) if near.any() else radius_mm
    k = int(np.clip(round(open_scale * r / sp.min()), 1, 3))
    opened = ndimage.binary_opening(m, structure=_ball(k))
    src = opened if opened.any() else m
    lab, n = ndimage.label(src)
    if n == 0:
        return np.zeros(sub.shape, bool)
    ci = tuple(np.clip(np.round(ci_f).astype(int), 0, np.asarray(sub.shape) - 1))
    if lab[ci] > 0:
        keep = lab == lab[ci]
    else:  # nearest component to the centre
        dd = ndimage.distance_transform_edt(lab == 0, sampling=sp, return_indices=True)[1]
        keep = lab == lab[tuple(dd[:, ci[0], ci[1], ci[2]])]
    if src is opened:
        g = k if regrow is None else regrow
        if g > 0:
            keep = ndimage.binary_dilation(keep, structure=_ball(g)) & m
        lab2, _ = ndimage.label(keep)
        if lab2[ci] > 0:
            keep = lab2 == lab2[ci]
    return keep
