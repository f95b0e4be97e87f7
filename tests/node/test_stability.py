"""Study stability, re-opening by a late instance, and no double analysis."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from dicom_node.archive import Archive
from dicom_node.jobs import JobQueue
from dicom_node.stability import StabilityMonitor, content_key
from tests.node.conftest import BACKENDS


def test_content_key_is_order_independent() -> None:
    assert content_key([("1", "a"), ("2", "b")]) == content_key([("2", "b"), ("1", "a")])
    assert content_key([("1", "a")]) != content_key([("1", "a"), ("2", "b")])
    assert content_key([("1", "a")]) != content_key([("1", "c")])


@pytest.mark.parametrize("backend", BACKENDS)
def test_quiet_period_late_instance_and_single_queueing(config, db, ct_files: list[Path]) -> None:
    archive = Archive(config, db)
    seen = []
    monitor = StabilityMonitor(db, quiet_period_s=10.0)
    monitor.hooks.append(lambda study, _db: seen.append(study))
    for f in ct_files[:5]:
        archive.store_file(f)
    now = time.time()
    assert monitor.check(now) == []  # still within the quiet period
    stable = monitor.check(now + 11)
    assert len(stable) == 1 and stable[0].num_instances == 5 and stable[0].modalities == "CT"
    jobs = JobQueue(db)
    assert [j.task for j in jobs.list()] == ["analyze"]
    assert monitor.check(now + 30) == []  # stays stable, nothing queued again
    archive.store_file(ct_files[0])  # identical duplicate: no new content
    assert db.query("SELECT state FROM studies")[0][0] == "stable"
    archive.store_file(ct_files[5])  # a late instance re-opens the study
    assert db.query("SELECT state FROM studies")[0][0] == "receiving"
    again = monitor.check(time.time() + 11)
    assert len(again) == 1 and again[0].num_instances == 6 and again[0].content_key != stable[0].content_key
    assert len(jobs.list()) == 2 and len(seen) == 2
    # the same content becoming stable again (e.g. re-opened by a replaced-then-restored file) is not queued twice
    from dicom_node.stability import enqueue_analysis

    enqueue_analysis(again[0], db)
    assert len(jobs.list()) == 2


def test_failing_hook_does_not_stop_others(config, db, ct_files: list[Path]) -> None:
    Archive(config, db).store_file(ct_files[0])

    def broken(study, _db):
        raise RuntimeError("hook bug")

    monitor = StabilityMonitor(db, quiet_period_s=0.0)
    monitor.hooks.insert(0, broken)
    assert len(monitor.check(time.time() + 1)) == 1
    assert JobQueue(db).counts()["queued"] == 1
