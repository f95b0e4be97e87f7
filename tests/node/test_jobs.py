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


def _run_as(db: Database, job_id: int, worker_id: str, age_s: float = 0.0) -> None:
    import time

    db.execute("UPDATE jobs SET state = 'running', worker_id = ?, updated_at = ? WHERE id = ?",
               (worker_id, time.time() - age_s, job_id))


def test_start_up_requeues_only_dead_local_workers_and_expired_leases(db: Database) -> None:
    """Several processes and machines share the queue: a start re-queues the jobs of this
    host's dead processes, old-style ids and expired leases, never a live worker's."""
    import socket
    import subprocess
    import sys

    from dicom_node.jobs import worker_name

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = socket.gethostname()
    q = JobQueue(db)
    ids = [q.enqueue("1.1", "analyze", f"k{i}") for i in range(6)]
    _run_as(db, ids[0], f"{host}:{dead}-0")           # this host, process gone
    _run_as(db, ids[1], worker_name(0))               # this very process: alive
    _run_as(db, ids[2], "gpu-box-7:4242-0")           # another machine, lease fresh
    _run_as(db, ids[3], "gpu-box-7:4242-1", age_s=3600)  # another machine that stopped renewing
    _run_as(db, ids[4], "31337-0")                    # id of an earlier version (single node)
    assert q.requeue_running(lease_s=120) == 3
    states = {j.id: (j.state, j.worker_id) for j in q.list()}
    assert [states[i][0] for i in ids] == ["queued", "running", "running", "queued", "queued", "queued"]
    assert states[ids[2]][1] == "gpu-box-7:4242-0"


def test_leases_are_renewed_and_a_lost_job_cannot_be_completed_by_its_old_worker(db: Database) -> None:
    q = JobQueue(db)
    jid = q.enqueue("1.1", "analyze", "a")
    a = q.claim("host-a:1-0")
    db.execute("UPDATE jobs SET updated_at = updated_at - 1000 WHERE id = ?", (jid,))
    assert q.heartbeat(["host-a:1-0"]) == 1  # renewed: not stale
    assert q.requeue_stale(lease_s=120) == 0
    db.execute("UPDATE jobs SET updated_at = updated_at - 1000 WHERE id = ?", (jid,))
    assert q.requeue_stale(lease_s=120) == 1  # host A stopped renewing
    b = q.claim("host-b:2-0")
    assert b is not None and b.id == a.id and b.attempts == 2
    with pytest.raises(JobError, match="another worker"):
        q.complete(jid, {"m": "1"}, worker_id="host-a:1-0")
    with pytest.raises(JobError, match="another worker"):
        q.fail(jid, "late failure", worker_id="host-a:1-0")
    q.complete(jid, {"m": "1"}, worker_id="host-b:2-0")
    assert q.get(jid).state == "done"


def test_lease_keeper_renews_while_a_job_runs(db: Database) -> None:
    import time

    from dicom_node.jobs import LeaseKeeper

    q = JobQueue(db)
    jid = q.enqueue("1.1", "analyze", "a")
    q.claim("host-a:1-0")
    db.execute("UPDATE jobs SET updated_at = updated_at - 1000 WHERE id = ?", (jid,))
    with LeaseKeeper(db, ["host-a:1-0"], lease_s=0.4):
        time.sleep(0.5)
        assert time.time() - db.query("SELECT updated_at FROM jobs WHERE id = ?", (jid,))[0][0] < 0.4
    assert q.get(jid).state == "running"
