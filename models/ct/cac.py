"""Coronary artery calcium task: gated non-contrast cardiac CT → Agatston, volume, mass,
per artery and risk category.

Rule-based by definition (the Agatston standard); no ONNX model.  The coronary territory
is the heart region (given masks, or estimated: the mediastinum enclosed by the lungs)
minus bone (large calcified components: spine, sternum, ribs), minus the aortic wall and
valve (a given aorta mask dilated, else a band in front of the spine where the descending
aorta lies).  Arteries are attributed by position around the heart centre (approximate).
Same task shape as the chest X-ray pipeline: ``pre_process → predict → post_process``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from models.ct import agatston
from models.ct.lungs import lung_mask
from models.ct.volume import CTVolume

logger = logging.getLogger(__name__)

MODEL_NAME = "ct-cac-agatston"
MODEL_VERSION = "1.0.0"


def _ball(radius_vox: tuple[int, int, int]) -> np.ndarray:
    rz, ry, rx = (max(0, r) for r in radius_vox)
    z, y, x = np.ogrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]
    return ((z / max(rz, 1e-6)) ** 2 * (rz > 0) + (y / max(ry, 1e-6)) ** 2 * (ry > 0)
            + (x / max(rx, 1e-6)) ** 2 * (rx > 0)) <= 1.0


def _dilate_mm(m: np.ndarray, spacing, mm: float) -> np.ndarray:
    r = tuple(int(round(mm / s)) for s in spacing)
    if max(r) == 0:
        return m
    return ndimage.binary_dilation(m, structure=_ball(r))


def bone_mask(hu: np.ndarray, spacing, min_volume_mm3: float = 1500.0, threshold: float = 130.0) -> np.ndarray:
    """Bone: 3-D components ≥ ``threshold`` HU larger than ``min_volume_mm3`` (coronary calcium
    lesions are far smaller), plus their holes (marrow)."""
    m = hu >= threshold
    lab, n = ndimage.label(m, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return m
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1)) * float(np.prod(spacing))
    big = np.isin(lab, np.nonzero(sizes >= min_volume_mm3)[0] + 1)
    return np.stack([ndimage.binary_fill_holes(s) for s in big])


def estimate_heart_region(hu: np.ndarray, spacing, lungs: np.ndarray | None = None) -> np.ndarray:
    """Heart region of a chest CT without masks: per slice, the convex hull of both lungs
    minus the lungs (the mediastinum), on slices whose mediastinal area is ≥ 40 % of the
    largest (the heart is the widest mediastinal structure)."""
    from skimage.morphology import convex_hull_image

    if lungs is None:
        lungs = lung_mask(hu, spacing)
    region = np.zeros(hu.shape, bool)
    for z in range(hu.shape[0]):
        if lungs[z].sum() < 50:
            continue
        hull = convex_hull_image(lungs[z])
        med = hull & ~ndimage.binary_dilation(lungs[z], iterations=1) & (hu[z] > -300)
        region[z] = med
    areas = region.sum(axis=(1, 2))
    if areas.max() == 0:
        return region
    region[areas < 0.4 * areas.max()] = False
    return region


def territories(heart: np.ndarray, direction: np.ndarray, spacing) -> np.ndarray:
    """Approximate coronary territories by position around the heart centre (axial plane):
    RCA on the patient's right, LAD anterior-left, LCX posterior-left, LM within the top
    20 mm of the region on the left-anterior side.  Returns 0/1 LM/2 LAD/3 LCX/4 RCA."""
    out = np.zeros(heart.shape, np.uint8)
    zz, yy, xx = np.nonzero(heart)
    if zz.size == 0:
        return out
    c = np.array([zz.mean(), yy.mean(), xx.mean()])
    sx = np.sign(direction[0, 0]) or 1.0   # +column → patient left when > 0
    sy = np.sign(direction[1, 1]) or 1.0   # +row → posterior when > 0
    sz = np.sign(direction[2, 2]) or 1.0   # +slice → head when > 0
    left = (xx - c[2]) * sx > 0
    post = (yy - c[1]) * sy > 0
    height_mm = (zz - (zz.max() if sz > 0 else zz.min())) * spacing[0] * sz  # ≤ 0, 0 at top
    lab = np.where(~left, 4, np.where(post, 3, 2))
    lab = np.where(left & ~post & (height_mm > -20.0), 1, lab)
    out[zz, yy, xx] = lab
    return out


@dataclass
class CACInput:
    hu: np.ndarray
    spacing: tuple[float, float, float]
    region: np.ndarray
    territories: np.ndarray
    excluded: dict[str, int]
    volume: CTVolume


class CACPipeline:
    """Coronary calcium: ``pre_process`` (territory), ``predict`` (Agatston; no ONNX model —
    the score is a definition), ``post_process`` (JSON findings)."""

    name = MODEL_NAME
    version = MODEL_VERSION

    def __init__(self, calibration: float = agatston.DEFAULT_CALIBRATION_MG_PER_CM3_PER_HU,
                 aorta_band_mm: float = 30.0) -> None:
        self.calibration = calibration
        self.aorta_band_mm = aorta_band_mm

    def pre_process(self, vol: CTVolume, heart: np.ndarray | None = None, aorta: np.ndarray | None = None
                    ) -> CACInput:
        hu, sp = vol.hu, vol.spacing
        if heart is None:
            heart = estimate_heart_region(hu, sp)
            source = "estimated"
        else:
            heart = heart.astype(bool)
            source = "given"
        region = _dilate_mm(heart, sp, 3.0)  # epicardial arteries run on the heart surface
        bone = _dilate_mm(bone_mask(hu, sp), sp, 2.0)
        excluded = {"bone_voxels": int((region & bone).sum())}
        region &= ~bone
        if aorta is not None:
            ao = _dilate_mm(aorta.astype(bool), sp, 3.0)  # wall and valve
            excluded["aorta_voxels"] = int((region & ao).sum())
            region &= ~ao
        elif self.aorta_band_mm > 0:
            band = self._descending_aorta_band(hu, sp, vol.direction, bone)
            excluded["aorta_band_voxels"] = int((region & band).sum())
            region &= ~band
        terr = territories(heart, vol.direction, sp)
        terr = np.where(region, ndimage.grey_dilation(terr, size=(1, 7, 7)), 0).astype(np.uint8)
        excluded["heart_region"] = source  # type: ignore[assignment]
        return CACInput(hu, sp, region, terr, excluded, vol)

    def _descending_aorta_band(self, hu, sp, direction, bone) -> np.ndarray:
        """Voxels within ``aorta_band_mm`` in front of the vertebral bodies (the descending aorta)."""
        band = np.zeros(hu.shape, bool)
        sy = np.sign(direction[1, 1]) or 1.0
        for z in range(hu.shape[0]):
            b = bone[z]
            if not b.any():
                continue
            lab, n = ndimage.label(b)
            sizes = ndimage.sum_labels(b, lab, np.arange(1, n + 1))
            spine = lab == (int(np.argmax(sizes)) + 1)  # the vertebra is the largest bone section
            rows = np.nonzero(spine.any(axis=1))[0]
            cols = np.nonzero(spine.any(axis=0))[0]
            front = rows.min() if sy > 0 else rows.max()
            reach = int(round(self.aorta_band_mm / sp[1]))
            r0, r1 = (max(0, front - reach), front) if sy > 0 else (front, min(hu.shape[1], front + reach))
            c0, c1 = max(0, cols.min() - reach // 2), min(hu.shape[2], cols.max() + reach // 2)
            band[z, r0:r1 + 1, c0:c1 + 1] = True
        return band

    def predict(self, x: CACInput) -> agatston.CalciumScore:
        return agatston.score(x.hu, x.spacing, x.region, x.territories, calibration=self.calibration)

    def post_process(self, s: agatston.CalciumScore, x: CACInput) -> dict[str, Any]:
        out = s.to_json()
        vol = x.volume
        lab, n = ndimage.label(s.mask, structure=np.ones((3, 3, 3), bool))
        findings = []
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            m = lab == i
            zz, yy, xx = np.nonzero(m)
            centre = np.array([zz.mean(), yy.mean(), xx.mean()])
            t = x.territories[m]
            t = t[t > 0]
            findings.append({
                "label": "coronary calcium",
                "artery": agatston.ARTERIES.get(int(np.bincount(t).argmax())) if t.size else None,
                "centre_voxel_zyx": [round(float(v), 2) for v in centre],
                "centre_patient_mm": [round(float(v), 2) for v in vol.voxel_to_patient(centre)],
                "volume_mm3": round(float(m.sum() * vol.voxel_volume_mm3), 2),
                "mean_hu": round(float(x.hu[m].mean()), 1), "peak_hu": round(float(x.hu[m].max()), 1),
                "mask_label": i,
            })
        out.update({"task": "cac", "model": self.name, "version": self.version,
                    "findings": findings, "per_artery_method": "position around the heart centre (approximate)",
                    "region": x.excluded, "calibration_mg_per_cm3_per_hu": self.calibration})
        out["_mask"] = lab.astype(np.uint16)  # label map for SEG (not JSON; dropped by run_json)
        return out

    def __call__(self, vol: CTVolume, heart: np.ndarray | None = None, aorta: np.ndarray | None = None
                 ) -> dict[str, Any]:
        x = self.pre_process(vol, heart, aorta)
        return self.post_process(self.predict(x), x)

