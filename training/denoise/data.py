"""Training data for the denoisers: real full-dose slices + simulated low dose.

Split of the 20 real slices of ``ct/totalseg/dicom_series`` (ordered along the slice
normal, index 0 = most caudal): train ``0..11``, validation ``12``, gap ``13``
(adjacent to both sides, never used), held-out test ``14..19`` — the test slices are
never seen in training, validation or TV-weight tuning.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.denoise.series import read_ct_slices
from training.lowdose.simulate import LowDoseSimulator

logger = logging.getLogger(__name__)

TRAIN_IDX = tuple(range(0, 12))
VAL_IDX = (12,)
TEST_IDX = tuple(range(14, 20))
DOSES = (0.25, 0.10)
DEFAULT_SERIES = Path(os.environ.get("MEDWS_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")) / "ct" / "totalseg" / "dicom_series"


def load_real_slices(series_dir: str | Path = DEFAULT_SERIES) -> tuple[list[np.ndarray], float]:
    """The real full-dose HU slices (ordered) and their pixel size [mm]."""
    slices = read_ct_slices([series_dir])
    if not slices:
        raise FileNotFoundError(f"no CT slices in {series_dir}")
    return [s.hu for s in slices], slices[0].pixel_mm


@dataclass
class PairSet:
    """Aligned full-dose / low-dose slices (HU, float32) and their dose fractions."""

    clean: np.ndarray  # (N, H, W)
    noisy: np.ndarray  # (N, H, W)
    dose: np.ndarray  # (N,)
    index: np.ndarray  # (N,) source slice index

    def save(self, path: str | Path) -> None:
        np.savez(path, clean=self.clean, noisy=self.noisy, dose=self.dose, index=self.index)

    @classmethod
    def load(cls, path: str | Path) -> "PairSet":
        z = np.load(path)
        return cls(clean=z["clean"], noisy=z["noisy"], dose=z["dose"], index=z["index"])


def make_pairs(
    slices: list[np.ndarray],
    indices: tuple[int, ...],
    pixel_mm: float,
    doses: tuple[float, ...] = DOSES,
    realisations: int = 1,
    seed: int = 0,
    simulator: LowDoseSimulator | None = None,
) -> PairSet:
    """Simulate ``realisations`` low-dose versions per slice and dose."""
    sim = simulator or LowDoseSimulator()
    rng = np.random.default_rng(seed)
    clean, noisy, dose, index = [], [], [], []
    for i in indices:
        proj = sim.project(slices[i], pixel_mm)
        for d in doses:
            for _ in range(realisations):
                clean.append(slices[i].astype(np.float32))
                noisy.append(sim.simulate(proj, d, rng))
                dose.append(d)
                index.append(i)
        logger.info("simulated slice %d", i)
    return PairSet(np.stack(clean), np.stack(noisy), np.asarray(dose, np.float32), np.asarray(index))


def body_weights(clean: np.ndarray) -> np.ndarray:
    """Per-slice sampling map: pixels inside the body (HU > -500) smoothed."""
    return (clean > -500).astype(np.float32)


class PatchSampler:
    """Random ``size`` x ``size`` patches (centred in the body) with flips/rot90.

    Returns ``(x, n)`` in network units: ``x = noisy / 1000`` and the target noise
    ``n = (noisy - clean) / 1000``, shapes ``(B, 1, size, size)``.
    """

    def __init__(self, pairs: PairSet, size: int, seed: int = 0) -> None:
        self.pairs = pairs
        self.size = size
        self.rng = np.random.default_rng(seed)
        h = size // 2
        self.centres = []
        for k in range(len(pairs.clean)):
            m = body_weights(pairs.clean[k])
            m[:h, :] = 0
            m[-h:, :] = 0
            m[:, :h] = 0
            m[:, -h:] = 0
            self.centres.append(np.argwhere(m > 0))

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ns = [], []
        h = self.size // 2
        for _ in range(n):
            k = int(self.rng.integers(len(self.pairs.clean)))
            cy, cx = self.centres[k][self.rng.integers(len(self.centres[k]))]
            sl = np.s_[cy - h : cy - h + self.size, cx - h : cx - h + self.size]
            x = self.pairs.noisy[k][sl] / 1000.0
            t = (self.pairs.noisy[k][sl] - self.pairs.clean[k][sl]) / 1000.0
            r = int(self.rng.integers(4))
            x, t = np.rot90(x, r), np.rot90(t, r)
            if self.rng.random() < 0.5:
                x, t = x[:, ::-1], t[:, ::-1]
            xs.append(x)
            ns.append(t)
        return (np.ascontiguousarray(np.stack(xs)[:, None], dtype=np.float32),
                np.ascontiguousarray(np.stack(ns)[:, None], dtype=np.float32))


def cached_pairs(cache: str | Path | None, build) -> PairSet:
    """``build()`` once and keep the result in ``cache`` (an .npz path); ``None``: no cache."""
    if cache is not None and Path(cache).is_file():
        return PairSet.load(cache)
    pairs = build()
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        pairs.save(cache)
    return pairs
