"""Archive retention: delete old studies by age and keep the archive under a size limit.

The node sits beside the PACS, which is the system of record; its archive is a working
copy that would otherwise fill its disk.  The policy (``NodeConfig``):

- ``retention_days`` > 0: a study whose last instance arrived longer ago is deleted;
- ``max_archive_gb`` > 0: while the stored files exceed it, the least recently received
  studies are deleted until they take at most 90 % of it (so it does not run on every
  new study);
- never deleted: a study still receiving, with analysis jobs queued or running, with
  outbox items not yet sent (their files are needed), and, while
  ``retention_keep_unsigned`` (default), one without a signed report.

Deleting a study (:func:`purge_study`) is crash-safe and never loses an instance the node
acknowledged meanwhile: (1) in one transaction it re-checks the study, marks it
``purging`` and lists its instance rows; (2) it deletes exactly those files; (3) in one
transaction it deletes those rows and, if no instance of the study is left, every row
of the study in the tables that have a ``study_uid`` (findings, jobs, reports, AI
objects, embeddings, reviews ...), the series and study rows and a patient left without
studies.  An instance stored during the purge is not in the list: it and its study stay.
A crash after (2) leaves rows without files, which start-up reconciliation drops; the
study stays ``purging`` and the next pass finishes it.  The audit log keeps one
``study.purge`` event per study (counts and the reason, no patient data).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.audit import Audit
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

LOW_WATERMARK = 0.9
"""After a size-triggered purge the stored files take at most this share of ``max_archive_gb``."""
KEEP_TABLES = frozenset({"audit", "patients", "studies", "series", "instances"})
"""Tables not cleared by study (the audit log is kept; the archive's own rows are handled explicitly)."""


@dataclass(frozen=True)
class RetentionPolicy:
    """What :func:`apply_policy` deletes (see the module docstring)."""

    retention_days: float = 0.0
    max_archive_bytes: int = 0
    keep_unsigned: bool = True

    @classmethod
    def from_config(cls, config: NodeConfig) -> RetentionPolicy:
        return cls(float(config.retention_days), int(config.max_archive_gb * 1024 ** 3),
                   bool(config.retention_keep_unsigned))

    @property
    def active(self) -> bool:
        return self.retention_days > 0 or self.max_archive_bytes > 0


@dataclass
class PurgeReport:
    """What one pass deleted and why some eligible studies were kept."""

    purged: list[dict[str, Any]] = field(default_factory=list)
    protected: dict[str, int] = field(default_factory=dict)
    archive_bytes_before: int = 0
    archive_bytes_after: int = 0
    over_limit: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"purged": len(self.purged), "instances": sum(p["instances"] for p in self.purged),
                "bytes": sum(p["bytes"] for p in self.purged), "protected": dict(self.protected),
                "archive_bytes_before": self.archive_bytes_before, "archive_bytes_after": self.archive_bytes_after,
                "over_limit": self.over_limit}


@dataclass(frozen=True)
class _Schema:
    """What the purge needs to know of the index's tables (read once per pass)."""

    tables: frozenset[str]
    by_study: tuple[str, ...]  # tables with a study_uid column, cleared with the study
    outbox_by_study: bool

    @classmethod
    def read(cls, db: Database) -> _Schema:
        tables = frozenset(db.tables())
        by_study = tuple(t for t in sorted(tables - KEEP_TABLES) if "study_uid" in db.columns(t))
        return cls(tables, by_study, "outbox" in by_study)


def protection(db: Database, study_uid: str, keep_unsigned: bool, schema: _Schema | None = None) -> str | None:
    """Why ``study_uid`` must not be deleted now (None: it may be)."""
    row = db.query("SELECT state FROM studies WHERE study_uid = ?", (study_uid,))
    if not row:
        return "gone"
    if row[0]["state"] not in ("stable", "purging"):
        return "receiving"
    schema = schema or _Schema.read(db)
    tables = schema.tables
    if "jobs" in tables and db.query("SELECT COUNT(*) FROM jobs WHERE study_uid = ? AND state IN ('queued', 'running')",
                                     (study_uid,))[0][0]:
        return "analysis running"
    if schema.outbox_by_study and db.query(
            "SELECT COUNT(*) FROM outbox WHERE study_uid = ? AND state IN ('pending', 'sending')", (study_uid,))[0][0]:
        return "outbox not sent"
    if keep_unsigned and row[0]["state"] != "purging":
        signed = "reports" in tables and db.query(
            "SELECT COUNT(*) FROM reports WHERE study_uid = ? AND state = 'signed'", (study_uid,))[0][0]
        if not signed:
            return "no signed report"
    return None


def purge_study(config: NodeConfig, db: Database, study_uid: str, reason: str, keep_unsigned: bool = True,
                audit: Audit | None = None, schema: _Schema | None = None) -> dict[str, Any] | None:
    """Delete one study's files and rows (crash-safe, see the module docstring).

    Returns ``{"instances", "bytes", "reason"}``, or None when the study is protected.
    """
    audit = audit or Audit(db)
    schema = schema or _Schema.read(db)
    with db.transaction() as conn:  # (1) re-check under the write lock, mark, list
        why = protection(db, study_uid, keep_unsigned, schema)
        if why is not None:
            logger.info("study %s kept: %s", phi(study_uid), why)
            return None
        conn.execute("UPDATE studies SET state = 'purging' WHERE study_uid = ?", (study_uid,))
        rows = [dict(r) for r in conn.execute(
            "SELECT sop_instance_uid, path, size_bytes FROM instances WHERE study_uid = ?", (study_uid,)).fetchall()]
    folders: set[Path] = set()
    for r in rows:  # (2) exactly the listed files
        path = config.root / r["path"]
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        folders.add(path.parent)
    deleted_bytes = sum(int(r["size_bytes"] or 0) for r in rows)
    with db.transaction() as conn:  # (3) the rows
        for r in rows:
            conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (r["sop_instance_uid"],))
        left = conn.execute("SELECT COUNT(*) FROM instances WHERE study_uid = ?", (study_uid,)).fetchone()[0]
        if left:  # instances stored while purging: the study stays, with those
            _recount(conn, study_uid)
            conn.execute("UPDATE studies SET state = 'receiving' WHERE study_uid = ? AND state = 'purging'",
                         (study_uid,))
        else:
            for table in schema.by_study:
                conn.execute(f"DELETE FROM {table} WHERE study_uid = ?", (study_uid,))
            patient = conn.execute("SELECT patient_id FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
            conn.execute("DELETE FROM series WHERE study_uid = ?", (study_uid,))
            conn.execute("DELETE FROM studies WHERE study_uid = ?", (study_uid,))
            if patient is not None and not conn.execute("SELECT COUNT(*) FROM studies WHERE patient_id = ?",
                                                        (patient[0],)).fetchone()[0]:
                conn.execute("DELETE FROM patients WHERE patient_id = ?", (patient[0],))
        audit.record("study.purge", "retention", conn=conn, study_uid=study_uid, reason=reason,
                     instances=len(rows), bytes=deleted_bytes, kept_instances=int(left))
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        _remove_empty(folder, config.dicom_dir)
    logger.info("purged study %s (%s): %d instance(s), %d bytes", phi(study_uid), reason, len(rows), deleted_bytes)
    return {"instances": len(rows), "bytes": deleted_bytes, "reason": reason}


def _recount(conn: Any, study_uid: str) -> None:
    conn.execute("UPDATE series SET num_instances = (SELECT COUNT(*) FROM instances i WHERE i.series_uid = "
                 "series.series_uid) WHERE study_uid = ?", (study_uid,))
    conn.execute("DELETE FROM series WHERE study_uid = ? AND num_instances = 0", (study_uid,))
    conn.execute("UPDATE studies SET num_instances = (SELECT COUNT(*) FROM instances WHERE study_uid = ?), "
                 "num_series = (SELECT COUNT(*) FROM series WHERE study_uid = ?) WHERE study_uid = ?",
                 (study_uid, study_uid, study_uid))


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (a concurrent instance) or gone
            return
        folder = folder.parent


def archive_bytes(db: Database) -> int:
    return int(db.query("SELECT COALESCE(SUM(size_bytes), 0) FROM instances")[0][0])


def apply_policy(config: NodeConfig, db: Database, policy: RetentionPolicy | None = None,
                 now: float | None = None, dry_run: bool = False) -> PurgeReport:
    """One retention pass: unfinished purges, then studies past ``retention_days``, then the
    least recently received while the archive exceeds ``max_archive_bytes``."""
    policy = policy or RetentionPolicy.from_config(config)
    now = time.time() if now is None else now
    report = PurgeReport(archive_bytes_before=archive_bytes(db))
    audit = Audit(db)
    schema = _Schema.read(db)

    def attempt(uid: str, reason: str, size: int) -> int:
        why = protection(db, uid, policy.keep_unsigned, schema)
        if why is not None:
            report.protected[why] = report.protected.get(why, 0) + 1
            return 0
        if dry_run:
            report.purged.append({"instances": 0, "bytes": size, "reason": reason})
            return size
        done = purge_study(config, db, uid, reason, policy.keep_unsigned, audit, schema)
        if done is None:
            return 0
        report.purged.append(done)
        return int(done["bytes"])

    studies = db.query("SELECT s.study_uid, s.state, COALESCE(s.last_received, 0) AS last, "
                       "COALESCE((SELECT SUM(size_bytes) FROM instances i WHERE i.study_uid = s.study_uid), 0) AS size "
                       "FROM studies s ORDER BY COALESCE(s.last_received, 0), s.study_uid")
    total = report.archive_bytes_before
    done: set[str] = set()
    for r in studies:
        if r["state"] == "purging":
            total -= attempt(r["study_uid"], "unfinished purge", int(r["size"]))
            done.add(r["study_uid"])
        elif policy.retention_days > 0 and float(r["last"]) < now - policy.retention_days * 86400:
            total -= attempt(r["study_uid"], f"older than {policy.retention_days:g} days", int(r["size"]))
            done.add(r["study_uid"])
    if policy.max_archive_bytes > 0 and total > policy.max_archive_bytes:
        target = LOW_WATERMARK * policy.max_archive_bytes
        for r in studies:  # least recently received first
            if total <= target:
                break
            if r["study_uid"] not in done:
                total -= attempt(r["study_uid"], f"archive over {policy.max_archive_bytes / 1024 ** 3:g} GB",
                                 int(r["size"]))
        report.over_limit = total > policy.max_archive_bytes
        if report.over_limit:
            logger.warning("archive still over its size limit after purging: %s", report.protected)
    report.archive_bytes_after = total if dry_run else archive_bytes(db)
    return report


class RetentionWorker:
    """Runs :func:`apply_policy` at start and every ``config.retention_interval_s`` (a daemon thread)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.policy = RetentionPolicy.from_config(config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        db = Database(self.config.database_url, root=self.config.root)
        try:
            while not self._stop.is_set():
                try:
                    rep = apply_policy(self.config, db, self.policy)
                    if rep.purged:
                        logger.info("retention: %s", rep.to_json())
                except Exception:  # noqa: BLE001 - retention must not stop the node
                    logger.exception("retention pass failed")
                self._stop.wait(self.config.retention_interval_s)
        finally:
            db.close()

    def start(self) -> RetentionWorker | None:
        if not self.policy.active:
            return None
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()
        logger.info("retention: %s days, %s GB, keep unsigned %s (every %s s)", self.policy.retention_days or "-",
                    self.config.max_archive_gb or "-", self.policy.keep_unsigned, self.config.retention_interval_s)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

