"""Multi-phase liver CT simulated from one real non-contrast CT (numpy/scipy only).

Phase enhancement (HU added to the non-contrast scan) per tissue, typical adult values:

=========  ========  =======  =============  =======
tissue     arterial  portal   delayed (3 min)  mask
=========  ========  =======  =============  =======
aorta      250       130      70             real
liver      15        55       35             real
spleen     70        65       40             real
kidneys    140       130      90             real
soft tissue 5        10       8              -100…150 HU elsewhere
=========  ========  =======  =============  =======

Lesions (sphere-like, lobulated, 5–40 mm), enhancement relative to the non-contrast
lesion (which is 5–20 HU below the liver):
- ``hcc``: arterial hyperenhancement (+40…80 HU over the arterial liver), washout in the
  portal and delayed phases (15–35 HU below the liver), enhancing capsule (rim +30 HU in
  portal/delayed) with probability 0.6;
- ``metastasis``: hypo-enhancing in every phase (rim arterial enhancement sometimes);
- ``cyst``: water attenuation (0–15 HU), no enhancement.
Each non-portal phase is then moved by a small known rigid transform (registration must
recover it); the portal-venous phase is the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from training.synthesis.ct_nodules import _profile

PHASES = ("non-contrast", "arterial", "portal-venous", "delayed")
ENHANCEMENT = {  # HU over non-contrast
    "aorta": {"non-contrast": 0, "arterial": 250, "portal-venous": 130, "delayed": 70},
    "liver": {"non-contrast": 0, "arterial": 15, "portal-venous": 55, "delayed": 35},
    "spleen": {"non-contrast": 0, "arterial": 70, "portal-venous": 65, "delayed": 40},
    "kidney": {"non-contrast": 0, "arterial": 140, "portal-venous": 130, "delayed": 90},
    "soft": {"non-contrast": 0, "arterial": 5, "portal-venous": 10, "delayed": 8},
}
LESION_TYPES = ("hcc", "metastasis", "cyst")
# seconds after contrast start, for simulated headers
PHASE_TIMES = {"non-contrast": None, "arterial": 35.0, "portal-venous": 75.0, "delayed": 180.0}


@dataclass
class LiverLesion:
    centre_zyx: tuple[float, float, float]
    diameter_mm: float
    type: str
    nc_delta: float  # non-contrast lesion − liver
    enh: dict[str, float]  # lesion enhancement over its non-contrast HU, per phase
    capsule: bool
    seed: int
    aphe: bool = False
    washout: bool = False

    def to_json(self) -> dict:
        return {"centre_zyx": list(self.centre_zyx), "diameter_mm": self.diameter_mm, "type": self.type,
                "arterial_hyperenhancement": self.aphe, "washout": self.washout, "capsule": self.capsule}


def random_lesion(rng: np.random.Generator, centre, diameter_mm: float, kind: str | None = None) -> LiverLesion:
    kind = kind or str(rng.choice(LESION_TYPES, p=(0.45, 0.35, 0.2)))
    d = float(rng.uniform(5, 20))
    L = ENHANCEMENT["liver"]
    if kind == "hcc":
        wash = float(rng.uniform(15, 35))
        enh = {"non-contrast": 0.0, "arterial": L["arterial"] + d + float(rng.uniform(40, 80)),
               "portal-venous": L["portal-venous"] + d - wash, "delayed": L["delayed"] + d - wash}
        return LiverLesion(tuple(centre), diameter_mm, kind, -d, enh, bool(rng.random() < 0.6),
                           int(rng.integers(1 << 30)), True, True)
    if kind == "metastasis":
        f = float(rng.uniform(0.2, 0.5))
        enh = {p: L[p] * f for p in PHASES}
        return LiverLesion(tuple(centre), diameter_mm, kind, -d, enh, False, int(rng.integers(1 << 30)))
    enh = {p: 0.0 for p in PHASES}
    return LiverLesion(tuple(centre), diameter_mm, "cyst", 0.0, enh, False, int(rng.integers(1 << 30)))


@dataclass
class MultiPhase:
    phases: dict[str, np.ndarray]  # phase → HU (after misalignment)
    aligned: dict[str, np.ndarray]  # phase → HU before misalignment (on the portal grid)
    lesion_labels: np.ndarray  # on the portal-venous grid, 1..n
    lesions: list[LiverLesion]
    transforms: dict[str, dict] = field(default_factory=dict)  # phase → rigid params (deg, mm)


def tissue_maps(hu: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Soft (smoothed) tissue weights for the enhancement table."""
    out = {}
    used = np.zeros(hu.shape, bool)
    for k in ("aorta", "liver", "spleen", "kidney"):
        m = masks.get(k)
        if m is None:
            continue
        out[k] = ndimage.gaussian_filter(m.astype(np.float32), 0.7)
        used |= m
    soft = (hu > -100) & (hu < 150) & ~ndimage.binary_dilation(used, iterations=1)
    out["soft"] = soft.astype(np.float32)
    return out


def rigid_matrix(angles_deg, spacing) -> np.ndarray:
    """Rotation about the volume centre (z, y, x Euler angles) in mm, as a 3×3 matrix (zyx order)."""
    a, b, c = np.radians(angles_deg)
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])  # about z axis (y-x plane)
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def move(hu: np.ndarray, spacing, angles_deg, shift_mm, fill: float = -1024.0) -> np.ndarray:
    """Apply a rigid motion (rotation about the volume centre, then a shift, zyx mm) to a volume."""
    sp = np.asarray(spacing, float)
    R = rigid_matrix(angles_deg, sp)
    centre = (np.asarray(hu.shape) - 1) / 2 * sp
    # output mm p_out = R (p_in - c) + c + t  →  p_in = R^T (p_out - c - t) + c
    Rinv = R.T
    mat = np.diag(1 / sp) @ Rinv @ np.diag(sp)
    offset = (centre - Rinv @ (centre + np.asarray(shift_mm, float))) / sp
    return ndimage.affine_transform(hu, mat, offset=offset, order=1, mode="nearest")


def simulate(nc_hu: np.ndarray, spacing, masks: dict[str, np.ndarray], rng: np.random.Generator,
             n_lesions: int = 2, diameter_range=(5.0, 40.0), misalign: bool = True,
             max_rot_deg: float = 3.0, max_shift_mm: float = 6.0, noise_hu: float = 8.0,
             kinds: tuple[str, ...] | None = None, cache: dict | None = None) -> MultiPhase:
    """Four phases from a non-contrast volume with ``n_lesions`` liver lesions
    (``cache``: a dict reused between calls on the same volume for tissue maps/distances)."""
    liver = masks["liver"].astype(bool)
    cache = {} if cache is None else cache
    if "tm" not in cache:
        cache["tm"] = tissue_maps(nc_hu, masks)
        cache["dist"] = ndimage.distance_transform_edt(liver, sampling=spacing)
    tm, dist = cache["tm"], cache["dist"]
    labels = np.zeros(nc_hu.shape, np.uint8)
    lesions: list[LiverLesion] = []
    profiles = []
    for k in range(1, n_lesions + 1):
        d = float(np.exp(rng.uniform(np.log(diameter_range[0]), np.log(diameter_range[1]))))
        ok = np.argwhere((dist >= max(3.0, 0.55 * d)) & (labels == 0))
        if len(ok) == 0:
            continue
        for _ in range(50):
            c = ok[rng.integers(len(ok))].astype(float)
            if all(np.linalg.norm((c - np.asarray(l.centre_zyx)) * spacing) > (d + l.diameter_mm) / 2 + 5
                   for l in lesions):
                break
        else:
            continue
        kind = None if kinds is None else str(rng.choice(kinds))
        les = random_lesion(rng, c, d, kind)
        rad = np.array([d / 2 / s for s in spacing])
        m = np.ceil(rad + 3 / np.asarray(spacing) + 2).astype(int)
        lo = np.maximum(c.astype(int) - m, 0)
        hi = np.minimum(c.astype(int) + m + 1, nc_hu.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        shape = tuple(int(b - a) for a, b in zip(lo, hi))
        p = np.zeros(nc_hu.shape, np.float32)
        p[box] = _profile(shape, c - lo, rad, (1.0, 1.0, 1.0), 0.1, les.seed, edge_vox=0.5) * liver[box]
        rim = None
        if les.capsule:
            outer = _profile(shape, c - lo, rad + 1.5 / np.asarray(spacing), (1.0, 1.0, 1.0), 0.1, les.seed,
                             edge_vox=0.5)
            rim = np.zeros(nc_hu.shape, np.float32)
            rim[box] = np.clip(outer - p[box], 0, 1) * liver[box]
        labels[(p >= 0.5) & (labels == 0)] = k
        lesions.append(les)
        profiles.append((p, rim, box))
    aligned = {}
    liver_nc = float(np.median(nc_hu[liver]))
    for ph in PHASES:
        out = nc_hu.astype(np.float32).copy()
        for tissue, w in tm.items():
            out += w * ENHANCEMENT[tissue][ph]
        for les, (p_full, rim_full, box) in zip(lesions, profiles):
            p = p_full[box]
            rim = None if rim_full is None else rim_full[box]
            sub = out[box]
            base = (liver_nc + 10.0) if les.type == "cyst" else liver_nc + les.nc_delta
            if les.type == "cyst":
                base = float(rng.uniform(0, 15)) if ph == "non-contrast" else base
            target = base + les.enh[ph]
            target = 8.0 if les.type == "cyst" else target
            cur_liver = liver_nc + ENHANCEMENT["liver"][ph]
            tex = ndimage.gaussian_filter(rng.normal(0, 6, p.shape).astype(np.float32), 1.0)
            sub = sub * (1 - p) + (target + tex + (sub - cur_liver) * 0.3) * p
            if rim is not None and ph in ("portal-venous", "delayed"):
                sub += rim * 30.0
            out[box] = sub
        out += rng.normal(0, noise_hu, out.shape).astype(np.float32)
        aligned[ph] = out
    phases = {}
    transforms = {}
    for ph, arr in aligned.items():
        if misalign and ph != "portal-venous":
            ang = rng.uniform(-max_rot_deg, max_rot_deg, 3)
            sh = rng.uniform(-max_shift_mm, max_shift_mm, 3)
            phases[ph] = move(arr, spacing, ang, sh)
            transforms[ph] = {"angles_deg": ang.tolist(), "shift_mm_zyx": sh.tolist()}
        else:
            phases[ph] = arr
            transforms[ph] = {"angles_deg": [0.0, 0.0, 0.0], "shift_mm_zyx": [0.0, 0.0, 0.0]}
    return MultiPhase(phases, aligned, labels, lesions, transforms)
