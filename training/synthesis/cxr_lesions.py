"""Synthetic chest-radiograph lesions with pixel-exact masks (numpy/scipy only).

Each ``insert_*`` function takes a radiograph in presentation values (higher = brighter),
its lung-field mask, the pixel spacing in mm and a ``numpy.random.Generator`` and returns
an :class:`Insertion` whose ``delta`` is non-zero exactly on ``mask`` (the ground truth):
``image = clip(source + delta)`` and pixels outside the mask are untouched.

Models of appearance (projection radiography, additive attenuation in display space):

* nodule/mass -- 5--30 mm sphere projected to a chord-length profile ``sqrt(1 - r^2)``,
  lobulated outline, sharp or soft edge, attenuation growing with diameter;
* consolidation -- patchy, noise-modulated air-space opacity in the middle/lower zone with
  branching lucent air bronchograms;
* interstitial opacity -- reticular (zero-crossing) net texture in the lower zones;
* pleural effusion -- dependent fluid at the costophrenic angle with a meniscus rising
  laterally, density increasing downward;
* pneumothorax -- apico-lateral rim of pleural air without peripheral lung markings,
  bounded by a thin bright visceral pleural line.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

KINDS: tuple[str, ...] = (
    "nodule_mass",
    "consolidation",
    "interstitial_opacity",
    "pleural_effusion",
    "pneumothorax",
)


class SynthesisError(ValueError):
    """The lung mask does not allow this lesion to be placed (e.g. empty or tiny lung fields)."""


@dataclass(frozen=True)
class Insertion:
    """A synthetic lesion: new image, additive change (non-zero exactly on mask), mask, kind."""

    image: np.ndarray
    delta: np.ndarray
    mask: np.ndarray
    kind: str


def _range(image: np.ndarray, lung: np.ndarray) -> float:
    vals = image[lung] if lung.any() else image.ravel()
    lo, hi = np.percentile(vals, [1, 99])
    return float(max(hi - lo, 1e-3))


def _lungs(lung_mask: np.ndarray) -> list[np.ndarray]:
    """Return the (up to two) largest lung components, sorted by centroid x (image left first)."""
    lab, n = ndi.label(lung_mask)
    if n == 0:
        raise SynthesisError("empty lung mask: cannot place a lesion")
    sizes = ndi.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    comps = [lab == k for k in keep if sizes[k - 1] >= 0.1 * sizes.max()]
    comps.sort(key=lambda m: np.nonzero(m)[1].mean())
    return comps


def _pick_lung(lung_mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Pick one lung; return it and whether its lateral side is toward larger x."""
    comps = _lungs(lung_mask)
    i = int(rng.integers(len(comps)))
    one = comps[i]
    cx = np.nonzero(one)[1].mean()
    lateral_right = cx > lung_mask.shape[1] / 2.0
    return one, bool(lateral_right)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    f = ndi.gaussian_filter(rng.standard_normal(shape), max(sigma, 0.5))
    return (f - f.mean()) / (f.std() + 1e-9)


def _finish(image: np.ndarray, delta: np.ndarray, mask: np.ndarray, kind: str) -> Insertion:
    delta = np.where(mask, delta, 0.0).astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    out = np.clip(image.astype(np.float32) + delta, lo, hi).astype(np.float32)
    out[~mask] = image[~mask]
    return Insertion(out, delta, mask.astype(bool), kind)


def insert_nodule_mass(image, lung_mask, spacing_mm, rng, diameter_mm=None) -> Insertion:
    """Insert a 5--30 mm nodule/mass (lobulated sphere projection) inside a lung field."""
    lung = lung_mask.astype(bool)
    d = float(diameter_mm) if diameter_mm is not None else float(rng.uniform(5.0, 30.0))
    radius = max(d / 2.0 / spacing_mm, 1.5)
    inner = ndi.binary_erosion(lung, iterations=max(1, int(radius * 0.6)))
    ys, xs = np.nonzero(inner if inner.any() else lung)
    if ys.size == 0:
        raise SynthesisError("empty lung mask: cannot place a nodule")
    k = int(rng.integers(ys.size))
    cy, cx = ys[k] + rng.uniform(-0.5, 0.5), xs[k] + rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    rho = np.hypot(yy - cy, xx - cx)
    theta = np.arctan2(yy - cy, xx - cx)
    outline = np.ones_like(rho)
    for harmonic in range(2, 6):
        outline += rng.uniform(0, 0.12 * (d / 30.0 + 0.3)) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    r_edge = radius * outline
    mask = (rho < r_edge) & lung
    thickness = np.sqrt(np.clip(1.0 - (rho / r_edge) ** 2, 0.0, 1.0))
    edge_power = rng.uniform(0.5, 1.2)  # <1: sharp solid edge, >1: soft/ground-glass edge
    contrast = _range(image, lung) * (0.12 + 0.28 * (d - 5.0) / 25.0) * rng.uniform(0.8, 1.2)
    delta = contrast * (thickness**edge_power + 0.03)
    return _finish(image, delta, mask, "nodule_mass")


def _zone_weighted_center(one: np.ndarray, rng: np.random.Generator, lower_bias: float) -> tuple[float, float]:
    ys, xs = np.nonzero(one)
    y0, y1 = ys.min(), ys.max()
    frac = (ys - y0) / max(y1 - y0, 1)
    w = np.exp(lower_bias * frac)
    k = int(rng.choice(ys.size, p=w / w.sum()))
    return float(ys[k]), float(xs[k])


def _bronchograms(shape, mask, cy, cx, length, rng) -> np.ndarray:
    """Return a map (0..1) of a few branching lucent tubes drawn from random walks."""
    tubes = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.integers(2, 5))):
        y, x = cy, cx
        ang = rng.uniform(0, 2 * np.pi)
        for _step in range(int(length)):
            ang += rng.normal(0, 0.15)
            y += np.sin(ang)
            x += np.cos(ang)
            iy, ix = int(round(y)), int(round(x))
            if not (0 <= iy < shape[0] and 0 <= ix < shape[1]) or not mask[iy, ix]:
                break
            tubes[iy, ix] = 1.0
            if rng.random() < 0.05:  # a side branch
                ang += rng.choice([-0.6, 0.6])
    return np.clip(ndi.gaussian_filter(tubes, 0.7) * 3.0, 0.0, 1.0)


def insert_consolidation(image, lung_mask, spacing_mm, rng) -> Insertion:
    """Insert patchy air-space consolidation with air bronchograms in a middle/lower zone."""
    lung = lung_mask.astype(bool)
    one, _ = _pick_lung(lung, rng)
    ys, xs = np.nonzero(one)
    height = ys.max() - ys.min() + 1
    cy, cx = _zone_weighted_center(one, rng, lower_bias=1.5)
    ry = height * rng.uniform(0.15, 0.3)
    rx = ry * rng.uniform(0.7, 1.3)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    ell = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    patch = _smooth_noise(image.shape, ry / 4.0, rng)
    mask = (ell + 0.35 * patch < 1.0) & one
    lab, n = ndi.label(mask)
    if n > 1:  # keep the component nearest the centre so the finding is one region
        sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    if mask.sum() < 4:
        mask = (ell < 1.0) & one
    density = 0.6 + 0.4 * np.clip(_smooth_noise(image.shape, ry / 6.0, rng) * 0.5 + 0.5, 0.0, 1.0)
    inside = ndi.distance_transform_edt(mask)
    fade = np.clip(inside / max(ry * 0.25, 1.0), 0.0, 1.0)  # ill-defined margin
    contrast = _range(image, lung) * rng.uniform(0.25, 0.5)
    tubes = _bronchograms(image.shape, mask, cy, cx, ry * 1.2, rng)
    delta = contrast * (0.05 + 0.95 * density * fade) * (1.0 - 0.6 * tubes)
    return _finish(image, delta, mask, "consolidation")


def insert_interstitial_opacity(image, lung_mask, spacing_mm, rng) -> Insertion:
    """Insert reticular interstitial texture over the lower zones of one or both lungs."""
    lung = lung_mask.astype(bool)
    comps = _lungs(lung)
    chosen = comps if (len(comps) == 1 or rng.random() < 0.6) else [comps[int(rng.integers(len(comps)))]]
    mask = np.zeros_like(lung)
    for one in chosen:
        ys, _ = np.nonzero(one)
        cut = ys.min() + (ys.max() - ys.min()) * rng.uniform(0.3, 0.6)
        yy = np.arange(image.shape[0])[:, None]
        wobble = _smooth_noise(image.shape, 8.0, rng) * (ys.max() - ys.min()) * 0.05
        mask |= one & (yy + wobble > cut)
    cell = max(4.0 / spacing_mm, 1.0)  # ~4 mm reticulation
    noise = rng.standard_normal(image.shape)
    band = ndi.gaussian_filter(noise, cell * 0.35) - ndi.gaussian_filter(noise, cell * 0.7)
    band /= band.std() + 1e-9
    lines = np.exp(-((band / 0.45) ** 2))  # zero crossings -> reticular net
    contrast = _range(image, lung) * rng.uniform(0.15, 0.3)
    delta = contrast * (0.25 + 0.75 * lines)
    return _finish(image, delta, mask, "interstitial_opacity")


def insert_pleural_effusion(image, lung_mask, spacing_mm, rng) -> Insertion:
    """Insert a dependent effusion blunting the costophrenic angle with a lateral meniscus."""
    lung = lung_mask.astype(bool)
    one, lateral_right = _pick_lung(lung, rng)
    ys, xs = np.nonzero(one)
    y_top, y_bot = ys.min(), ys.max()
    x_med, x_lat = (xs.min(), xs.max()) if lateral_right else (xs.max(), xs.min())
    h = (y_bot - y_top) * rng.uniform(0.12, 0.4)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    u = np.clip((xx - x_med) / (x_lat - x_med + 1e-6), 0.0, 1.0)  # 0 medial -> 1 lateral
    level = y_bot - h - rng.uniform(0.3, 0.8) * h * u**2
    mask = one & (yy > level)
    if mask.sum() < 4:
        raise SynthesisError("lung base too small for an effusion")
    target = np.percentile(image, 97)
    alpha = rng.uniform(0.55, 0.9)
    depth = np.clip((yy - level) / max(h * 0.5, 1.0), 0.0, 1.0)
    delta = np.maximum(alpha * (0.3 + 0.7 * depth) * (target - image), 0.0) + 0.02 * _range(image, lung)
    return _finish(image, delta, mask, "pleural_effusion")


def insert_pneumothorax(image, lung_mask, spacing_mm, rng) -> Insertion:
    """Insert an apico-lateral pneumothorax: lucent rim without markings + visceral pleural line."""
    lung = lung_mask.astype(bool)
    one, lateral_right = _pick_lung(lung, rng)
    ys, xs = np.nonzero(one)
    y_top, y_bot = ys.min(), ys.max()
    width = xs.max() - xs.min() + 1
    depth = width * rng.uniform(0.08, 0.25)
    extent = (y_bot - y_top) * rng.uniform(0.4, 0.85)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    taper = np.clip(1.0 - (yy - y_top) / extent, 0.0, 1.0) ** 0.7
    dist = ndi.distance_transform_edt(one)
    cx = xs.mean()
    lateral = (xx >= cx - 0.1 * width) if lateral_right else (xx <= cx + 0.1 * width)
    apex = yy < y_top + 0.15 * (y_bot - y_top)
    rim_depth = depth * taper
    mask = one & (dist <= rim_depth) & (lateral | apex) & (taper > 0)
    if mask.sum() < 4:
        raise SynthesisError("lung too small for a pneumothorax")
    line_w = max(0.8 / spacing_mm, 1.0)
    line = mask & (dist > rim_depth - line_w)
    rng_ = _range(image, lung)
    smooth = ndi.gaussian_filter(image.astype(np.float32), max(2.0 / spacing_mm, 1.0))
    darker = np.minimum(smooth, image) - image - rng_ * rng.uniform(0.05, 0.15)
    delta = np.where(line, rng_ * rng.uniform(0.15, 0.3), darker)
    return _finish(image, delta, mask, "pneumothorax")


INSERTERS = {
    "nodule_mass": insert_nodule_mass,
    "consolidation": insert_consolidation,
    "interstitial_opacity": insert_interstitial_opacity,
    "pleural_effusion": insert_pleural_effusion,
    "pneumothorax": insert_pneumothorax,
}


def insert(kind: str, image: np.ndarray, lung_mask: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> Insertion:
    """Insert one lesion of ``kind`` (one of :data:`KINDS`)."""
    if kind not in INSERTERS:
        raise SynthesisError(f"unknown lesion kind {kind!r}; expected one of {KINDS}")
    return INSERTERS[kind](np.asarray(image, dtype=np.float32), np.asarray(lung_mask, dtype=bool), float(spacing_mm), rng)


def synthesize(
    image: np.ndarray, lung_mask: np.ndarray, spacing_mm: float, kinds: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Insert several lesions in turn; return the image and one exact mask per kind (union if repeated)."""
    out = np.asarray(image, dtype=np.float32)
    masks: dict[str, np.ndarray] = {}
    for kind in kinds:
        ins = insert(kind, out, lung_mask, spacing_mm, rng)
        out = ins.image
        masks[kind] = masks.get(kind, np.zeros_like(ins.mask)) | ins.mask
    return out, masks
