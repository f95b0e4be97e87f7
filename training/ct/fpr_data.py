"""Training samples of the nodule false-positive-reduction classifier (numpy only).

Positives: nodules (4-30 mm, all types) inserted on the fly at random lung positions of the
TRAINING region (slices < ``NODULE_SPLIT_Z`` of the 1.5 mm crop), patch centred near the
nodule (jitter like a blob detector's offset).  Negatives: the candidates
(:func:`models.ct.blobs.lung_candidates`, both passes) of the same region without nodules:
vessels, bifurcations, fissures, walls.  Every source exists five times: as reconstructed,
degraded to 3 mm and to 2 mm isotropic, with 3 mm slices, and with a soft kernel plus noise
(other reconstructions of the training region, each resampled back to 1.5 mm), plus random
blur / flips / axis permutations / contrast / noise per patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.ct.blobs import lung_candidates
from models.ct.lungs import lung_mask
from models.ct.nodules import FPR_PATCH, candidate_patches
from models.ct.volume import CTVolume, resample
from training.ct.data import LungVolume
from training.synthesis.ct_nodules import insert_nodule, random_spec


def lowres_copy(vol: CTVolume, spacing_mm: float = 3.0) -> CTVolume:
    """``vol`` resampled to ``spacing_mm`` isotropic and back onto its own grid (linear)."""
    import SimpleITK as sitk

    low = resample(vol, (spacing_mm,) * 3)
    out = sitk.Resample(low.to_sitk(), vol.to_sitk(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return vol.with_array(sitk.GetArrayFromImage(out))


def thick_copy(vol: CTVolume, slice_mm: float = 3.0) -> CTVolume:
    """``vol`` with ``slice_mm`` thick slices (in-plane spacing kept), back on its own grid:
    a thick-slice reconstruction of the same anatomy."""
    import SimpleITK as sitk

    sp = vol.spacing
    low = resample(vol, (slice_mm, sp[1], sp[2]))
    out = sitk.Resample(low.to_sitk(), vol.to_sitk(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return vol.with_array(sitk.GetArrayFromImage(out))


def smooth_copy(vol: CTVolume, sigma_mm: float = 1.2, noise_hu: float = 0.0, seed: int = 0) -> CTVolume:
    """``vol`` blurred (a soft reconstruction kernel) with optional added noise."""
    hu = ndimage.gaussian_filter(vol.hu.astype(np.float32), sigma_mm / np.asarray(vol.spacing))
    if noise_hu > 0:
        hu = hu + np.random.default_rng(seed).normal(0, noise_hu, hu.shape).astype(np.float32)
    return vol.with_array(hu)


def candidate_region(lungs: np.ndarray) -> np.ndarray:
    """Where candidates are searched: the lungs dilated by 3 voxels (4.5 mm)."""
    return ndimage.binary_dilation(lungs, iterations=3)


@dataclass
class FprSource:
    lv: LungVolume
    negatives: np.ndarray  # (N, 3) candidate voxel centres
    name: str
    _depth: np.ndarray | None = None

    def nodule_centre(self, diameter_mm: float, rng: np.random.Generator) -> np.ndarray:
        """A random lung voxel deep enough for the nodule (as :func:`sample_centres`, cached)."""
        if self._depth is None:
            pts = self.lv.points
            self._depth = self.lv.dist[tuple(pts.T)]
        ok = np.nonzero(self._depth >= max(1.5, 0.6 * diameter_mm / 2))[0]
        if not len(ok):
            return self.lv.points[rng.integers(len(self.lv.points))].astype(float)
        return self.lv.points[ok[rng.integers(len(ok))]].astype(float)


SOURCE_KINDS = ("sharp", "lowres3mm", "lowres2mm", "thick3mm", "smooth")


def fpr_sources(train_lv: LungVolume, floor: float = 4.0, max_candidates: int = 1500,
                kinds: tuple[str, ...] = SOURCE_KINDS) -> list[FprSource]:
    """The training region as reconstructed and as other reconstructions of it (3 mm and
    2 mm isotropic, 3 mm slices, soft kernel + noise), each with the candidates of
    :func:`models.ct.blobs.lung_candidates` (both passes, as at inference)."""
    make = {"sharp": lambda v: v, "lowres3mm": lowres_copy, "lowres2mm": lambda v: lowres_copy(v, 2.0),
            "thick3mm": thick_copy, "smooth": lambda v: smooth_copy(v, 1.2, 15.0)}
    out = []
    for name in kinds:
        vol = make[name](train_lv.vol)
        lungs = lung_mask(vol.hu, vol.spacing)
        c = lung_candidates(vol.hu, vol.spacing, lungs, floor=floor, max_candidates=max_candidates)
        out.append(FprSource(LungVolume(vol, lungs), np.array([x.zyx for x in c]), name))
    return out


def _augment(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, flips, axis permutations (1.5 mm is isotropic), contrast/brightness and noise."""
    if rng.random() < 0.3:
        p = ndimage.gaussian_filter(p, float(rng.uniform(0.3, 1.0)))
    for ax in range(3):
        if rng.random() < 0.5:
            p = np.flip(p, ax)
    if rng.random() < 0.5:
        p = np.swapaxes(p, 1, 2)
    if rng.random() < 0.2:  # z with an in-plane axis
        p = np.swapaxes(p, 0, int(rng.integers(1, 3)))
    if rng.random() < 0.5:  # scanner calibration / kernel: ±5 % contrast, ±20 HU offset
        p = p * float(rng.uniform(0.95, 1.05)) + float(rng.uniform(-20, 20)) / 1400.0
    p = p + rng.normal(0, float(rng.uniform(0.0, 0.03)), p.shape).astype(np.float32)
    return np.ascontiguousarray(p, np.float32)


def fpr_sample(sources: list[FprSource], rng: np.random.Generator, p_pos: float = 0.4,
               size: int = FPR_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """(patch [size]^3 normalised, label [1]) from a random source."""
    src = sources[rng.integers(len(sources))]
    hu = src.lv.vol.hu
    sp = src.lv.vol.spacing
    if rng.random() < p_pos:
        d = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
        c = src.nodule_centre(d, rng)
        spec = random_spec(rng, c, (d, d))
        half = size // 2 + 4
        lo = np.maximum(np.round(c).astype(int) - half, 0)
        hi = np.minimum(np.round(c).astype(int) + half, hu.shape)
        crop = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        local = type(spec)(**{**spec.__dict__, "centre_zyx": tuple(np.asarray(c) - lo)})
        crop, _ = insert_nodule(crop, sp, local, rng)
        j = int(np.clip(round(0.3 * d / 2 / sp[0]), 1, 3))
        centre = np.asarray(c) - lo + rng.integers(-j, j + 1, 3)
        patch = candidate_patches(crop, centre[None], size)[0]
        label = 1.0
    else:
        if rng.random() < 0.9 and len(src.negatives):
            centre = src.negatives[rng.integers(len(src.negatives))] + rng.integers(-1, 2, 3)
        else:
            centre = src.lv.points[rng.integers(len(src.lv.points))]
        patch = candidate_patches(hu, np.asarray(centre, float)[None], size)[0]
        label = 0.0
    return _augment(patch, rng), np.array([label], np.float32)
