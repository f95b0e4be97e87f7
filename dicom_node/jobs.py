"""Persistent job queue in the index (``jobs`` table).

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` (a retryable failure goes
back to ``queued`` until ``max_attempts``).  A job is unique per (study, task,
content key), so the same content is never queued twice.  :meth:`JobQueue.claim` is
atomic (:meth:`Database.transaction`: ``BEGIN IMMEDIATE`` on SQLite, the advisory
write lock on PostgreSQL), and :meth:`JobQueue.requeue_running` at start-up leaves no
job stuck after a crash.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from dicom_node.db import Database
from dicom_node.errors import JobError
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")


@dataclass(frozen=True)
class Job:
    """One row of the ``jobs`` table."""

    id: int
    study_uid: str
    task: str
    content_key: str
    priority: int
    state: str
    attempts: int
    max_attempts: int
    worker_id: str | None
    error: str | None
    model_versions: dict[str, str]

    @classmethod
    def from_row(cls, row: Any) -> "Job":
        return cls(
            id=int(row["id"]), study_uid=row["study_uid"], task=row["task"], content_key=row["content_key"],
            priority=int(row["priority"]), state=row["state"], attempts=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]), worker_id=row["worker_id"], error=row["error"],
            model_versions=json.loads(row["model_versions"] or "{}"),
        )


class JobQueue:
    """The job queue API used by the stability hook and the analysis workers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, study_uid: str, task: str, content_key: str, priority: int = 0, max_attempts: int = 3) -> int | None:
        """Queue ``task`` for ``study_uid``; ``None`` when that content was already queued."""
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO jobs (study_uid, task, content_key, priority, state, max_attempts, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?) ON CONFLICT (study_uid, task, content_key) DO NOTHING",
            (study_uid, task, content_key, priority, max_attempts, now, now),
        )
        if cur.rowcount != 1:
            logger.debug("job %s for study %s already queued for this content", task, phi(study_uid))
            return None
        job_id = self.db.query(
            "SELECT id FROM jobs WHERE study_uid = ? AND task = ? AND content_key = ?", (study_uid, task, content_key)
        )[0][0]
        logger.info("queued job %s (%s) for study %s", job_id, task, phi(study_uid))
        return int(job_id)

    def claim(self, worker_id: str, tasks: tuple[str, ...] | None = None) -> Job | None:
        """Atomically take the highest-priority, oldest queued job (optionally of ``tasks``)."""
        now = time.time()
        where = "state = 'queued'"
        params: list[Any] = []
        if tasks:
            where += " AND task IN (" + ", ".join("?" for _ in tasks) + ")"
            params.extend(tasks)
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT id FROM jobs WHERE {where} ORDER BY priority DESC, created_at, id LIMIT 1", params
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', worker_id = ?, attempts = attempts + 1, started_at = ?, "
                "updated_at = ? WHERE id = ?",
                (worker_id, now, now, row["id"]),
            )
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return Job.from_row(job)

    def _running(self, job_id: int) -> None:
        rows = self.db.query("SELECT state FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobError(f"no job {job_id}")
        if rows[0]["state"] != "running":
            raise JobError(f"job {job_id} is {rows[0]['state']}, not running")

    def complete(self, job_id: int, model_versions: dict[str, str] | None = None) -> None:
        """Mark a running job done, recording the models (name -> version) it used."""
        self._running(job_id)
        now = time.time()
        self.db.execute(
            "UPDATE jobs SET state = 'done', model_versions = ?, error = NULL, finished_at = ?, updated_at = ? "
            "WHERE id = ?",
            (json.dumps(model_versions or {}, sort_keys=True), now, now, job_id),
        )

    def fail(self, job_id: int, error: str, retry: bool = True) -> str:
        """Record a failure; re-queue when ``retry`` and attempts remain.  Returns the new state."""
        self._running(job_id)
        now = time.time()
        row = self.db.query("SELECT attempts, max_attempts FROM jobs WHERE id = ?", (job_id,))[0]
        state = "queued" if retry and row["attempts"] < row["max_attempts"] else "failed"
        self.db.execute(
            "UPDATE jobs SET state = ?, error = ?, worker_id = NULL, updated_at = ?, finished_at = ? WHERE id = ?",
            (state, error[:4000], now, now if state == "failed" else None, job_id),
        )
        logger.warning("job %s failed (%s), now %s", job_id, error[:200], state)
        return state

    def requeue_running(self) -> int:
        """Put every ``running`` job back to ``queued`` (start-up after a crash)."""
        cur = self.db.execute(
            "UPDATE jobs SET state = 'queued', worker_id = NULL, updated_at = ? WHERE state = 'running'", (time.time(),)
        )
        if cur.rowcount:
            logger.warning("re-queued %d job(s) left running by a previous run", cur.rowcount)
        return int(cur.rowcount)

    def get(self, job_id: int) -> Job:
        """One job by id."""
        rows = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobError(f"no job {job_id}")
        return Job.from_row(rows[0])

    def list(self, study_uid: str | None = None, state: str | None = None) -> list[Job]:
        """Jobs, optionally of one study and/or state, oldest first."""
        sql, params = "SELECT * FROM jobs WHERE 1 = 1", []
        if study_uid:
            sql += " AND study_uid = ?"
            params.append(study_uid)
        if state:
            sql += " AND state = ?"
            params.append(state)
        return [Job.from_row(r) for r in self.db.query(sql + " ORDER BY id", params)]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (every state present, zero included)."""
        out = {s: 0 for s in STATES}
        for row in self.db.query("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[row[0]] = int(row[1])
        return out
