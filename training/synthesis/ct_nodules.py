"""Lung-nodule insertion into real CT lungs with exact ground truth (numpy only).

Nodule model (sizes 4–30 mm; Lung-RADS types):
- solid: soft tissue (-10…60 HU), lobulated ellipsoid, smooth (partial-volume) edge;
- ground-glass (GGN): the lung is raised towards -700…-450 HU, so vessels stay visible;
- part-solid: a ground-glass nodule with a solid core of 25–60 % of its diameter.
The ground-truth mask is the whole nodule (profile ≥ 0.5); the solid core is reported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

TYPES = ("solid", "part-solid", "ground-glass")


@dataclass
class NoduleSpec:
    centre_zyx: tuple[float, float, float]  # voxel
    diameter_mm: float
    type: str
    hu: float  # solid HU for solid, GGN level for ground-glass / part-solid
    core_fraction: float = 0.0  # solid core diameter / diameter (part-solid)
    elongation: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lobulation: float = 0.1
    seed: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["solid_core_mm"] = round(self.diameter_mm * self.core_fraction, 2) if self.type == "part-solid" else (
            self.diameter_mm if self.type == "solid" else 0.0)
        return d


def random_spec(rng: np.random.Generator, centre_zyx, diameter_range=(4.0, 30.0),
                types=TYPES, type_p=(0.5, 0.25, 0.25)) -> NoduleSpec:
    """A random nodule: log-uniform diameter, type, attenuation, shape."""
    d = float(np.exp(rng.uniform(np.log(diameter_range[0]), np.log(diameter_range[1]))))
    t = str(rng.choice(types, p=np.asarray(type_p[:len(types)]) / np.sum(type_p[:len(types)])))
    if t == "solid":
        hu = float(rng.uniform(-10, 60))
    else:
        hu = float(rng.uniform(-700, -450))
    core = float(rng.uniform(0.3, 0.6)) if t == "part-solid" else 0.0
    el = tuple(float(v) for v in rng.uniform(0.8, 1.2, 3))
    return NoduleSpec(tuple(float(c) for c in centre_zyx), d, t, hu, core, el,
                      float(rng.uniform(0.0, 0.2)), int(rng.integers(1 << 30)))


def _profile(shape, centre, radius_vox, elong, lobulation, seed, edge_vox=0.6):
    """Soft occupancy in [0, 1] of a lobulated ellipsoid (radius per axis in voxels)."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    dz = (z - centre[0]) / (radius_vox[0] * elong[0])
    dy = (y - centre[1]) / (radius_vox[1] * elong[1])
    dx = (x - centre[2]) / (radius_vox[2] * elong[2])
    r = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    if lobulation > 0:
        rng = np.random.default_rng(seed)
        th = np.arctan2(dy, dx)
        ph = np.arctan2(dz, np.sqrt(dx ** 2 + dy ** 2) + 1e-6)
        wob = np.zeros_like(r)
        for k in (2, 3, 5):
            a, b = rng.uniform(0, 2 * np.pi, 2)
            wob += np.cos(k * th + a) * np.cos(k * ph + b) / k
        r = r / (1 + lobulation * wob)
    mean_r = float(np.mean(radius_vox))
    return 1.0 / (1.0 + np.exp((r - 1.0) * mean_r / edge_vox))


def insert_nodule(hu: np.ndarray, spacing, spec: NoduleSpec, rng: np.random.Generator | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Insert one nodule in place of a copy of ``hu``; returns (volume, bool mask)."""
    rng = rng or np.random.default_rng(spec.seed)
    rad_mm = spec.diameter_mm / 2
    rad = np.array([rad_mm / s for s in spacing])
    m = int(np.ceil(rad.max() * 1.5 + 3))
    c = np.asarray(spec.centre_zyx)
    lo = np.maximum(np.floor(c - m).astype(int), 0)
    hi = np.minimum(np.ceil(c + m + 1).astype(int), hu.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = hu[sl].astype(np.float32)
    p = _profile(sub.shape, c - lo, rad, spec.elongation, spec.lobulation, spec.seed)
    noise = ndimage.gaussian_filter(rng.normal(0, 25, sub.shape).astype(np.float32), 0.7)
    if spec.type == "solid":
        new = sub * (1 - p) + (spec.hu + noise) * p
        new = np.maximum(new, np.where(p > 0.5, sub, -np.inf))  # calcified/vessel parts stay
    else:
        ggn = np.maximum(sub, spec.hu + noise)  # vessels inside a GGN stay brighter
        new = sub * (1 - p) + ggn * p
        if spec.type == "part-solid":
            pc = _profile(sub.shape, c - lo, rad * spec.core_fraction, spec.elongation, spec.lobulation,
                          spec.seed + 1)
            new = new * (1 - pc) + (float(rng.uniform(0, 50)) + noise) * pc
    out = hu.astype(np.float32).copy()
    out[sl] = new
    mask = np.zeros(hu.shape, bool)
    mask[sl] = p >= 0.5
    return out, mask


def sample_centres(lung: np.ndarray, spacing, diameter_mm: float, rng: np.random.Generator, n: int = 1,
                   avoid: list[np.ndarray] | None = None, min_gap_mm: float = 10.0,
                   margin_fraction: float = 0.6, dist: np.ndarray | None = None) -> list[np.ndarray]:
    """Random voxel centres deep enough in the lung for a nodule of ``diameter_mm``
    (its centre at least ``margin_fraction`` × radius from the pleura).  ``dist``: the
    lung's distance transform in mm, when the caller caches it."""
    if dist is None:
        dist = ndimage.distance_transform_edt(lung, sampling=spacing)
    ok = np.argwhere(dist >= max(1.5, margin_fraction * diameter_mm / 2))
    if len(ok) == 0:
        return []
    out: list[np.ndarray] = []
    avoid = list(avoid or [])
    for _ in range(200 * n):
        c = ok[rng.integers(len(ok))].astype(float)
        if all(np.linalg.norm((c - a) * np.asarray(spacing)) >= min_gap_mm + diameter_mm for a in avoid + out):
            out.append(c)
        if len(out) == n:
            break
    return out
