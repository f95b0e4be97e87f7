"""Persistent job queue in the index (``jobs`` table).

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` (a retryable failure goes
back to ``queued`` until ``max_attempts``).  A job is unique per (study, task,
content key), so the same content is never queued twice.  :meth:`JobQueue.claim` is
atomic (:meth:`Database.transaction`: ``BEGIN IMMEDIATE`` on SQLite, the advisory
write lock on PostgreSQL), and :meth:`JobQueue.requeue_running` at start-up leaves no
job stuck after a crash.

Several processes, on one machine or several sharing a PostgreSQL index and the archive
folder (``medws node worker``), take jobs from the same queue.  A worker id names its
host and process (:func:`worker_name`, ``HOST:PID-N``); a running job's ``updated_at`` is
its lease, renewed by :meth:`JobQueue.heartbeat` while it runs.  Start-up re-queues only
the running jobs of this host's dead processes, and any job whose lease expired
(:meth:`JobQueue.requeue_stale`): a worker starting on one machine never takes back the
jobs another machine is running.  Completion checks that the job is still the caller's.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import threading
from dataclasses import dataclass
from typing import Any

from dicom_node.db import Database
from dicom_node.errors import JobError
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")
LEASE_S = 120.0
"""A running job whose worker has not renewed it for this long is re-queued (crashed host)."""


def worker_name(suffix: str | int) -> str:
    """This process's worker id ``HOST:PID-SUFFIX``."""
    return f"{socket.gethostname()}:{os.getpid()}-{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def orphaned_here(worker_id: str | None, host: str | None = None) -> bool:
    """Whether a running job's worker is a dead process of this host (or an id without a
    host: the single-node ids of earlier versions, and jobs with no worker)."""
    if not worker_id or ":" not in worker_id:
        return True
    whost, _, rest = worker_id.rpartition(":")
    if whost != (host or socket.gethostname()):
        return False
    try:
        pid = int(rest.split("-", 1)[0])
    except ValueError:
        return True
    return not _pid_alive(pid)


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

    def _running(self, job_id: int, worker_id: str | None = None) -> None:
        rows = self.db.query("SELECT state, worker_id FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobError(f"no job {job_id}")
        if rows[0]["state"] != "running":
            raise JobError(f"job {job_id} is {rows[0]['state']}, not running")
        if worker_id is not None and rows[0]["worker_id"] != worker_id:
            raise JobError(f"job {job_id} was re-queued and is now run by another worker")

    def complete(self, job_id: int, model_versions: dict[str, str] | None = None,
                 worker_id: str | None = None) -> None:
        """Mark a running job done, recording the models (name -> version) it used
        (with ``worker_id``: only while that worker still holds it)."""
        self._running(job_id, worker_id)
        now = time.time()
        self.db.execute(
            "UPDATE jobs SET state = 'done', model_versions = ?, error = NULL, finished_at = ?, updated_at = ? "
            "WHERE id = ?",
            (json.dumps(model_versions or {}, sort_keys=True), now, now, job_id),
        )

    def fail(self, job_id: int, error: str, retry: bool = True, worker_id: str | None = None) -> str:
        """Record a failure; re-queue when ``retry`` and attempts remain.  Returns the new state.
        With ``worker_id``: only while that worker still holds the job."""
        self._running(job_id, worker_id)
        now = time.time()
        row = self.db.query("SELECT attempts, max_attempts FROM jobs WHERE id = ?", (job_id,))[0]
        state = "queued" if retry and row["attempts"] < row["max_attempts"] else "failed"
        self.db.execute(
            "UPDATE jobs SET state = ?, error = ?, worker_id = NULL, updated_at = ?, finished_at = ? WHERE id = ?",
            (state, error[:4000], now, now if state == "failed" else None, job_id),
        )
        logger.warning("job %s failed (%s), now %s", job_id, error[:200], state)
        return state

    def requeue_running(self, lease_s: float = LEASE_S) -> int:
        """Start-up after a crash: re-queue the running jobs of this host's dead processes
        and those whose lease expired; jobs of live workers (other processes, other
        machines) keep running."""
        rows = self.db.query("SELECT id, worker_id FROM jobs WHERE state = 'running'")
        mine = [int(r["id"]) for r in rows if orphaned_here(r["worker_id"])]
        n = self._requeue_ids(mine)
        if n:
            logger.warning("re-queued %d job(s) left running by a previous run on this host", n)
        return n + self.requeue_stale(lease_s)

    def requeue_stale(self, lease_s: float = LEASE_S) -> int:
        """Re-queue running jobs whose lease (``updated_at``) is older than ``lease_s``."""
        cur = self.db.execute(
            "UPDATE jobs SET state = 'queued', worker_id = NULL, updated_at = ? WHERE state = 'running' "
            "AND updated_at < ?", (time.time(), time.time() - lease_s))
        if cur.rowcount:
            logger.warning("re-queued %d job(s) whose worker stopped renewing them for %.0f s", cur.rowcount, lease_s)
        return int(cur.rowcount)

    def _requeue_ids(self, ids: list[int]) -> int:
        n = 0
        for job_id in ids:
            cur = self.db.execute("UPDATE jobs SET state = 'queued', worker_id = NULL, updated_at = ? "
                                  "WHERE id = ? AND state = 'running'", (time.time(), job_id))
            n += int(cur.rowcount)
        return n

    def heartbeat(self, worker_ids: list[str]) -> int:
        """Renew the lease of the running jobs of ``worker_ids``; returns how many."""
        if not worker_ids:
            return 0
        marks = ", ".join("?" for _ in worker_ids)
        cur = self.db.execute(f"UPDATE jobs SET updated_at = ? WHERE state = 'running' AND worker_id IN ({marks})",
                              (time.time(), *worker_ids))
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


class LeaseKeeper:
    """A thread that renews the leases of ``worker_ids`` every ``lease_s / 4`` seconds and,
    every ``lease_s / 2``, re-queues other workers' expired jobs (a crashed machine's).

    Use as a context manager or with :meth:`start` / :meth:`stop`.
    """

    def __init__(self, db: Database, worker_ids: list[str], lease_s: float = LEASE_S) -> None:
        self.queue = JobQueue(db)
        self.worker_ids = list(worker_ids)
        self.lease_s = lease_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        last_sweep = 0.0
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.queue.heartbeat(self.worker_ids)
                if time.monotonic() - last_sweep >= self.lease_s / 2:
                    last_sweep = time.monotonic()
                    self.queue.requeue_stale(self.lease_s)
            except Exception:  # noqa: BLE001 - e.g. database busy: the next beat retries
                logger.exception("renewing job leases failed")

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._loop, name="job-leases", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
