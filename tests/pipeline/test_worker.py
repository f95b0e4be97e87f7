"""``medws node worker``: analysis workers in another process (or machine) on the same queue."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dicom_node.analysis import enqueue_prioritized
from dicom_node.archive import Archive
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.jobs import JobQueue
from dicom_node.stability import StabilityMonitor
from tests.pipeline.conftest import BACKENDS
from tests.support.medws_process import medws_process, terminate


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_process_analyses_queued_studies(cxr_models, config: NodeConfig, db: Database,
                                                chest_cr: Path) -> None:
    """A worker process with only the ``cxr`` task leaves routing to the node; once the node
    routed the study, the worker takes the chest X-ray job, writes the results and stops
    cleanly; on PostgreSQL this is the scale-out set-up (same index, same archive folder)."""
    from dicom_node.analysis import Analyzer

    src = Archive(config, db).store_file(chest_cr)
    StabilityMonitor(db, 0.0, hooks=[enqueue_prioritized]).check(now=10**10)
    env = {**os.environ, "MEDWS_DB_URL": config.db_url} if config.db_url else dict(os.environ)
    with medws_process("node", "worker", "--root", str(config.root), "--tasks", "cxr", env=env) as (proc, event):
        assert event["event"] == "working" and event["tasks"] == ["cxr"] and len(event["workers"]) == 1
        jobs = JobQueue(db)
        time.sleep(1.0)
        assert [j.state for j in jobs.list(study_uid=src.study_uid)] == ["queued"]  # routing is not its task
        analyzer = Analyzer(config, db)
        analyzer.execute(jobs.claim("node:1-0", ("analyze",)))  # the node routes: a cxr job is queued
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            cxr = [j for j in jobs.list(study_uid=src.study_uid) if j.task == "cxr"]
            if cxr and cxr[0].state in ("done", "failed"):
                break
            time.sleep(0.2)
        assert cxr[0].state == "done", cxr[0].error
        assert cxr[0].worker_id == event["workers"][0]
        assert db.query("SELECT COUNT(*) FROM findings WHERE study_uid = ?", (src.study_uid,))[0][0] >= 1
        assert terminate(proc) == 0
