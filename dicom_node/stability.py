"""Study stability: a study is *stable* after a quiet period with no new instance.

:meth:`StabilityMonitor.check` finds studies still ``receiving`` whose last instance
arrived at least ``quiet_period_s`` ago, records them ``stable`` with a content key
and calls each hook in :attr:`StabilityMonitor.hooks` (by default
:func:`enqueue_analysis`, which queues an ``analyze`` job).  A late instance sets the
study back to ``receiving`` (in :mod:`dicom_node.archive`); when it becomes stable
again its content key differs, so analysis is queued again; the same content is
never queued twice (the job queue is unique per study, task and content key).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dicom_node.db import Database
from dicom_node.jobs import JobQueue
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

ANALYZE_TASK = "analyze"


@dataclass(frozen=True)
class StableStudy:
    """A study that has just become stable."""

    study_uid: str
    content_key: str
    num_instances: int
    modalities: str


StableHook = Callable[[StableStudy, Database], None]


def content_key(instances: list[tuple[str, str]]) -> str:
    """Key of a study's content: SHA-256 over its sorted (SOP Instance UID, file
    SHA-256) pairs and their count; the same instances give the same key."""
    h = hashlib.sha256(str(len(instances)).encode())
    for uid, digest in sorted(instances):
        h.update(b"\0" + uid.encode() + b"=" + digest.encode())
    return h.hexdigest()


def enqueue_analysis(study: StableStudy, db: Database) -> None:
    """Default hook: queue one ``analyze`` job for this content of the study."""
    JobQueue(db).enqueue(study.study_uid, ANALYZE_TASK, study.content_key)


class StabilityMonitor:
    """Finds stable studies and runs the hooks for each.

    Parameters
    ----------
    db
        The index.
    quiet_period_s
        Seconds without a new instance after which a study is stable.
    hooks
        Callables ``hook(study, db)`` run for each newly stable study (default
        ``[enqueue_analysis]``); append to extend (e.g. run analysis in-process).
    """

    def __init__(self, db: Database, quiet_period_s: float = 10.0, hooks: list[StableHook] | None = None) -> None:
        self.db = db
        self.quiet_period_s = quiet_period_s
        self.hooks: list[StableHook] = list(hooks) if hooks is not None else [enqueue_analysis]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, now: float | None = None) -> list[StableStudy]:
        """Mark every quiet study stable and run the hooks; returns those studies."""
        now = time.time() if now is None else now
        cutoff = now - self.quiet_period_s
        candidates = self.db.query(
            "SELECT study_uid FROM studies WHERE state = 'receiving' AND last_received <= ?", (cutoff,)
        )
        stable: list[StableStudy] = []
        for row in candidates:
            uid = row["study_uid"]
            with self.db.transaction() as conn:
                study = conn.execute(
                    "SELECT state, last_received, modalities FROM studies WHERE study_uid = ?", (uid,)
                ).fetchone()
                if study is None or study["state"] != "receiving" or study["last_received"] > cutoff:
                    continue  # an instance arrived meanwhile
                pairs = [(r[0], r[1]) for r in conn.execute(
                    "SELECT sop_instance_uid, sha256 FROM instances WHERE study_uid = ?", (uid,))]
                key = content_key(pairs)
                conn.execute(
                    "UPDATE studies SET state = 'stable', stable_at = ?, content_key = ? WHERE study_uid = ?",
                    (now, key, uid),
                )
            stable.append(StableStudy(uid, key, len(pairs), study["modalities"] or ""))
            logger.info("study %s stable (%d instances)", phi(uid), len(pairs))
        for study in stable:
            for hook in self.hooks:
                try:
                    hook(study, self.db)
                except Exception:  # noqa: BLE001 - one failing hook must not stop the node
                    logger.exception("stability hook %r failed for study %s", hook, phi(study.study_uid))
        return stable

    def start(self, interval_s: float | None = None) -> None:
        """Run :meth:`check` periodically in a daemon thread."""
        interval = interval_s if interval_s is not None else max(0.2, min(2.0, self.quiet_period_s / 4))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception:  # noqa: BLE001
                    logger.exception("stability check failed")

        self._thread = threading.Thread(target=loop, name="stability", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the periodic check."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
