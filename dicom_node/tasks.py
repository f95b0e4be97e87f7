"""Analysis tasks: adapters from the models' pipelines to :class:`AnalysisResult`.

A task takes the files of the series routing chose and returns, per analysed
image/series, an :class:`~dicom_node.findings.AnalysisResult` and the source
datasets its findings refer to.  Tasks register by name in :data:`TASKS` (a factory,
so heavy model imports happen only when a task is first used); CT tasks register
the same way (``ct-nodule``, ``cac``, ``liver``), and a task whose model package is
not installed reports itself unavailable instead of failing jobs.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicom_node.errors import NodeError
from dicom_node.findings import AnalysisResult, ImageRef

logger = logging.getLogger(__name__)


class TaskError(NodeError):
    """A task could not run (model missing, unreadable input)."""


class TaskUnavailableError(TaskError):
    """The task's model or pipeline is not installed in this build."""


@dataclass
class TaskOutput:
    """What a task produced.

    ``results``: one (result, source datasets) pair per analysed unit (radiograph or
    series); ``skipped``: reasons for inputs not analysed; ``models``: name -> version.
    """

    results: list[tuple[AnalysisResult, list[Dataset]]] = field(default_factory=list)
    derived: list[Dataset] = field(default_factory=list)  # derived images (e.g. a denoised series)
    skipped: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    """An analysis task (``name``, ``study_type`` of its report template)."""

    name: str
    study_type: str

    def run(self, files: list[Path]) -> TaskOutput: ...


# ------------------------------------------------------------------ chest X-ray
class CxrTask:
    """Chest X-ray findings (``models.cxr``) on each frontal CR/DX image."""

    name = "cxr"
    study_type = "cxr"

    def __init__(self, threads: int | None = None) -> None:
        try:
            from models.cxr.pipeline import CxrPipeline
            from models.errors import ModelError
        except ImportError as e:  # pragma: no cover - models is part of the distribution
            raise TaskUnavailableError(f"chest X-ray pipeline not installed: {e}") from e
        try:
            self.pipeline = CxrPipeline(threads=threads)
        except ModelError as e:
            raise TaskUnavailableError(f"chest X-ray models not available: {e}") from e
        self._lock = threading.Lock()

    def run(self, files: list[Path]) -> TaskOutput:
        from models.errors import UnsupportedInputError
        from models.imaging import load_radiograph

        out = TaskOutput(models=self.pipeline.models)
        t_read = t_model = 0.0
        for path in files:
            t0 = time.perf_counter()
            try:
                ds = pydicom.dcmread(path)
                radiograph = load_radiograph(ds)
            except (UnsupportedInputError, pydicom.errors.InvalidDicomError) as e:
                out.skipped.append(f"{Path(path).name}: {e}")
                continue
            t1 = time.perf_counter()
            result, reason, _raw = self.pipeline.analyse(radiograph)
            t_read += t1 - t0
            t_model += time.perf_counter() - t1
            record: dict[str, Any] = {"path": str(path), "skipped": reason, "abnormality": None, "scores": None,
                                      "findings": [], "model": self.pipeline.model_info, "study_type": "cxr"}
            if reason is None:
                record["abnormality"] = round(result.abnormality, 4)
                record["scores"] = {c: round(v, 4) for c, v in result.scores.items()}
                record["findings"] = [f.to_dict() for f in result.findings]
                fine = self.pipeline.nodule_entry
                for f in record["findings"]:  # nodules/masses are read by the fine-grid model
                    if fine is not None and f["label"] == "nodule_mass":
                        f["model"] = {"name": fine.card.name, "version": fine.card.version}
            parsed = AnalysisResult.from_json(record, source=ds)
            if parsed.skipped:
                out.skipped.append(parsed.skipped)
            out.results.append((parsed, [ds]))
        out.timings = {"read_s": round(t_read, 4), "model_s": round(t_model, 4)}
        return out


# ------------------------------------------------------------------ CT tasks
class CtTask:
    """A CT task of ``models.ct`` (``ct-nodule``, ``cac``, ``liver``) on its series."""

    _PIPELINES = {
        "ct-nodule": ("models.ct.nodules", "NodulePipeline", "ct_nodule", "series"),
        "cac": ("models.ct.cac", "CACPipeline", "ct_cac", "series"),
        "liver": ("models.ct.liver", "LiverPipeline", "ct_liver", "study"),
    }

    def __init__(self, name: str) -> None:
        import importlib

        if name not in self._PIPELINES:
            raise TaskUnavailableError(f"no CT task {name!r}")
        module, cls, self.study_type, self.mode = self._PIPELINES[name]
        self.name = name
        try:
            self.pipeline = getattr(importlib.import_module(module), cls)()
        except Exception as e:  # noqa: BLE001 - missing module, model or weights
            raise TaskUnavailableError(f"{name}: {module}.{cls} is not available ({e})") from e

    def run(self, files: list[Path]) -> TaskOutput:
        from models.ct.findings import public
        from models.ct import volume

        t0 = time.perf_counter()
        if self.mode == "study":
            result = self.pipeline(volume.load_study(files))
        else:
            result = self.pipeline(volume.load_series(files))
        t1 = time.perf_counter()
        obj = ct_result_json(public(result), self.name)
        datasets = [pydicom.dcmread(f) for f in files]
        # a multi-phase study's findings lie on its reference series: the SR and SEG refer to that one
        reference = str(obj.get("reference_series_uid") or "")
        sources = [d for d in datasets if str(d.get("SeriesInstanceUID", "")) == reference] or datasets
        sources.sort(key=lambda d: int(d.get("InstanceNumber", 0) or 0))
        first = sources[len(sources) // 2]
        parsed = AnalysisResult.from_json(obj, source=ImageRef.from_dataset(first), study_type=self.study_type)
        parsed = with_ct_masks(parsed, obj, result, sources)
        out = TaskOutput(results=[(parsed, sources)], models={parsed.model.name: parsed.model.version})
        out.timings = {"model_s": round(t1 - t0, 4), "read_s": round(time.perf_counter() - t1, 4)}
        return out


def with_ct_masks(parsed: AnalysisResult, obj: dict[str, Any], result: dict[str, Any],
                  sources: list[Any]) -> AnalysisResult:
    """``parsed`` with each CT finding's 3-D mask (for the SEG) from the task's label map.

    ``result["_mask"]`` labels the voxels of the finding whose JSON has that
    ``mask_label``; ``result["_planes"]`` names the source image of each plane (the
    series' slices in position order, :func:`models.ct.volume.volume_from_datasets`).
    A finding keeps only the planes it lies on.  Without both (or when a plane's image is
    not among ``sources``, e.g. slices interpolated into a gap) the findings stay without
    masks and the SEG is left out, with a log line.
    """
    import dataclasses

    mask, planes = result.get("_mask"), result.get("_planes")
    if mask is None or not parsed.findings:
        return parsed
    by_uid = {str(d.SOPInstanceUID): d for d in sources}
    if not planes or len(planes) != mask.shape[0] or any(u not in by_uid for u in planes):
        logger.warning("CT findings without masks: the label map's planes do not match the source slices")
        return parsed
    refs = [ImageRef.from_dataset(by_uid[u]) for u in planes]
    findings = []
    for f, fj in zip(parsed.findings, obj.get("findings") or []):
        label = fj.get("mask_label") if isinstance(fj, dict) else None
        m = mask == int(label) if label is not None else None
        zs = np.flatnonzero(m.any(axis=(1, 2))) if m is not None else np.zeros(0, int)
        findings.append(dataclasses.replace(f, mask=m[zs], mask_images=tuple(refs[z] for z in zs)) if zs.size else f)
    return dataclasses.replace(parsed, findings=tuple(findings) + tuple(parsed.findings[len(findings):]))


def ct_result_json(obj: dict[str, Any], task: str) -> dict[str, Any]:
    """The CT tasks' JSON (``medws infer ct-nodule|cac|liver --json``) in the
    :class:`AnalysisResult` form: ``model`` as ``{name, version}``; for calcium, one
    finding per artery with its Agatston score and the study total."""
    out = dict(obj)
    model = out.get("model")
    if not isinstance(model, dict):
        out["model"] = {"name": str(model or task), "version": str(out.get("version") or "0")}
    if task == "cac":
        out["total_agatston"] = out.get("agatston")
        out["findings"] = [
            {"label": "coronary_calcium", **({"vessel": artery} if artery != "unassigned" else {}),
             "agatston": v.get("agatston"), "calcium_volume_mm3": v.get("volume_mm3")}
            for artery, v in (out.get("per_artery") or {}).items() if (v.get("agatston") or 0) > 0]
    return out


# ------------------------------------------------------------------ CT denoising
class DenoiseTask:
    """Low-dose CT denoising (``models.denoise``): a derived series in the same study."""

    name = "ct-denoise"
    study_type = "ct_denoise"

    def __init__(self, threads: int | None = None) -> None:
        try:
            from models.denoise.task import CtDenoiser

            self.denoiser = CtDenoiser()
        except Exception as e:  # noqa: BLE001 - missing module, model or weights
            raise TaskUnavailableError(f"ct-denoise: model not available ({e})") from e

    def run(self, files: list[Path]) -> TaskOutput:
        from models.denoise.task import denoise_series

        t0 = time.perf_counter()
        datasets = [pydicom.dcmread(f) for f in files]
        derived = denoise_series(datasets, denoiser=self.denoiser)
        return TaskOutput(derived=derived, models={self.denoiser.name: self.denoiser.version},
                          timings={"model_s": round(time.perf_counter() - t0, 4)})


# ------------------------------------------------------------------ registry
TaskFactory = Callable[[int | None], Task]  # factory(ort_threads) -> task

TASKS: dict[str, TaskFactory] = {
    "cxr": lambda threads: CxrTask(threads),
    "ct-nodule": lambda threads: CtTask("ct-nodule"),
    "cac": lambda threads: CtTask("cac"),
    "liver": lambda threads: CtTask("liver"),
    "ct-denoise": lambda threads: DenoiseTask(threads),
}


def register_task(name: str, factory: TaskFactory) -> None:
    """Add (or replace) a task; routing rules name it by ``name``; ``factory(threads)``
    builds it (raising :class:`TaskUnavailableError` when its model is missing)."""
    TASKS[name] = factory


class TaskCache:
    """Task instances loaded once per process (models stay in memory)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._tasks: dict[str, Task] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Task:
        """The task ``name``; raises :class:`TaskUnavailableError` when it cannot load."""
        with self._lock:
            if name in self._tasks:
                return self._tasks[name]
            if name in self._errors:
                raise TaskUnavailableError(self._errors[name])
            factory = TASKS.get(name)
            if factory is None:
                self._errors[name] = f"no runner for task {name!r} in this build"
                raise TaskUnavailableError(self._errors[name])
            try:
                task = factory(self.threads)
            except TaskUnavailableError as e:
                self._errors[name] = str(e)
                logger.warning("task %s unavailable: %s", name, e)
                raise
            self._tasks[name] = task
            return task

    def available(self, name: str) -> str | None:
        """``None`` when the task can run, else why not."""
        try:
            self.get(name)
            return None
        except TaskUnavailableError as e:
            return str(e)

