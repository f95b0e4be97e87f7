"""Analysis orchestration: stable study -> routed tasks -> results in the index,
the archive and the outbox.

Flow (ARCHITECTURE "Analysis"):

1. The stability hook queues one ``analyze`` job per study content
   (:func:`enqueue_prioritized`: STAT studies get a higher job priority).
2. A worker runs it: :mod:`dicom_node.routing` picks the tasks; each task is queued
   as its own job keyed by the content of *its* input series (so results, SRs sent
   back by the PACS or a signed report never trigger a second run for the same
   images), or the study is recorded ``not_applicable`` with the reason.
3. A task job runs the model pipeline (:mod:`dicom_node.tasks`), builds the SR
   (TID 1500), SEG and GSPS with deterministic UIDs (study, task, content key), stores
   them in the source study through :class:`~dicom_node.archive.Archive` (so they
   are indexed) and then, in ONE transaction: findings rows, the draft report,
   ``ai_objects`` rows, outbox items for auto-send peers, supersession of the
   study's earlier AI objects for that task, and the job's completion.

Idempotent: a crash before that transaction re-runs the job (re-queued at start-up)
with the same UIDs; objects already stored are reused, so nothing is duplicated.
A job whose inputs changed meanwhile (late instance) is completed as ``stale``; a
job that finishes after a newer one for the same task never supersedes it.

:class:`JobRunner` is the interface a worker pool implements; :class:`LocalWorkerPool`
runs jobs in threads of this process.  A distributed engine claims the same rows and
calls :meth:`Analyzer.execute`.
"""
from __future__ import annotations

import abc
import io
import json
import logging
import os
import signal
import threading
import weakref
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node import gsps, rejection, report, routing, seg, sr
from dicom_node.archive import Archive
from dicom_node.config import CONFIG_FILE, NodeConfig
from dicom_node.db import Database
try:  # similar-case embeddings (dicom_node/embeddings.py, another engineer's module)
    from dicom_node.embeddings import StudyIndexer
except ImportError:  # pragma: no cover - a checkout without it still analyses
    StudyIndexer = None  # type: ignore[assignment,misc]
from dicom_node.errors import ConfigError, JobError, NodeError
from dicom_node.findings import AnalysisResult, ResultError
from dicom_node.jobs import LEASE_S, Job, JobQueue, LeaseKeeper, worker_name
from dicom_node.privacy import phi
from dicom_node.stability import ANALYZE_TASK, StableStudy, content_key
from dicom_node.tasks import TaskCache, TaskOutput, TaskUnavailableError

logger = logging.getLogger(__name__)

#: Source AE title recorded for objects medws writes itself (excluded from routing keys)
AI_SOURCE_AE = "MEDWS-AI"
#: UID root for generated objects (pydicom's; deterministic from the parts)
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
CRITICAL_PRIORITY = 90

# ------------------------------------------------------------------ schema (additive)
_TABLES = """
CREATE TABLE IF NOT EXISTS ai_objects (
    id {serial_pk},
    study_uid TEXT NOT NULL,
    task TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    content_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'current',
    created_at DOUBLE PRECISION NOT NULL,
    superseded_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS ai_objects_study ON ai_objects (study_uid, task, state);
CREATE TABLE IF NOT EXISTS destinations (
    peer TEXT PRIMARY KEY,
    auto_send INTEGER NOT NULL DEFAULT 1,
    updated_at DOUBLE PRECISION NOT NULL
);
"""
_COLUMNS = {
    "jobs": {"inputs": "TEXT", "outcome": "TEXT", "timings": "TEXT"},
    "studies": {"priority": "TEXT", "ai_status": "TEXT", "ai_critical": "INTEGER"},
}


_SCHEMA_ENSURED: "weakref.WeakSet[Database]" = weakref.WeakSet()


def ensure_schema(db: Database) -> None:
    """Add the pipeline's tables and columns (idempotent, additive only; once per
    :class:`Database`: status readers such as the monitoring endpoint call it on every
    request, and on PostgreSQL the DDL takes the index's write lock)."""
    if db in _SCHEMA_ENSURED:
        return
    db.init_schema()
    db.executescript(_TABLES)
    for table, cols in _COLUMNS.items():
        have = db.columns(table)
        for name, kind in cols.items():
            if name not in have:
                db.add_column(table, name, kind)
    db.execute("CREATE INDEX IF NOT EXISTS outbox_object ON outbox (peer, sop_instance_uid)")
    _SCHEMA_ENSURED.add(db)


# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of the analysis pipeline (``[analysis]``, ``[routing]``, ``[outbox]``
    in ``<root>/medws.toml``; env ``MEDWS_ANALYSIS_WORKERS``, ``MEDWS_REPORT_LANGUAGE``)."""

    workers: int = 1
    ort_threads: int | None = None
    report_language: str = "en"
    poll_interval_s: float = 1.0
    max_attempts: int = 3
    rules: tuple[routing.Rule, ...] = routing.DEFAULT_RULES
    outbox_max_attempts: int = 8
    outbox_backoff_s: float = 2.0
    outbox_backoff_max_s: float = 600.0
    auto_send_default: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("[analysis] workers must be >= 1")
        if self.report_language not in ("en", "ko"):
            raise ConfigError("[analysis] report_language must be 'en' or 'ko'")
        if self.outbox_max_attempts < 1:
            raise ConfigError("[outbox] max_attempts must be >= 1")


def load_analysis_config(root: Path, env: dict[str, str] | None = None) -> AnalysisConfig:
    """Read the pipeline's settings from ``<root>/medws.toml`` and the environment."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    path = Path(root) / CONFIG_FILE
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
    a, o = dict(data.get("analysis", {})), dict(data.get("outbox", {}))
    kw: dict[str, Any] = {}
    known = {"workers": int, "ort_threads": int, "report_language": str, "poll_interval_s": float,
             "max_attempts": int, "auto_send_default": bool}
    for key, value in a.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting [analysis].{key}")
        kw[key] = known[key](value)
    for key, value in o.items():
        names = {"max_attempts": "outbox_max_attempts", "backoff_s": "outbox_backoff_s",
                 "backoff_max_s": "outbox_backoff_max_s"}
        if key not in names:
            raise ConfigError(f"{path}: unknown setting [outbox].{key}")
        kw[names[key]] = float(value) if "backoff" in key else int(value)
    if env.get("MEDWS_ANALYSIS_WORKERS"):
        kw["workers"] = int(env["MEDWS_ANALYSIS_WORKERS"])
    if env.get("MEDWS_REPORT_LANGUAGE"):
        kw["report_language"] = env["MEDWS_REPORT_LANGUAGE"]
    if env.get("MEDWS_ORT_THREADS"):
        kw["ort_threads"] = int(env["MEDWS_ORT_THREADS"])
    kw["rules"] = routing.rules_from_config(data.get("routing"))
    return AnalysisConfig(**kw)


# ------------------------------------------------------------------ helpers
def derived_uid(*parts: object) -> str:
    """A UID derived from ``parts`` (same parts, same UID; PS3.5 B.2)."""
    return generate_uid(UID_PREFIX, entropy_srcs=[str(p) for p in parts])


def enqueue_prioritized(study: StableStudy, db: Database) -> None:
    """Stability hook: queue the ``analyze`` job with the study's PACS priority
    (Requested Procedure Priority; STAT first)."""
    rows = db.query("SELECT path FROM instances WHERE study_uid = ? AND COALESCE(source_ae, '') != ? LIMIT 1",
                    (study.study_uid, AI_SOURCE_AE))
    priority = 0
    root = _root_of(db)
    if rows and root is not None:
        try:
            ds = pydicom.dcmread(root / rows[0]["path"], stop_before_pixels=True)
            priority = routing.pacs_priority_rank(routing.priority_of(ds))
        except Exception:  # noqa: BLE001 - priority is best effort; routing reads the file again
            logger.debug("priority of study %s unreadable", phi(study.study_uid))
    JobQueue(db).enqueue(study.study_uid, ANALYZE_TASK, study.content_key, priority=priority)
    WAKE.set()


def _root_of(db: Database) -> Path | None:
    # given to the Database, or the folder of the embedded <root>/index.sqlite
    return db.root


def wake_workers(_study: StableStudy | None = None, _db: Database | None = None) -> None:
    """Wake this process's workers (a stability hook, also called after enqueueing)."""
    WAKE.set()


WAKE = threading.Event()
DELIVERY_WAKE = threading.Event()


def encode_dataset(ds: Dataset) -> tuple[bytes, str]:
    """(data set bytes without the file meta, transfer syntax UID) of ``ds``, in memory."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    # File Meta Information Group Length (0002,0000) UL: its value sits at 132 + 8 (PS3.10 7.1)
    group_length = int.from_bytes(raw[140:144], "little")
    return raw[132 + 12 + group_length:], str(ds.file_meta.TransferSyntaxUID)


#: Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1)
#: that result objects copy from their source; senders often leave them out
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")


def complete_type2(ds: Dataset) -> Dataset:
    """Add missing Type 2 patient/study attributes, empty, to an in-memory source
    dataset (legal: Type 2 may be zero length), so highdicom can copy them."""
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _renamed(ds: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    """``ds`` with the given Series and SOP Instance UIDs."""
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return ds


def merge_results(results: list[AnalysisResult]) -> AnalysisResult:
    """One result for a multi-image study: all findings (each names its image),
    maximum abnormality and scores."""
    done = [r for r in results if not r.skipped]
    if not done:
        return results[0]
    if len(done) == 1:
        return done[0]
    scores: dict[str, float] = {}
    for r in done:
        for k, v in r.scores.items():
            scores[k] = max(v, scores.get(k, 0.0))
    abn = [r.abnormality for r in done if r.abnormality is not None]
    first = done[0]
    return AnalysisResult(study_type=first.study_type, model=first.model,
                          findings=tuple(f for r in done for f in r.findings), abnormality=max(abn) if abn else None,
                          scores=scores, source=first.source, total_agatston=first.total_agatston,
                          limitations=tuple(dict.fromkeys(c for r in done for c in r.limitations)))


# ------------------------------------------------------------------ the analyzer
class Analyzer:
    """Runs one job (routing or a task) against the archive and index.

    Thread-safe: each thread uses its own index connection; task models are shared.
    """

    def __init__(self, config: NodeConfig, db: Database, analysis: AnalysisConfig | None = None,
                 tasks: TaskCache | None = None) -> None:
        self.config = config
        self.db = db
        self.analysis = analysis or load_analysis_config(config.root)
        self.archive = Archive(config, db)
        self.jobs = JobQueue(db)
        self.tasks = tasks or TaskCache(self.analysis.ort_threads)
        self.similarity = (StudyIndexer(config.root, db, self.analysis.ort_threads)  # similar-case embeddings
                           if StudyIndexer is not None else None)
        ensure_schema(db)

    # -------------------------------------------------------------- dispatch
    def execute(self, job: Job) -> dict[str, Any]:
        """Run a claimed (``running``) job to completion or failure; returns its outcome."""
        t0 = time.perf_counter()
        try:
            if job.task == ANALYZE_TASK:
                outcome = self._route(job)
            else:
                outcome = self._run_task(job, t0)
            if outcome.get("state") == "done" and self.similarity is not None:
                self.similarity.after_job(job)  # never raises
            WAKE.set()
            return outcome
        except Exception as e:  # noqa: BLE001 - a job failure must not stop the worker
            from models.errors import ModelError

            logger.error("job %s (%s) failed: %s", job.id, job.task, e)
            logger.debug("%s", traceback.format_exc())
            # deterministic failures (bad input, missing model, unbuildable object) are not retried
            retry = not isinstance(e, (ResultError, ModelError, TaskUnavailableError))
            try:
                state = self.jobs.fail(job.id, f"{type(e).__name__}: {e}", retry=retry, worker_id=job.worker_id)
            except JobError:
                state = "unknown"
            if state == "failed":
                self.db.execute("UPDATE studies SET ai_status = 'failed' WHERE study_uid = ? "
                                "AND COALESCE(ai_status, '') != 'done'", (job.study_uid,))
            return {"state": state, "error": str(e)}

    def _finish(self, conn: Any, job: Job, outcome: dict[str, Any], models: dict[str, str] | None = None,
                timings: dict[str, float] | None = None) -> None:
        now = time.time()
        cur = conn.execute(
            "UPDATE jobs SET state = 'done', error = NULL, model_versions = ?, outcome = ?, timings = ?, "
            "finished_at = ?, updated_at = ? WHERE id = ? AND state = 'running' AND worker_id = ?",
            (json.dumps(models or {}, sort_keys=True), json.dumps(outcome, sort_keys=True, default=str),
             json.dumps(timings or {}, sort_keys=True), now, now, job.id, job.worker_id))
        if cur.rowcount != 1:
            raise JobError(f"job {job.id} is no longer running (re-queued by another process?)")

    # -------------------------------------------------------------- routing
    def study_series(self, study_uid: str) -> list[tuple[routing.SeriesInfo, list[dict[str, Any]]]]:
        """Image series of a study with their instances (AI objects excluded)."""
        rows = self.db.query(
            "SELECT sop_instance_uid, series_uid, sha256, path FROM instances WHERE study_uid = ? "
            "AND COALESCE(source_ae, '') != ? ORDER BY series_uid, instance_number, sop_instance_uid",
            (study_uid, AI_SOURCE_AE))
        by_series: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_series.setdefault(r["series_uid"], []).append(dict(r))
        out = []
        for series_uid, insts in by_series.items():
            try:
                ds = pydicom.dcmread(self.archive.absolute(insts[0]["path"]), stop_before_pixels=True)
            except Exception as e:  # noqa: BLE001
                logger.warning("series %s header unreadable (%s); not routed", phi(series_uid), e)
                continue
            out.append((routing.series_info(ds, len(insts)), insts))
        return out

    def _route(self, job: Job) -> dict[str, Any]:
        series = self.study_series(job.study_uid)
        decision = routing.route([s for s, _ in series], self.analysis.rules)
        by_uid = {s.series_uid: (s, insts) for s, insts in series}
        pacs_priority = next((s.priority for s, _ in series if s.priority), "")
        prio = max(job.priority, routing.pacs_priority_rank(pacs_priority))
        queued, unavailable, existing = [], {}, []
        for plan in decision.tasks:
            why = self.tasks.available(plan.task)
            if why is not None:
                unavailable[plan.task] = why
                continue
            insts = [i for u in plan.series_uids for i in by_uid[u][1]]
            key = content_key([(i["sop_instance_uid"], i["sha256"]) for i in insts])
            job_id = self.jobs.enqueue(job.study_uid, plan.task, key, priority=prio,
                                       max_attempts=self.analysis.max_attempts)
            if job_id is None:
                existing.append(plan.task)
                continue
            self.db.execute("UPDATE jobs SET inputs = ? WHERE id = ?", (json.dumps(list(plan.series_uids)), job_id))
            queued.append({"task": plan.task, "job": job_id})
        outcome: dict[str, Any] = {"routing": decision.to_json(), "queued": queued, "unchanged": existing,
                                   "unavailable": unavailable, "series": routing.summarise(s for s, _ in series)}
        if not decision.tasks:
            status = "not_applicable"
        elif queued:
            status = "queued"
        elif existing:
            status = None  # same content as before: keep the study's status
        else:
            status = "unavailable"
        with self.db.transaction() as conn:
            if pacs_priority:
                # the PACS priority is recorded, never changed by the AI
                conn.execute("UPDATE studies SET priority = ? WHERE study_uid = ? AND COALESCE(priority, '') = ''",
                             (pacs_priority, job.study_uid))
            if status is not None:
                conn.execute("UPDATE studies SET ai_status = ? WHERE study_uid = ?", (status, job.study_uid))
            self._finish(conn, job, outcome)
        logger.info("study %s routed: %s", phi(job.study_uid),
                    ", ".join(t.task for t in decision.tasks) or f"nothing applicable ({decision.not_applicable})")
        return {"state": "done", **outcome}

    # -------------------------------------------------------------- tasks
    def _inputs(self, job: Job) -> list[dict[str, Any]]:
        row = self.db.query("SELECT inputs FROM jobs WHERE id = ?", (job.id,))[0]
        series_uids = json.loads(row["inputs"] or "[]")
        if not series_uids:
            raise JobError(f"job {job.id} has no input series recorded")
        marks = ", ".join("?" for _ in series_uids)
        rows = self.db.query(
            f"SELECT sop_instance_uid, sha256, path FROM instances WHERE series_uid IN ({marks}) "
            "AND COALESCE(source_ae, '') != ? ORDER BY series_uid, instance_number, sop_instance_uid",
            (*series_uids, AI_SOURCE_AE))
        return [dict(r) for r in rows]

    def _run_task(self, job: Job, t_start: float) -> dict[str, Any]:
        inputs = self._inputs(job)
        key = content_key([(i["sop_instance_uid"], i["sha256"]) for i in inputs])
        if key != job.content_key:
            outcome = {"stale": "the input series changed after this job was queued; a newer job analyses them"}
            with self.db.transaction() as conn:
                self._finish(conn, job, outcome)
            return {"state": "done", **outcome}
        task = self.tasks.get(job.task)
        stable_at = self.db.query("SELECT stable_at FROM studies WHERE study_uid = ?", (job.study_uid,))[0][0]
        t0 = time.perf_counter()
        output = task.run([self.archive.absolute(i["path"]) for i in inputs])
        t_model = time.perf_counter() - t0
        objects, t_build = self._build_and_store(job, task.study_type, output)
        timings = {"queued_s": round(max(0.0, time.time() - self._created_at(job)), 3),
                   "model_s": round(t_model, 4), "objects_s": round(t_build, 4),
                   "total_s": round(time.perf_counter() - t_start, 4), **{f"task_{k}": v for k, v in output.timings.items()}}
        return self._commit(job, task.study_type, output, objects, timings, stable_at)

    def _created_at(self, job: Job) -> float:
        return float(self.db.query("SELECT created_at FROM jobs WHERE id = ?", (job.id,))[0][0])

    def _predecessor_srs(self, job: Job) -> list[Dataset]:
        out = []
        for r in self.db.query("SELECT path FROM ai_objects WHERE study_uid = ? AND task = ? AND kind = 'sr' "
                               "AND state = 'current' AND job_id != ?", (job.study_uid, job.task, job.id)):
            try:
                out.append(pydicom.dcmread(self.archive.absolute(r["path"])))
            except Exception:  # noqa: BLE001 - a missing predecessor only loses the reference
                logger.warning("predecessor SR of study %s unreadable", phi(job.study_uid))
        return out

    def _build_and_store(self, job: Job, study_type: str, output: TaskOutput) -> tuple[list[dict[str, Any]], float]:
        """Build SR/SEG/GSPS and store them in the archive; returns their descriptions."""
        t0 = time.perf_counter()
        analysed = [(r, srcs) for r, srcs in output.results if not r.skipped]
        uid = lambda *p: derived_uid(job.study_uid, job.task, job.content_key, *p)  # noqa: E731
        planned: list[tuple[str, str, str, Any]] = []  # kind, series uid, sop uid, builder
        for k, ds in enumerate(output.derived):
            # deterministic UIDs so a re-run after a crash stores nothing twice
            src_uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID if "SourceImageSequence" in ds else k
            planned.append(("derived", uid("derived-series"), uid("derived", src_uid),
                            lambda s, i, d=ds: _renamed(d, s, i)))
        delivered = self._delivered_predecessors(job)
        if delivered:  # withdraw what peers already hold (IHE IOCM rejection note)
            planned.append(("rejection", uid("rejection-series"), uid("rejection", 1),
                            lambda s, i, d=delivered: rejection.build_rejection_note(
                                self._read_headers(job, [p for _, p, _ in d]), s, i)))
        if not analysed and not planned:
            return [], 0.0
        for _, srcs in analysed:
            for ds in srcs:
                complete_type2(ds)
        if analysed:
            merged = merge_results([r for r, _ in analysed])
            sources = [ds for _, srcs in analysed for ds in srcs]
            preds = self._predecessor_srs(job)
            planned.append(("sr", uid("sr-series"), uid("sr", 1), lambda s, i: sr.build_measurement_report(
                merged, sources, study_type=study_type, predecessors=preds, series_instance_uid=s,
                sop_instance_uid=i)))
        n = 0
        for result, srcs in analysed:
            if not result.findings:
                continue
            n += 1
            planned.append(("seg", uid("seg-series"), uid("seg", n), lambda s, i, r=result, d=srcs, k=n:
                            seg.build_segmentation(r, d, series_instance_uid=s, sop_instance_uid=i, instance_number=k)))
            planned.append(("gsps", uid("gsps-series"), uid("gsps", n), lambda s, i, r=result, d=srcs, k=n:
                            gsps.build_presentation_state(r, d, series_instance_uid=s, sop_instance_uid=i,
                                                          instance_number=k)))

        objects = []
        for kind, series_uid, sop_uid, build in planned:
            existing = self.db.query("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop_uid,))
            if existing:  # stored by an earlier, interrupted run of this job
                objects.append({"kind": kind, "series_uid": series_uid, "sop_instance_uid": sop_uid,
                                "path": existing[0]["path"]})
                continue
            try:
                ds = build(series_uid, sop_uid)
            except (ResultError, ValueError) as e:
                logger.warning("job %s: no %s (%s)", job.id, kind.upper(), e)
                continue
            data, syntax = encode_dataset(ds)
            stored = self.archive.store(data, transfer_syntax=syntax, sop_class_uid=str(ds.SOPClassUID),
                                        sop_instance_uid=sop_uid, source_ae=AI_SOURCE_AE)
            objects.append({"kind": kind, "series_uid": series_uid, "sop_instance_uid": sop_uid,
                            "path": stored.path.relative_to(self.config.root).as_posix()})
        for o in objects:
            if o["kind"] == "rejection":  # sent to the peers that hold the rejected objects, only
                o["peers"] = sorted({peer for _, _, peer in delivered})
        return objects, time.perf_counter() - t0

    def _delivered_predecessors(self, job: Job) -> list[tuple[str, str, str]]:
        """(SOP Instance UID, path, peer) of this task's current objects that a peer holds or receives."""
        rows = self.db.query(
            "SELECT DISTINCT a.sop_instance_uid, a.path, o.peer FROM ai_objects a JOIN outbox o "
            "ON o.sop_instance_uid = a.sop_instance_uid WHERE a.study_uid = ? AND a.task = ? AND a.state = 'current' "
            "AND a.job_id != ? AND a.kind != 'rejection' AND o.state IN ('sent', 'sending') "
            "ORDER BY a.sop_instance_uid, o.peer", (job.study_uid, job.task, job.id))
        return [(r["sop_instance_uid"], r["path"], r["peer"]) for r in rows]

    def _read_headers(self, job: Job, paths: list[str]) -> list[Dataset]:
        """Headers of archived objects (each path once); unreadable ones are left out with a warning."""
        out = []
        for rel in dict.fromkeys(paths):
            try:
                out.append(pydicom.dcmread(self.archive.absolute(rel), stop_before_pixels=True))
            except Exception:  # noqa: BLE001 - the others are still withdrawn
                logger.warning("job %s: superseded object unreadable, not in the rejection note", job.id)
        return out

    def _commit(self, job: Job, study_type: str, output: TaskOutput, objects: list[dict[str, Any]],
                timings: dict[str, float], stable_at: float | None = None) -> dict[str, Any]:
        analysed = [r for r, _ in output.results if not r.skipped]
        merged = merge_results(analysed) if analysed else (output.results[0][0] if output.results else None)
        draft = report.draft_report(merged, language=self.analysis.report_language) if merged is not None else None
        critical = bool(draft and draft.critical)
        now = time.time()
        superseded_paths: list[str] = []
        sr_uid = next((o["sop_instance_uid"] for o in objects if o["kind"] == "sr"), None)
        with self.db.transaction() as conn:
            newer = conn.execute(
                "SELECT 1 FROM jobs WHERE study_uid = ? AND task = ? AND id > ? AND state = 'done'",
                (job.study_uid, job.task, job.id)).fetchone()
            if newer is not None:
                # a newer analysis of this study already finished: ours is history at once
                for o in objects:
                    self._remove_object(conn, o["sop_instance_uid"])
                    superseded_paths.append(o["path"])
                outcome = {"stale": "a newer analysis of this study finished first", "objects": []}
                self._finish(conn, job, outcome, output.models, timings)
            else:
                old = conn.execute(
                    "SELECT sop_instance_uid, path FROM ai_objects WHERE study_uid = ? AND task = ? "
                    "AND state = 'current' AND job_id != ? AND kind != 'rejection'",
                    (job.study_uid, job.task, job.id)).fetchall()
                for o in old:
                    conn.execute("UPDATE ai_objects SET state = 'superseded', superseded_at = ? "
                                 "WHERE sop_instance_uid = ?", (now, o["sop_instance_uid"]))
                    conn.execute("UPDATE outbox SET state = 'superseded', updated_at = ? WHERE sop_instance_uid = ? "
                                 "AND state = 'pending'", (now, o["sop_instance_uid"]))
                    self._remove_object(conn, o["sop_instance_uid"])
                    superseded_paths.append(o["path"])
                for o in objects:
                    conn.execute(
                        "INSERT INTO ai_objects (study_uid, task, job_id, content_key, kind, series_uid, "
                        "sop_instance_uid, path, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'current', ?) "
                        "ON CONFLICT (sop_instance_uid) DO NOTHING",
                        (job.study_uid, job.task, job.id, job.content_key, o["kind"], o["series_uid"],
                         o["sop_instance_uid"], o["path"], now))
                conn.execute("DELETE FROM findings WHERE study_uid = ? AND kind = ?", (job.study_uid, job.task))
                for r in analysed:
                    data = r.to_json()
                    data["sr_sop_instance_uid"] = sr_uid
                    conn.execute(
                        "INSERT INTO findings (study_uid, job_id, kind, model_name, model_version, data, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (job.study_uid, job.id, job.task, r.model.name, r.model.version, json.dumps(data), now))
                report_note = self._write_draft(conn, job, draft, sr_uid, now) if draft is not None else None
                peers = [r[0] for r in conn.execute(
                    "SELECT d.peer FROM destinations d JOIN peers p ON p.name = d.peer WHERE d.auto_send = 1")]
                sends = [(peer, o) for peer in peers for o in objects if o["kind"] != "rejection"]
                sends += [(peer, o) for o in objects if o["kind"] == "rejection" for peer in o.get("peers", [])]
                for peer, o in sends:
                    exists = conn.execute("SELECT 1 FROM outbox WHERE peer = ? AND sop_instance_uid = ?",
                                          (peer, o["sop_instance_uid"])).fetchone()
                    if exists is None:
                        conn.execute(
                            "INSERT INTO outbox (peer, path, kind, study_uid, sop_instance_uid, state, "
                            "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                            (peer, o["path"], o["kind"], job.study_uid, o["sop_instance_uid"], now, now, now))
                conn.execute("UPDATE studies SET ai_status = 'done', ai_critical = ? WHERE study_uid = ?",
                             (1 if critical else 0, job.study_uid))
                self._keep_stable(conn, job.study_uid, stable_at)
                if critical:
                    # critical AI finding: the study's remaining jobs first (never lowers a priority)
                    conn.execute("UPDATE jobs SET priority = ? WHERE study_uid = ? AND state = 'queued' "
                                 "AND priority < ?", (CRITICAL_PRIORITY, job.study_uid, CRITICAL_PRIORITY))
                outcome = {"objects": [{k: v for k, v in o.items() if k != "peers"} for o in objects],
                           "superseded": [o["sop_instance_uid"] for o in old],
                           "rejection_note_to": sorted({p for o in objects for p in o.get("peers", [])}),
                           "findings": sum(len(r.findings) for r in analysed), "critical": critical,
                           "skipped": output.skipped, "report": report_note, "outbox_peers": peers}
                self._finish(conn, job, outcome, output.models, timings)
        for rel in superseded_paths:
            try:
                self.archive.absolute(rel).unlink()
            except OSError:
                pass
        DELIVERY_WAKE.set()
        logger.info("job %s (%s) done: %d finding(s), %d object(s)%s", job.id, job.task, outcome.get("findings", 0),
                    len(outcome.get("objects", [])), ", critical" if critical else "")
        return {"state": "done", **outcome}

    @staticmethod
    def _keep_stable(conn: Any, study_uid: str, stable_at: float | None) -> None:
        """Storing our own objects re-opened the study (archive contract); close it
        again unless a real instance arrived since it became stable (a late one)."""
        row = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if row is None or row["state"] != "receiving" or stable_at is None:
            return
        last = conn.execute("SELECT MAX(received_at) FROM instances WHERE study_uid = ? "
                            "AND COALESCE(source_ae, '') != ?", (study_uid, AI_SOURCE_AE)).fetchone()[0]
        if last is not None and last <= stable_at:
            conn.execute("UPDATE studies SET state = 'stable', stable_at = ?, last_received = ? WHERE study_uid = ?",
                         (stable_at, last, study_uid))

    def _remove_object(self, conn: Any, sop_instance_uid: str) -> None:
        row = conn.execute("SELECT series_uid, study_uid FROM instances WHERE sop_instance_uid = ?",
                           (sop_instance_uid,)).fetchone()
        if row is None:
            return
        conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        conn.execute("UPDATE series SET num_instances = num_instances - 1 WHERE series_uid = ?", (row["series_uid"],))
        conn.execute("UPDATE studies SET num_instances = num_instances - 1 WHERE study_uid = ?", (row["study_uid"],))
        left = conn.execute("SELECT num_instances FROM series WHERE series_uid = ?", (row["series_uid"],)).fetchone()
        if left is not None and left[0] <= 0:
            conn.execute("DELETE FROM series WHERE series_uid = ?", (row["series_uid"],))
            conn.execute("UPDATE studies SET num_series = num_series - 1 WHERE study_uid = ?", (row["study_uid"],))

    def _write_draft(self, conn: Any, job: Job, draft: report.DraftReport, sr_uid: str | None,
                     now: float) -> str:
        """Replace the AI draft; never touch a signed report or a draft a person edited."""
        rows = conn.execute("SELECT id, state, author FROM reports WHERE study_uid = ? ORDER BY id DESC",
                            (job.study_uid,)).fetchall()
        if any(r["state"] == "signed" for r in rows):
            return "kept: the study's report is signed"
        if any(r["state"] == "draft" and (r["author"] or AI_SOURCE_AE) not in (AI_SOURCE_AE, "medws-ai") for r in rows):
            return "kept: a radiologist edited the draft"
        body = {**draft.to_json(), "task": job.task, "job_id": job.id, "sr_sop_instance_uid": sr_uid}
        conn.execute("DELETE FROM reports WHERE study_uid = ? AND state = 'draft'", (job.study_uid,))
        conn.execute("INSERT INTO reports (study_uid, state, body, author, created_at, updated_at) "
                     "VALUES (?, 'draft', ?, 'medws-ai', ?, ?)",
                     (job.study_uid, json.dumps(body, ensure_ascii=False), now, now))
        return "draft written"


# ------------------------------------------------------------------ runners
class JobRunner(abc.ABC):
    """Runs queued jobs; implementations: :class:`LocalWorkerPool` (threads here) or a
    distributed engine that claims the same ``jobs`` rows elsewhere."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def wake(self) -> None:
        WAKE.set()


class LocalWorkerPool(JobRunner):
    """``concurrency`` worker threads claiming jobs (highest priority, oldest first)."""

    def __init__(self, analyzer: Analyzer, concurrency: int = 1, poll_interval_s: float = 1.0,
                 lease_s: float = LEASE_S, tasks: tuple[str, ...] | None = None) -> None:
        self.analyzer = analyzer
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.tasks = tasks
        self.worker_ids = [worker_name(n) for n in range(concurrency)]
        self.leases = LeaseKeeper(analyzer.db, self.worker_ids, lease_s)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _loop(self, worker_id: str) -> None:
        jobs = JobQueue(self.analyzer.db)
        while not self._stop.is_set():
            WAKE.clear()
            try:
                job = jobs.claim(worker_id, self.tasks)
            except Exception:  # noqa: BLE001 - e.g. database busy; try again
                logger.exception("claiming a job failed")
                job = None
            if job is None:
                WAKE.wait(self.poll_interval_s)
                continue
            self.analyzer.execute(job)

    def start(self) -> None:
        self.leases.start()
        for n, worker_id in enumerate(self.worker_ids):
            t = threading.Thread(target=self._loop, args=(worker_id,), name=f"analysis-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop taking jobs; wait up to ``timeout_s`` in all for running ones.

        A job still running after that is abandoned with the (daemon) thread when the
        process exits: its results are committed in one transaction with the job's
        completion, so nothing half-done is kept, and ``requeue_running`` at the next
        start puts it back in the queue.  A clean shutdown never waits for a long CT job.
        """
        self._stop.set()
        WAKE.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        self.leases.stop()
        if busy:
            logger.warning("shutdown: %d job(s) still running are left to be re-queued at the next start", len(busy))


def claim_job(db: Database, job_id: int, worker_id: str) -> Job | None:
    """Claim one specific queued job (``None`` when it is not queued)."""
    now = time.time()
    with db.transaction() as conn:
        cur = conn.execute("UPDATE jobs SET state = 'running', worker_id = ?, attempts = attempts + 1, "
                           "started_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                           (worker_id, now, now, job_id))
        if cur.rowcount != 1:
            return None
    return JobQueue(db).get(job_id)


class AnalysisService:
    """Worker pool + outbox delivery for ``medws node serve`` and ``medws demo``."""

    def __init__(self, config: NodeConfig, analysis: AnalysisConfig | None = None) -> None:
        from dicom_node.delivery import Delivery, DeliveryWorker

        self.config = config
        self.analysis = analysis or load_analysis_config(config.root)
        self.db = Database(config.database_url, root=config.root)
        ensure_schema(self.db)
        self.analyzer = Analyzer(config, self.db, self.analysis)
        self.pool = LocalWorkerPool(self.analyzer, self.analysis.workers, self.analysis.poll_interval_s)
        self.delivery = Delivery(self.db, config.ae_title, self.analysis.outbox_max_attempts,
                                 self.analysis.outbox_backoff_s, self.analysis.outbox_backoff_max_s)
        self.delivery_worker = DeliveryWorker(self.delivery, self.analysis.poll_interval_s)

    def start(self, warm: tuple[str, ...] = ("cxr",)) -> None:
        """Re-queue what a crash left, load models, start workers and delivery."""
        JobQueue(self.db).requeue_running()
        self.delivery.recover()
        for name in warm:
            self.analyzer.tasks.available(name)
        self.pool.start()
        self.delivery_worker.start()
        logger.info("analysis: %d worker(s), outbox delivery running", self.analysis.workers)

    def stop(self) -> None:
        self.pool.stop()
        self.delivery_worker.stop()
        self.db.close()

    def wait_idle(self, timeout_s: float = 120.0, outbox: bool = True) -> bool:
        """Wait until no job is queued/running (and no outbox item pending); True when idle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = self.db.query("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")[0][0]
            if outbox:
                busy += self.db.query("SELECT COUNT(*) FROM outbox WHERE state IN ('sending') OR "
                                      "(state = 'pending' AND attempts = 0)")[0][0]
            if busy == 0:
                return True
            time.sleep(0.1)
        return False


def serve_with_analysis(config: NodeConfig, hooks: list[Any] | None = None) -> int:
    """``medws node serve``: the node plus analysis workers and outbox delivery.

    The services start once the node listens (after it re-queued crashed jobs)."""
    from dicom_node.scp import serve

    ready, stop = threading.Event(), threading.Event()
    service = AnalysisService(config)
    started = threading.Event()
    starting = threading.Lock()

    def start_when_ready() -> None:
        ready.wait()
        with starting:
            if not stop.is_set():
                service.start()
                started.set()

    threading.Thread(target=start_when_ready, name="analysis-start", daemon=True).start()
    try:
        return serve(config, hooks=hooks, ready=ready, stop=stop)
    finally:
        stop.set()
        # a stop that arrives while the services start (model warm-up: ONNX Runtime sessions
        # being created) waits for the start, then stops them: exiting with a session
        # half-created in a daemon thread hung the interpreter's shutdown
        with starting:
            if started.is_set():
                service.stop()


def work(config: NodeConfig, tasks: tuple[str, ...] | None = None, workers: int | None = None,
         stop: threading.Event | None = None, lease_s: float = LEASE_S) -> int:
    """``medws node worker``: analysis workers only, on the archive and index of ``config``.

    More workers for a node: on its machine, or on other machines (GPU) that share its
    PostgreSQL index and its archive folder (the same path, e.g. a network file system).
    They take jobs from the same queue (``tasks``: only these), renew their leases and
    write results and outbox items as the node's own workers do; the node delivers them.
    Runs until SIGTERM/SIGINT (or ``stop``).
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    analysis = load_analysis_config(config.root)
    db = Database(config.database_url, root=config.root)
    try:
        ensure_schema(db)
        JobQueue(db).requeue_running(lease_s)
        pool = LocalWorkerPool(Analyzer(config, db, analysis), workers or analysis.workers,
                               analysis.poll_interval_s, lease_s=lease_s, tasks=tasks)
        pool.start()
        print(json.dumps({"event": "working", "workers": pool.worker_ids, "tasks": list(tasks or ()) or "all"}),
              flush=True)
        from dicom_node.scp import wait_for_stop

        wait_for_stop(stop)
        pool.stop()
    finally:
        db.close()
    return 0


# ------------------------------------------------------------------ one study, synchronously
def analyze_study(config: NodeConfig, study_uid: str, analysis: AnalysisConfig | None = None,
                  timeout_s: float = 600.0) -> dict[str, Any]:
    """``medws analyze``: route and run every task of one study now; returns a summary.

    The same jobs as the worker pool (a running ``serve`` may take some of them; this
    waits for those).  Content already analysed is not analysed again.
    """
    db = Database(config.database_url, root=config.root)
    try:
        ensure_schema(db)
        rows = db.query("SELECT study_uid FROM studies WHERE study_uid = ?", (study_uid,))
        if not rows:
            raise NodeError(f"no study {study_uid} in the archive")
        analyzer = Analyzer(config, db, analysis)
        pairs = [(r[0], r[1]) for r in db.query(
            "SELECT sop_instance_uid, sha256 FROM instances WHERE study_uid = ? AND COALESCE(source_ae, '') != ?",
            (study_uid, AI_SOURCE_AE))]
        jobs = JobQueue(db)
        key = content_key(pairs)
        jobs.enqueue(study_uid, ANALYZE_TASK, key)
        worker = worker_name("analyze")
        deadline = time.monotonic() + timeout_s
        with LeaseKeeper(db, [worker]):
            _run_study_jobs(db, analyzer, jobs, study_uid, worker, deadline)
        return study_summary(db, study_uid)
    finally:
        db.close()


def _run_study_jobs(db: Database, analyzer: Analyzer, jobs: JobQueue, study_uid: str, worker: str,
                    deadline: float) -> None:
    """Claim and run the study's queued jobs until none is queued or running (or ``deadline``)."""
    while time.monotonic() < deadline:
        pending = [j for j in jobs.list(study_uid=study_uid) if j.state in ("queued", "running")]
        if not pending:
            break
        ran = False
        for j in pending:
            if j.state == "queued":
                claimed = claim_job(db, j.id, worker)
                if claimed is not None:
                    analyzer.execute(claimed)
                    ran = True
        if not ran:
            time.sleep(0.2)


def study_summary(db: Database, study_uid: str) -> dict[str, Any]:
    """Jobs, findings, AI objects and draft report of one study (JSON-able)."""
    ensure_schema(db)
    study = db.query("SELECT ai_status, ai_critical, priority FROM studies WHERE study_uid = ?", (study_uid,))
    jobs = [{"id": r["id"], "task": r["task"], "state": r["state"], "attempts": r["attempts"], "error": r["error"],
             "models": json.loads(r["model_versions"] or "{}"), "timings": json.loads(r["timings"] or "{}"),
             "outcome": _short_outcome(r["outcome"])}
            for r in db.query("SELECT * FROM jobs WHERE study_uid = ? ORDER BY id", (study_uid,))]
    findings = []
    for r in db.query("SELECT kind, data FROM findings WHERE study_uid = ? ORDER BY id", (study_uid,)):
        data = json.loads(r["data"] or "{}")
        findings += [{"task": r["kind"], "label": f.get("label"), "probability": f.get("probability"),
                      "laterality": f.get("laterality"), "zone": f.get("zone")} for f in data.get("findings", [])]
    objects = [dict(r) for r in db.query("SELECT kind, sop_instance_uid, state FROM ai_objects WHERE study_uid = ? "
                                         "ORDER BY id", (study_uid,))]
    rep = db.query("SELECT state, body FROM reports WHERE study_uid = ? ORDER BY id DESC LIMIT 1", (study_uid,))
    text = None
    if rep:
        try:
            text = json.loads(rep[0]["body"]).get("text")
        except (json.JSONDecodeError, AttributeError):
            text = rep[0]["body"]
    s = study[0] if study else None
    return {"study_uid": study_uid, "ai_status": s["ai_status"] if s else None,
            "ai_critical": bool(s["ai_critical"]) if s else False, "pacs_priority": s["priority"] if s else None,
            "jobs": jobs, "findings": findings, "objects": objects, "report": text}


def _short_outcome(raw: str | None) -> dict[str, Any]:
    try:
        o = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    out = {k: o[k] for k in ("stale", "critical", "skipped", "report", "unavailable", "unchanged") if o.get(k)}
    if "routing" in o:
        out["routing"] = o["routing"]
    if "objects" in o:
        out["objects"] = [x["kind"] for x in o["objects"]]
    return out
