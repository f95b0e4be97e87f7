"""Multi-phase liver training/evaluation cases from the real non-contrast CT with real
liver/aorta/spleen/kidney masks (numpy only).  Training cases use seeds from 0; held-out
cases use seeds from 30000 (new lesion locations, sizes, types and misalignments)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ct.liver import CHANNEL_PHASES, SPACING, normalise
from models.ct.volume import CTVolume, read_nifti, resample, resample_mask
from training.ct.data import totalseg_dir
from training.synthesis.ct_liver import MultiPhase, simulate


@dataclass
class LiverVolume:
    native: CTVolume  # 3 mm non-contrast
    native_masks: dict[str, np.ndarray]
    work: CTVolume  # 1.5 mm
    masks: dict[str, np.ndarray]  # on the work grid


def liver_train_volume() -> LiverVolume:
    d = totalseg_dir()
    v = read_nifti(d / "example_ct_sm.nii.gz")
    masks = {k: read_nifti(d / "masks" / f"{k}.nii.gz").hu > 0 for k in ("aorta", "liver", "spleen")}
    masks["kidney"] = ((read_nifti(d / "masks" / "kidney_left.nii.gz").hu > 0)
                       | (read_nifti(d / "masks" / "kidney_right.nii.gz").hu > 0))
    w = resample(v, SPACING)
    wm = {k: resample_mask(m.astype(np.uint8), v, w) > 0 for k, m in masks.items()}
    return LiverVolume(v, masks, w, wm)


class _Cache:
    case: MultiPhase | None = None
    uses = 0
    sim: dict = {}


_cache = _Cache()


def liver_patch(lv: LiverVolume, rng: np.random.Generator, size: int = 48, reuse: int = 16,
                lesion_frac: float = 0.45, phase_dropout: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(3-channel normalised patch, 2-channel target liver/lesion).  A new simulated study
    (aligned phases, 1–3 lesions of 5–40 mm) every ``reuse`` patches; ``lesion_frac`` of the
    patches are centred near a lesion; with probability ``phase_dropout`` the arterial and
    delayed channels are replaced by the portal-venous one, as the pipeline does when a
    study has only that phase."""
    if _cache.case is None or _cache.uses >= reuse:
        _cache.case = simulate(lv.work.hu, lv.work.spacing, lv.masks, rng, n_lesions=int(rng.integers(1, 4)),
                               misalign=False, cache=_cache.sim)
        _cache.uses = 0
    _cache.uses += 1
    mp = _cache.case
    liver = lv.masks["liver"]
    shape = np.array(liver.shape)
    r = rng.random()
    if r < lesion_frac and mp.lesion_labels.any():
        pts = np.argwhere(mp.lesion_labels > 0)
    elif r < lesion_frac + 0.25:
        pts = np.argwhere(liver[::2, ::2, ::2]) * 2
    else:
        pts = np.argwhere(np.ones(shape // 4, bool)) * 4
    c = pts[rng.integers(len(pts))] + rng.integers(-size // 4, size // 4 + 1, 3)
    lo = np.clip(c - size // 2, 0, np.maximum(shape - size, 0))
    sl = tuple(slice(int(a), int(a) + size) for a in lo)
    chans = []
    for p in CHANNEL_PHASES:
        a = mp.aligned[p][sl]
        if p != "portal-venous" and rng.random() < 0.5:  # residual misregistration, ≤ 1 voxel
            a = np.roll(a, tuple(int(v) for v in rng.integers(-1, 2, 3)), axis=(0, 1, 2))
        chans.append(a)
    if rng.random() < phase_dropout:
        chans = [chans[CHANNEL_PHASES.index("portal-venous")]] * len(chans)
    img = normalise(np.stack(chans))
    tgt = np.stack([liver[sl], mp.lesion_labels[sl] > 0]).astype(np.float32)
    pad = [(0, 0)] + [(0, size - n) for n in img.shape[1:]]
    img = np.pad(img, pad)
    tgt = np.pad(tgt, pad)
    img = img * float(rng.uniform(0.95, 1.05)) + rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(tgt, np.float32)


def liver_case(lv: LiverVolume, rng: np.random.Generator, n_lesions: int = 2,
               diameter_range=(5.0, 40.0)) -> tuple[list[CTVolume], MultiPhase]:
    """A held-out multi-phase study on the native 3 mm grid with misaligned phases and
    phase headers (descriptions and contrast timing), as a scanner would send it."""
    mp = simulate(lv.native.hu, lv.native.spacing, lv.native_masks, rng, n_lesions=n_lesions,
                  diameter_range=diameter_range, misalign=True)
    vols = []
    t0 = 36000.0
    for ph, arr in mp.phases.items():
        meta = {"series_description": f"Liver {ph.replace('-', ' ')}",
                "contrast_bolus_agent": "" if ph == "non-contrast" else "Iohexol",
                "contrast_bolus_start_time": None if ph == "non-contrast" else t0,
                "acquisition_time": t0 - 60 if ph == "non-contrast" else
                t0 + {"arterial": 35.0, "portal-venous": 75.0, "delayed": 180.0}[ph]}
        v = lv.native.with_array(arr)
        v.meta = meta
        vols.append(v)
    return vols, mp
