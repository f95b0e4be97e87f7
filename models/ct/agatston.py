"""Coronary artery calcium scoring: Agatston, volume and mass scores (pure functions).

Agatston score (Agatston et al., JACC 1990; SCCT guidance): on each axial slice, lesions
are 2-D connected regions (8-connectivity) of voxels ≥ 130 HU with area ≥ 1 mm²; each
lesion contributes ``area_mm2 × w`` where the density weight ``w`` comes from the lesion's
peak HU (130–199 → 1, 200–299 → 2, 300–399 → 3, ≥ 400 → 4).  The reference protocol
uses contiguous 3 mm slices; for another slice increment the sum is scaled by
``increment / 3 mm`` (so a lesion keeps its score when reconstructed at 1.5 mm).
Volume score: calcified area × slice increment (mm³).  Mass score:
``c × mean HU × volume`` with the scanner's calibration factor ``c`` in mg/cm³ per HU
(from a hydroxyapatite phantom; the default is a typical 120 kVp value).
Risk category (per total Agatston): 0, 1–99, 100–399, ≥ 400.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

THRESHOLD_HU = 130.0
MIN_AREA_MM2 = 1.0
REFERENCE_INCREMENT_MM = 3.0
DEFAULT_CALIBRATION_MG_PER_CM3_PER_HU = 0.743  # typical 120 kVp; replace with the site's phantom value
ARTERIES = {1: "LM", 2: "LAD", 3: "LCX", 4: "RCA"}
_EIGHT = np.ones((3, 3), dtype=bool)


def density_weight(peak_hu: float) -> int:
    """Agatston density factor from a lesion's peak HU (0 below 130 HU)."""
    if peak_hu < 130:
        return 0
    if peak_hu < 200:
        return 1
    if peak_hu < 300:
        return 2
    if peak_hu < 400:
        return 3
    return 4


def category(agatston: float) -> str:
    """Risk category of a total Agatston score: "0", "1-99", "100-399" or ">=400"."""
    if agatston <= 0:
        return "0"
    if agatston < 100:
        return "1-99"
    if agatston < 400:
        return "100-399"
    return ">=400"


@dataclass
class SliceLesion:
    """One 2-D lesion on one slice."""

    slice_index: int
    area_mm2: float
    peak_hu: float
    mean_hu: float
    weight: int
    score: float  # area × weight, before increment normalisation
    artery: str | None
    pixels: tuple[np.ndarray, np.ndarray] = field(repr=False)


@dataclass
class CalciumScore:
    agatston: float
    volume_mm3: float
    mass_mg: float
    per_artery: dict[str, dict[str, float]]
    category: str
    lesions: list[SliceLesion]
    mask: np.ndarray  # uint8 (z, y, x): 1 where a counted lesion is
    increment_mm: float

    def to_json(self) -> dict[str, Any]:
        return {"agatston": round(self.agatston, 3), "volume_mm3": round(self.volume_mm3, 3),
                "mass_mg": round(self.mass_mg, 3),
                "per_artery": {k: {m: round(x, 3) for m, x in v.items()} for k, v in self.per_artery.items()},
                "category": self.category, "n_lesions_2d": len(self.lesions),
                "slice_increment_mm": self.increment_mm}


def score(hu: np.ndarray, spacing: tuple[float, float, float], region: np.ndarray | None = None,
          territories: np.ndarray | None = None, *, threshold: float = THRESHOLD_HU,
          min_area_mm2: float = MIN_AREA_MM2, reference_increment_mm: float = REFERENCE_INCREMENT_MM,
          calibration: float = DEFAULT_CALIBRATION_MG_PER_CM3_PER_HU) -> CalciumScore:
    """Agatston, volume and mass scores of an axial volume.

    Parameters
    ----------
    hu : (z, y, x) HU, axial slices
    spacing : (slice increment, row spacing, column spacing) in mm
    region : optional bool mask; only voxels inside count (coronary territory)
    territories : optional int map (0 none, 1 LM, 2 LAD, 3 LCX, 4 RCA); a lesion goes to the
        artery holding most of its pixels (unattributed lesions go to "unassigned")
    """
    hu = np.asarray(hu, dtype=np.float32)
    dz, dy, dx = (float(s) for s in spacing)
    pix_area = dy * dx
    cand = hu >= threshold
    if region is not None:
        cand &= region.astype(bool)
    mask = np.zeros(hu.shape, dtype=np.uint8)
    lesions: list[SliceLesion] = []
    for z in np.nonzero(cand.any(axis=(1, 2)))[0]:
        lab, n = ndimage.label(cand[z], structure=_EIGHT)
        if n == 0:
            continue
        objs = ndimage.find_objects(lab)
        for i, sl in enumerate(objs, start=1):
            local = lab[sl] == i
            area = float(local.sum()) * pix_area
            if area < min_area_mm2:
                continue
            vals = hu[z][sl][local]
            peak = float(vals.max())
            w = density_weight(peak)
            rr, cc = np.nonzero(local)
            rr = rr + sl[0].start
            cc = cc + sl[1].start
            artery = None
            if territories is not None:
                t = territories[z, rr, cc]
                t = t[t > 0]
                if t.size:
                    artery = ARTERIES.get(int(np.bincount(t.astype(np.int64)).argmax()))
            lesions.append(SliceLesion(int(z), area, peak, float(vals.mean()), w, area * w, artery, (rr, cc)))
            mask[z, rr, cc] = 1
    norm = dz / reference_increment_mm
    per: dict[str, dict[str, float]] = {}
    total = vol = mass = 0.0
    for les in lesions:
        s = les.score * norm
        v = les.area_mm2 * dz
        m = calibration * les.mean_hu * v / 1000.0
        total += s; vol += v; mass += m
        if territories is not None:
            key = les.artery or "unassigned"
            d = per.setdefault(key, {"agatston": 0.0, "volume_mm3": 0.0, "mass_mg": 0.0})
            d["agatston"] += s; d["volume_mm3"] += v; d["mass_mg"] += m
    if territories is not None:
        for name in ARTERIES.values():
            per.setdefault(name, {"agatston": 0.0, "volume_mm3": 0.0, "mass_mg": 0.0})
    return CalciumScore(total, vol, mass, per, category(total), lesions, mask, dz)
