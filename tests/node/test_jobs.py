"""The persistent job queue."""
from __future__ import annotations

import threading

import pytest

from dicom_node.db import Database
from dicom_node.errors import JobError
from dicom_node.jobs import JobQueue
from tests.node.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("backend", BACKENDS)  # SQLite and PostgreSQL index


def test_enqueue_is_unique_per_content(db: Database) -> None:
    q = JobQueue(db)
    assert q.enqueue("1.2.3", "analyze", "k1") is not None
    assert q.enqueue("1.2.3", "analyze", "k1") is None
    assert q.enqueue("1.2.3", "analyze", "k2") is not None
    assert q.counts() == {"queued": 2, "running": 0, "done": 0, "failed": 0}


def test_claim_orders_by_priority_then_age_and_completes(db: Database) -> None:
    q = JobQueue(db)
    low = q.enqueue("1.1", "analyze", "a", priority=0)
    high = q.enqueue("1.2", "analyze", "b", priority=5)
    job = q.claim("w1")
    assert job is not None and job.id == high and job.state == "running" and job.attempts == 1
    q.complete(job.id, {"cxr": "1.0.0"})
    assert q.get(high).model_versions == {"cxr": "1.0.0"}
    assert q.claim("w1").id == low
    assert q.claim("w1") is None
    with pytest.raises(JobError):
        q.complete(high)


def test_fail_retries_until_max_attempts(db: Database) -> None:
    q = JobQueue(db)
    jid = q.enqueue("1.1", "analyze", "a", max_attempts=2)
    assert q.fail(q.claim("w").id, "boom") == "queued"
    assert q.fail(q.claim("w").id, "boom again") == "failed"
    assert q.get(jid).error == "boom again"
    jid2 = q.enqueue("1.2", "analyze", "a")
    assert q.fail(q.claim("w").id, "bad input", retry=False) == "failed"
    assert q.get(jid2).state == "failed"


def test_requeue_running_after_crash(db: Database) -> None:
    q = JobQueue(db)
    q.enqueue("1.1", "analyze", "a")
    q.claim("w")
    assert q.requeue_running() == 1
    assert q.counts()["queued"] == 1


def test_claim_is_atomic_across_threads(db: Database) -> None:
    q = JobQueue(db)
    for i in range(40):
        q.enqueue(f"1.{i}", "analyze", "k")
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := q.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40
