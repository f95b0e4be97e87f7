"""Coronary-region calcium insertion and blood-pool de-contrasting (numpy only).

Used to build non-contrast cardiac test volumes from the real contrast-enhanced cardiac
crop: the contrast-filled blood pool (the largest ≥ 150 HU component) is set to blood
attenuation, then calcified plaques with known voxels and HU are written in.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def decontrast_blood_pool(hu: np.ndarray, threshold: float = 150.0, blood_hu: float = 40.0,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a non-contrast scan: every enhanced non-bone voxel (≥ 90 HU) becomes
    ``blood_hu`` ± 8 HU.  Bone = components ≥ ``threshold`` HU other than the contrast-filled
    blood pool (the largest component after a 3-voxel erosion separates them).

    Returns (new volume, de-contrasted mask)."""
    rng = np.random.default_rng(seed)
    hi = hu >= threshold
    core = ndimage.binary_erosion(hi, iterations=3)
    lab, n = ndimage.label(core)
    if n == 0:
        return hu.astype(np.float32).copy(), np.zeros(hu.shape, bool)
    sizes = ndimage.sum_labels(core, lab, np.arange(1, n + 1))
    pool = ndimage.binary_dilation(lab == (int(np.argmax(sizes)) + 1), iterations=5) & hi
    bone = hi & ~pool
    lab2, n2 = ndimage.label(bone)
    if n2:
        s2 = ndimage.sum_labels(bone, lab2, np.arange(1, n2 + 1))
        bone = np.isin(lab2, np.nonzero(s2 >= 200)[0] + 1)  # small enhanced vessels are not bone
    bone = ndimage.binary_dilation(bone, iterations=1) & (hu >= 90)
    enhanced = (hu >= 90) & ~bone
    out = hu.astype(np.float32).copy()
    out[enhanced] = blood_hu + np.clip(rng.normal(0, 8, int(enhanced.sum())), -30, 30)
    return out, enhanced


def insert_calcium(hu: np.ndarray, centres_zyx: list[tuple[int, int, int]], radii_vox: list[tuple[int, int, int]],
                   peaks_hu: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Write ellipsoidal plaques (uniform ``peak`` HU inside) at voxel centres.

    Returns (new volume, label map 1..n of the inserted plaques)."""
    out = hu.astype(np.float32).copy()
    labels = np.zeros(hu.shape, np.uint16)
    for i, (c, r, p) in enumerate(zip(centres_zyx, radii_vox, peaks_hu), start=1):
        z, y, x = np.ogrid[:hu.shape[0], :hu.shape[1], :hu.shape[2]]
        e = (((z - c[0]) / max(r[0], 0.5)) ** 2 + ((y - c[1]) / max(r[1], 0.5)) ** 2
             + ((x - c[2]) / max(r[2], 0.5)) ** 2) <= 1.0
        out[e] = p
        labels[e] = i
    return out, labels
