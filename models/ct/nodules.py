"""Lung-nodule task: chest CT → nodules with measurements and a Lung-RADS-style category.

``pre_process``: resample to 1.5 mm isotropic, lung mask (HU threshold; real lobe masks
optional), windows over the lung bounding box.  ``predict``: the segmentation network
(ONNX Runtime, registry model ``ct-nodule-seg``) on each window, averaged.
``post_process``: connected components of the probability map inside the lungs →
nodules (score = peak probability) with centre, long/short axis, volume, mean HU, type
(solid / part-solid / ground-glass from the solid-component fraction), solid-core size,
lobe and Lung-RADS v2022 category suggestion; the label mask on the original grid.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from models.ct.findings import describe
from models.ct.lungs import approximate_lobe, lung_mask
from models.ct.volume import CTVolume, resample, resample_mask

logger = logging.getLogger(__name__)

MODEL_NAME = "ct-nodule-seg"
SPACING = (1.5, 1.5, 1.5)
PATCH = 64
STRIDE = 48
HU_LO, HU_HI = -1000.0, 400.0
SOLID_HU = -300.0  # voxels above this are the solid component (Lung-RADS "solid" part)


def normalise(hu: np.ndarray) -> np.ndarray:
    """Network input scaling shared by training and inference: [-1000, 400] HU → [0, 1]."""
    return np.clip((hu - HU_LO) / (HU_HI - HU_LO), 0.0, 1.0).astype(np.float32)


def window_starts(n: int, patch: int = PATCH, stride: int = STRIDE) -> list[int]:
    """Start indices of windows covering ``n`` voxels (last window flush with the end)."""
    if n <= patch:
        return [0]
    starts = list(range(0, n - patch, stride))
    starts.append(n - patch)
    return sorted(set(starts))


def nodule_type(hu_values: np.ndarray) -> tuple[str, float]:
    """Type from the fraction of voxels above -300 HU: ≥ 0.5 solid, ≤ 0.05 ground-glass,
    else part-solid.  Returns (type, solid fraction)."""
    frac = float(np.mean(hu_values > SOLID_HU)) if hu_values.size else 0.0
    if frac >= 0.5:
        return "solid", frac
    if frac <= 0.05:
        return "ground-glass", frac
    return "part-solid", frac


def lung_rads(kind: str, diameter_mm: float, solid_mm: float) -> str:
    """Lung-RADS v2022 baseline category suggestion from type and mean diameter (mm).

    solid: < 6 → 2, 6–< 8 → 3, 8–< 15 → 4A, ≥ 15 → 4B; part-solid: < 6 → 2, solid part
    < 6 → 3, 6–< 8 → 4A, ≥ 8 → 4B; ground-glass: < 30 → 2, ≥ 30 → 3.
    """
    if kind == "solid":
        return "2" if diameter_mm < 6 else "3" if diameter_mm < 8 else "4A" if diameter_mm < 15 else "4B"
    if kind == "part-solid":
        if diameter_mm < 6:
            return "2"
        return "3" if solid_mm < 6 else "4A" if solid_mm < 8 else "4B"
    return "2" if diameter_mm < 30 else "3"


@dataclass
class NoduleInput:
    volume: CTVolume  # original
    work: CTVolume  # resampled 1.5 mm
    lungs: np.ndarray  # on work grid
    box: tuple[slice, slice, slice]
    lobes: np.ndarray | None = None  # optional real lobe label map on the work grid
    windows: list[tuple[int, int, int]] = field(default_factory=list)


class NodulePipeline:
    """``pre_process → predict → post_process``; only ``predict`` touches ONNX Runtime."""

    name = MODEL_NAME

    def __init__(self, model=None, threshold: float = 0.5, min_diameter_mm: float = 3.0,
                 threads: int | None = None) -> None:
        self._model = model
        self.threshold = threshold
        self.min_diameter_mm = min_diameter_mm
        self.threads = threads
        self.version = getattr(model, "version", None)

    @property
    def model(self):
        if self._model is None:
            from models.registry import Registry

            self._model, card = Registry().load(MODEL_NAME, threads=self.threads)
            self.version = card.version
            self.threshold = float(card.thresholds.get("nodule", self.threshold))
        return self._model

    def pre_process(self, vol: CTVolume, lungs: np.ndarray | None = None,
                    lobes: np.ndarray | None = None) -> NoduleInput:
        """``lungs``/``lobes`` (optional) are on ``vol``'s grid; lobes use 1..5 = LOBES order."""
        work = resample(vol, SPACING, order=1)
        if lungs is None:
            lm = lung_mask(work.hu, work.spacing)
        else:
            lm = resample_mask(lungs.astype(np.uint8), vol, work) > 0
        lb = resample_mask(lobes.astype(np.uint8), vol, work) if lobes is not None else None
        if not lm.any():
            from models.ct.errors import CTError

            raise CTError("no lung found in the series (is it a chest CT?)")
        idx = np.argwhere(lm)
        lo = np.maximum(idx.min(0) - 4, 0)
        hi = np.minimum(idx.max(0) + 5, lm.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        shape = [max(b - a, PATCH) for a, b in zip(lo, hi)]
        windows = [(z, y, x) for z in window_starts(shape[0]) for y in window_starts(shape[1])
                   for x in window_starts(shape[2])]
        return NoduleInput(vol, work, lm, box, lb, windows)  # type: ignore[arg-type]

    def predict(self, x: NoduleInput, batch: int = 2) -> np.ndarray:
        """Probability map on the work grid (zeros outside the lung box)."""
        sub = normalise(x.work.hu[x.box])
        pad = [(0, max(0, PATCH - n)) for n in sub.shape]
        sub = np.pad(sub, pad, constant_values=0.0)
        acc = np.zeros(sub.shape, np.float32)
        cnt = np.zeros(sub.shape, np.float32)
        wts = _window_weight()
        model = self.model
        name = getattr(model, "input_names", ["image"])[0] if hasattr(model, "input_names") else "image"
        for i in range(0, len(x.windows), batch):
            ws = x.windows[i:i + batch]
            arr = np.stack([sub[z:z + PATCH, y:y + PATCH, xx:xx + PATCH] for z, y, xx in ws])[:, None]
            out = model.run({name: arr})
            logits = next(iter(out.values())) if isinstance(out, dict) else out[0]
            prob = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            for (z, y, xx), p in zip(ws, prob):
                acc[z:z + PATCH, y:y + PATCH, xx:xx + PATCH] += p * wts
                cnt[z:z + PATCH, y:y + PATCH, xx:xx + PATCH] += wts
        prob = acc / np.maximum(cnt, 1e-6)
        full = np.zeros(x.work.shape, np.float32)
        b = x.box
        full[b] = prob[:b[0].stop - b[0].start, :b[1].stop - b[1].start, :b[2].stop - b[2].start]
        return full

    def candidates(self, prob: np.ndarray, x: NoduleInput) -> list[dict[str, Any]]:
        """Connected components of ``prob ≥ threshold`` in the (dilated) lungs, score = peak."""
        region = ndimage.binary_dilation(x.lungs, iterations=2)
        m = (prob >= self.threshold) & region
        lab, n = ndimage.label(m)
        out = []
        vox = x.work.voxel_volume_mm3
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            comp = lab[sl] == i
            vol_mm3 = float(comp.sum()) * vox
            if (6 * vol_mm3 / np.pi) ** (1 / 3) < self.min_diameter_mm:
                continue
            out.append({"label_id": i, "score": float(prob[sl][comp].max()), "slices": sl})
        out.sort(key=lambda c: -c["score"])
        return out

    @staticmethod
    def _refine(comp: np.ndarray, prob: np.ndarray, peak: float, rel: float = 0.6) -> np.ndarray:
        """Nodule mask for measurement: the part of the detection component with probability
        ≥ ``rel`` × its peak that is connected to the peak (detection components at a low
        operating threshold spill into adjacent vessels)."""
        core = comp & (prob >= rel * peak)
        lab, n = ndimage.label(core)
        if n <= 1:
            return core if core.any() else comp
        at = lab[np.unravel_index(np.argmax(np.where(comp, prob, -1)), prob.shape)]
        return lab == at

    def post_process(self, prob: np.ndarray, x: NoduleInput) -> dict[str, Any]:
        work = x.work
        lab, _ = ndimage.label((prob >= self.threshold) & ndimage.binary_dilation(x.lungs, iterations=2))
        findings = []
        label_map = np.zeros(work.shape, np.uint16)
        from models.ct.lungs import LOBES

        from models.ct.findings import grow
        from models.ct.lungs import lung_extent

        extent = lung_extent(x.lungs)
        for k, c in enumerate(self.candidates(prob, x), start=1):
            sl = grow(c["slices"], 2, lab.shape)
            m = self._refine(lab[sl] == c["label_id"], prob[sl], c["score"])
            label_map[sl][m] = k
            off = [s.start for s in sl]
            h = work.hu[sl]
            d = describe(m, h, work, off)
            kind, frac = nodule_type(h[m])
            solid = m & (h > SOLID_HU)
            solid_mm = float((6 * solid.sum() * work.voxel_volume_mm3 / np.pi) ** (1 / 3)) if solid.any() else 0.0
            mean_d = (d["long_axis_mm"] + d["short_axis_mm"]) / 2
            cz = tuple(int(v) for v in np.clip(np.round(d["centre_voxel_zyx"]), 0, np.asarray(work.shape) - 1))
            if x.lobes is not None and x.lobes[cz] > 0:
                lobe = LOBES[int(x.lobes[cz]) - 1]
            else:
                lobe = approximate_lobe(np.asarray(cz), x.lungs, work.direction, extent)
            d["centre_voxel_zyx"] = [round(float(v), 2) for v in x.volume.patient_to_voxel(d["centre_patient_mm"])]
            findings.append({
                "label": "lung nodule", "probability": round(c["score"], 4), **d,
                "mean_diameter_mm": round(mean_d, 1), "type": kind, "solid_fraction": round(frac, 3),
                "solid_component_mm": round(solid_mm if kind != "ground-glass" else 0.0, 1),
                "lobe": lobe, "category": "Lung-RADS " + lung_rads(kind, mean_d, solid_mm), "mask_label": k,
            })
        mask = resample_mask(label_map, work, x.volume) if findings else np.zeros(x.volume.shape, np.uint16)
        cats = [f["category"].split()[-1] for f in findings]
        order = ["2", "3", "4A", "4B", "4X"]
        overall = max(cats, key=order.index) if cats else "1"
        return {"task": "ct-nodule", "model": self.name, "version": self.version, "n_nodules": len(findings),
                "lung_rads_suggestion": overall, "findings": findings, "_mask": mask, "_prob": prob}

    def __call__(self, vol: CTVolume, lungs: np.ndarray | None = None, lobes: np.ndarray | None = None
                 ) -> dict[str, Any]:
        x = self.pre_process(vol, lungs, lobes)
        return self.post_process(self.predict(x), x)


def _window_weight() -> np.ndarray:
    """Separable taper so window borders count less when windows overlap."""
    t = np.minimum(np.arange(PATCH) + 1, PATCH - np.arange(PATCH)).astype(np.float32)
    t = np.minimum(t / 8.0, 1.0)
    return t[:, None, None] * t[None, :, None] * t[None, None, :]
