"""Chest X-ray findings pipeline: ``pre_process -> predict -> post_process``.

Only :meth:`CxrPipeline.predict` touches ONNX Runtime (through :class:`models.session.OrtModel`).
Registry models: ``cxr-lung`` (lung fields) and ``cxr-lesions`` (five classes, abnormality,
per-class maps and an ``embedding`` for similar-case retrieval), both on the 256 grid, and,
when installed, ``cxr-nodule``: the nodule/mass map on the 512 grid
(:mod:`models.cxr.nodule`), whose score and map replace the coarse model's nodule/mass
output.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.cxr.nodule import coarse_map, lung_support, nodule_score
from models.cxr.postprocess import MIN_LUNG_FRACTION, CxrFindings, lung_fraction, post_process
from models.cxr.preprocess import CLASSES, Prepared, prepare
from models.errors import UnsupportedInputError
from models.imaging import Radiograph, frontal_chest_skip_reason, load_radiograph

logger = logging.getLogger(__name__)

LUNG_MODEL = "cxr-lung"
LESION_MODEL = "cxr-lesions"
NODULE_MODEL = "cxr-nodule"


@dataclass
class Raw:
    """Network outputs for one image."""

    lung: np.ndarray  # (S, S)
    scores: np.ndarray  # (5,)
    abnormality: float
    seg: np.ndarray  # (5, h, w)
    embedding: np.ndarray  # (D,)
    nodule: np.ndarray | None = None  # (g, g) fine-grid nodule/mass map (cxr-nodule), when installed


class CxrPipeline:
    """Load both models from the registry and analyse radiographs.

    Parameters
    ----------
    registry : models.registry.Registry, optional
    threads : int, optional
        CPU threads for the two networks (default: env ``MEDWS_ORT_THREADS``, else the CPU
        count).  With two or more, :meth:`predict` runs the lung and lesion networks at the
        same time, each with half of them as ONNX Runtime intra-op threads: these small
        networks gain little from a second intra-op thread (per-operator synchronisation),
        while two independent graphs keep both cores busy.  With one, they run in turn.
    concurrent : bool, optional
        Force (True) or forbid (False) running the two networks at the same time
        (default: when ``threads`` >= 2).
    nodule_version : str, optional
        ``cxr-nodule`` version; ``"none"`` (or a registry without it) reads nodules/masses from
        the coarse ``cxr-lesions`` output instead.  The fine network (four times the pixels)
        runs after the two coarse ones with all ``threads`` as intra-op threads: measured
        faster than running it on one thread beside them.
    """

    def __init__(self, registry: Any = None, threads: int | None = None,
                 lung_version: str | None = None, lesion_version: str | None = None,
                 concurrent: bool | None = None, nodule_version: str | None = None) -> None:
        from models.registry import Registry

        from models.session import resolve_threads

        reg = registry or Registry()
        self.lung_entry = reg.get(LUNG_MODEL, lung_version)
        self.lesion_entry = reg.get(LESION_MODEL, lesion_version)
        total = resolve_threads(threads) or (os.cpu_count() or 1)
        both = (total >= 2) if concurrent is None else bool(concurrent)
        per_model = max(1, total // 2) if both else total
        self.threads = total
        self.lung = reg.session(LUNG_MODEL, self.lung_entry.card.version, threads=per_model)
        self.lesion = reg.session(LESION_MODEL, self.lesion_entry.card.version, threads=per_model)
        self.nodule_entry = None
        self.nodule = None
        if nodule_version != "none" and (nodule_version or reg.versions(NODULE_MODEL)):
            self.nodule_entry = reg.get(NODULE_MODEL, nodule_version)
            self.nodule = reg.session(NODULE_MODEL, self.nodule_entry.card.version, threads=total)
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-lung") if both else None)
        card = self.lesion_entry.card
        self.size = int(card.input["size"])
        self.thresholds = {c: float(card.thresholds.get(c, 0.5)) for c in CLASSES}
        if self.nodule_entry is not None:
            ncard = self.nodule_entry.card
            self.fine_size = int(ncard.input["size"])
            self.thresholds["nodule_mass"] = float(ncard.thresholds.get("nodule_mass", 0.5))
        self.seg_threshold = float(card.extra.get("seg_threshold", 0.5))

    @property
    def concurrent(self) -> bool:
        """Whether :meth:`predict` runs the two networks at the same time."""
        return self._pool is not None

    @property
    def model_info(self) -> dict[str, str]:
        """Name and version of the findings model (every output names it); ``nodule_model`` when used."""
        return {"name": self.lesion_entry.card.name, "version": self.lesion_entry.card.version}

    @property
    def models(self) -> dict[str, str]:
        """Every registry model a result depends on: name -> version."""
        used = [self.lung_entry, self.lesion_entry] + ([self.nodule_entry] if self.nodule_entry else [])
        return {e.card.name: e.card.version for e in used}

    def prepare(self, pixels: np.ndarray) -> Prepared:
        """Letterbox + normalise presentation values (the function training used), plus the fine grid when used.

        Two threads share the work when ``threads`` >= 2 (identical result).
        """
        if self.nodule is None:
            return prepare(pixels, self.size, workers=self.threads)
        return prepare(pixels, self.size, fine_size=self.fine_size, workers=self.threads)

    def pre_process(self, radiograph: Radiograph) -> Prepared:
        """:meth:`prepare` of the radiograph's image (its stored values when the float image is not needed)."""
        return self.prepare(radiograph.image_source())

    def _coarse_pair(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        """Lung and lesion networks: at the same time (ONNX Runtime releases the GIL) or in turn."""
        if self._pool is not None:
            lung_job = self._pool.submit(self.lung.run, {"image": x})
            out = self.lesion.run({"image": x})
            return lung_job.result()["lung"][0, 0], out
        return self.lung.run({"image": x})["lung"][0, 0], self.lesion.run({"image": x})

    def predict(self, prepared: Prepared) -> Raw:
        """Run the ONNX models on one prepared image."""
        x = np.ascontiguousarray(prepared.tensor, dtype=np.float32)
        nodule = None
        if self.nodule is not None:
            if prepared.fine is None:
                raise ValueError("cxr-nodule needs the fine grid: prepare with CxrPipeline.prepare")
            fine = np.ascontiguousarray(prepared.fine, dtype=np.float32)
            lung, out = self._coarse_pair(x)
            nodule = self.nodule.run({"image": fine})["nodule"][0, 0]  # all threads: 4x the pixels
        else:
            lung, out = self._coarse_pair(x)
        return Raw(lung, out["scores"][0], float(out["abnormality"][0, 0]), out["seg"][0], out["embedding"][0], nodule)

    def post_process(self, prepared: Prepared, raw: Raw) -> CxrFindings:
        """Findings in source pixels, with laterality/zone and the plausibility check.

        With ``cxr-nodule`` the nodule/mass score is :func:`models.cxr.nodule.nodule_score`
        of the fine map and its map (max-pooled to the coarse grid) gives the outlines.
        """
        scores, seg = raw.scores, raw.seg
        if raw.nodule is not None:
            scores = scores.copy()
            seg = seg.copy()
            scores[0] = nodule_score(raw.nodule, lung_support(raw.lung, raw.nodule.shape[0]))
            seg[0] = coarse_map(raw.nodule, seg.shape[-1])
        return post_process(scores, raw.abnormality, seg, raw.lung, prepared.geometry,
                            self.thresholds, self.seg_threshold)

    def analyse(self, radiograph: Radiograph) -> tuple[CxrFindings | None, str | None, Raw | None]:
        """Return (findings, skip reason, raw outputs) for one radiograph."""
        reason = frontal_chest_skip_reason(radiograph)
        if reason:
            return None, reason, None
        prepared = self.pre_process(radiograph)
        raw = self.predict(prepared)
        if lung_fraction(raw.lung, prepared.content) < MIN_LUNG_FRACTION:
            return None, "no lung fields found: not a frontal chest radiograph?", raw
        return self.post_process(prepared, raw), None, raw

    def analyse_path(self, path: str | os.PathLike) -> dict:
        """The ``medws infer cxr --json`` record of one file (skipped inputs carry a reason)."""
        record: dict[str, Any] = {"path": str(path), "skipped": None, "abnormality": None,
                                  "scores": None, "findings": [], "model": self.model_info}
        t0 = time.perf_counter()
        try:
            radiograph = load_radiograph(path)
        except UnsupportedInputError as e:
            record["skipped"] = str(e)
            return record
        result, reason, _ = self.analyse(radiograph)
        if reason:
            record["skipped"] = reason
            return record
        record["abnormality"] = round(result.abnormality, 4)
        record["scores"] = {c: round(v, 4) for c, v in result.scores.items()}
        record["findings"] = [f.to_dict() for f in result.findings]
        logger.debug("cxr analysed in %.1f ms", 1000 * (time.perf_counter() - t0))
        return record
