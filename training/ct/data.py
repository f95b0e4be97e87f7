"""Training/evaluation data for the CT networks, built from the real TotalSegmentator CT
in ``../shared/data/ct/totalseg`` with synthetic lesions (numpy only; no torch here).

Nodules: the 1.5 mm aortic crop (real lungs, HU lung mask) is split by slice: slices
``< NODULE_SPLIT_Z`` train, slices ``≥ NODULE_SPLIT_Z + 8`` are the held-out region; the
30-slice lung-base volume (real lobe masks, another reconstruction) is a held-out volume.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.ct.lungs import lung_mask
from models.ct.nodules import PATCH, SPACING, normalise
from models.ct.volume import CTVolume, read_nifti, resample, resample_mask
from training.synthesis.ct_nodules import insert_nodule, random_spec, sample_centres

NODULE_SPLIT_Z = 100
LOBE_FILES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right",
              "lung_upper_lobe_left", "lung_lower_lobe_left")


def totalseg_dir() -> Path:
    root = Path(os.environ.get("MEDWS_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    return root / "ct" / "totalseg"


def sub_volume(vol: CTVolume, z0: int, z1: int) -> CTVolume:
    """Slices ``z0:z1`` with the origin moved accordingly."""
    origin = vol.voxel_to_patient([z0, 0, 0])
    return CTVolume(vol.hu[z0:z1].copy(), vol.spacing, origin, vol.direction.copy(), dict(vol.meta))


@dataclass
class LungVolume:
    vol: CTVolume
    lungs: np.ndarray
    lobes: np.ndarray | None = None
    _dist: np.ndarray | None = None
    _pts: np.ndarray | None = None

    @property
    def dist(self) -> np.ndarray:
        if self._dist is None:
            from scipy import ndimage

            self._dist = ndimage.distance_transform_edt(self.lungs, sampling=self.vol.spacing)
        return self._dist

    @property
    def points(self) -> np.ndarray:
        if self._pts is None:
            self._pts = np.argwhere(self.lungs)
        return self._pts


def nodule_volumes() -> dict[str, LungVolume]:
    """{"train", "heldout_region", "heldout_volume"} lung volumes at 1.5 mm."""
    d = totalseg_dir()
    ao = read_nifti(d / "aortic_crop" / "ct_cropped.nii.gz")
    tr = sub_volume(ao, 0, NODULE_SPLIT_Z)
    te = sub_volume(ao, NODULE_SPLIT_Z + 8, ao.shape[0])
    out = {"train": LungVolume(tr, lung_mask(tr.hu, tr.spacing)),
           "heldout_region": LungVolume(te, lung_mask(te.hu, te.spacing))}
    sm = read_nifti(d / "example_ct_sm.nii.gz")
    lobes = np.zeros(sm.shape, np.uint8)
    for k, name in enumerate(LOBE_FILES, start=1):
        m = read_nifti(d / "masks" / f"{name}.nii.gz").hu > 0
        lobes[m] = k
    w = resample(sm, SPACING)
    lb = resample_mask(lobes, sm, w)
    out["heldout_volume"] = LungVolume(w, lb > 0, lb)
    return out


def nodule_case(lv: LungVolume, rng: np.random.Generator, n_nodules: int = 2,
                diameter_range=(4.0, 30.0)) -> tuple[CTVolume, np.ndarray, list[dict]]:
    """A whole-volume case with ``n_nodules`` inserted nodules: (volume, label map, specs)."""
    hu = lv.vol.hu
    labels = np.zeros(hu.shape, np.uint8)
    specs: list[dict] = []
    placed: list[np.ndarray] = []
    for k in range(1, n_nodules + 1):
        d = float(np.exp(rng.uniform(np.log(diameter_range[0]), np.log(diameter_range[1]))))
        cs = sample_centres(lv.lungs, lv.vol.spacing, d, rng, 1, avoid=placed, dist=lv.dist)
        if not cs:
            continue
        spec = random_spec(rng, cs[0], (d, d))
        hu, m = insert_nodule(hu, lv.vol.spacing, spec, rng)
        labels[m & (labels == 0)] = k
        placed.append(cs[0])
        specs.append(spec.to_json())
    return lv.vol.with_array(hu), labels, specs


def nodule_patch(lv: LungVolume, rng: np.random.Generator, size: int = 48, p_pos: float = 0.7
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One training patch (normalised image, mask), with a nodule with probability ``p_pos``."""
    hu, lungs, sp = lv.vol.hu, lv.lungs, lv.vol.spacing
    shape = np.array(hu.shape)
    if rng.random() < p_pos:
        d = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
        c = sample_centres(lungs, sp, d, rng, 1, dist=lv.dist)
        c = c[0] if c else lv.points[rng.integers(len(lv.points))].astype(float)
        spec = random_spec(rng, c, (d, d))
        off = rng.integers(-size // 4, size // 4 + 1, 3)
        centre = c.astype(int) + off
    else:
        spec = None
        centre = lv.points[rng.integers(len(lv.points))]
    lo = np.clip(centre - size // 2, 0, np.maximum(shape - size, 0))
    sl = tuple(slice(int(a), int(a) + size) for a in lo)
    img = hu[sl]
    mask = np.zeros(img.shape, bool)
    if spec is not None:
        local = type(spec)(**{**spec.__dict__, "centre_zyx": tuple(np.asarray(spec.centre_zyx) - lo)})
        img, mask = insert_nodule(img, sp, local, rng)
    img = normalise(img)
    pad = [(0, size - n) for n in img.shape]
    img = np.pad(img, pad)
    mask = np.pad(mask, pad)
    for ax in range(3):  # flips (the lung is roughly symmetric)
        if rng.random() < 0.5:
            img = np.flip(img, ax)
            mask = np.flip(mask, ax)
    img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(mask, np.float32)


assert PATCH % 16 == 0
