"""Archive retention: age and size limits, protection rules, crash safety, no lost instance."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicom_node import samples
from dicom_node.analysis import ensure_schema
from dicom_node.archive import Archive
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.jobs import JobQueue
from dicom_node.outbox import Outbox
from dicom_node.retention import RetentionPolicy, apply_policy, protection, purge_study
from dicom_node.stability import StabilityMonitor
from tests.node.conftest import BACKENDS
from tests.support.medws_process import medws_process, terminate

pytestmark = pytest.mark.parametrize("backend", BACKENDS)  # SQLite and PostgreSQL index
DAY = 86400.0


def _study(archive: Archive, tmp: Path, seed: int, patient: str, age_days: float, db: Database) -> tuple[str, list[Path]]:
    """A two-image DX study received ``age_days`` ago (stable)."""
    paths = []
    ds = samples.dx_chest(128, seed=seed, patient_id=patient)
    for i in range(2):
        d = samples.dx_chest(128, seed=seed * 10 + i, patient_id=patient)
        d.StudyInstanceUID, d.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
        paths.append(archive.store_file(samples.save(d, tmp / f"s{seed}_{i}.dcm")).path)
    uid = str(ds.StudyInstanceUID)
    when = time.time() - age_days * DAY
    db.execute("UPDATE studies SET last_received = ?, state = 'stable', stable_at = ? WHERE study_uid = ?",
               (when, when, uid))
    return uid, [Path(p) for p in paths]


def _sign(db: Database, uid: str) -> None:
    db.execute("INSERT INTO reports (study_uid, state, body, created_at, updated_at) VALUES (?, 'signed', '{}', ?, ?)",
               (uid, time.time(), time.time()))


@pytest.fixture
def setup(config: NodeConfig, db: Database, tmp_path: Path):
    ensure_schema(db)
    archive = Archive(config, db)
    old, old_files = _study(archive, tmp_path, 1, "P-OLD", 40, db)
    mid, _ = _study(archive, tmp_path, 2, "P-MID", 20, db)
    new, new_files = _study(archive, tmp_path, 3, "P-NEW", 1, db)
    for uid in (old, mid, new):
        _sign(db, uid)
    return archive, {"old": (old, old_files), "mid": mid, "new": (new, new_files)}


def _rows(db: Database, uid: str) -> dict[str, int]:
    out = {}
    for table in ("studies", "series", "instances", "reports", "jobs", "findings"):
        out[table] = int(db.query(f"SELECT COUNT(*) FROM {table} WHERE study_uid = ?", (uid,))[0][0])
    return out


def test_age_policy_deletes_files_and_every_row_but_the_audit(config, db, setup):
    archive, s = setup
    old, old_files = s["old"]
    JobQueue(db).enqueue(old, "analyze", "k")
    db.execute("UPDATE jobs SET state = 'done' WHERE study_uid = ?", (old,))
    rep = apply_policy(config, db, RetentionPolicy(retention_days=30))
    assert rep.to_json()["purged"] == 1 and rep.purged[0]["instances"] == 2
    assert not any(p.exists() for p in old_files) and not (config.dicom_dir / old).exists()
    assert _rows(db, old) == {k: 0 for k in ("studies", "series", "instances", "reports", "jobs", "findings")}
    assert not db.query("SELECT * FROM patients WHERE patient_id = 'P-OLD'")
    assert _rows(db, s["mid"])["instances"] == 2 and _rows(db, s["new"][0])["instances"] == 2
    event = [e for e in db.query("SELECT event, detail FROM audit WHERE event = 'study.purge'")]
    assert len(event) == 1 and json.loads(event[0]["detail"])["instances"] == 2
    assert "P-OLD" not in event[0]["detail"]
    assert archive.reconcile() == {"temp_removed": 0, "rows_dropped": 0, "files_indexed": 0, "files_unreadable": 0}


def test_size_policy_removes_least_recent_first_down_to_the_low_watermark(config, db, setup):
    _, s = setup
    total = int(db.query("SELECT SUM(size_bytes) FROM instances")[0][0])
    per_study = total // 3
    rep = apply_policy(config, db, RetentionPolicy(max_archive_bytes=int(2.5 * per_study)))
    # 3 studies > 2.5: the oldest goes; 2 studies = 2 per_study <= 0.9 * 2.5 per_study
    assert [r["bytes"] > 0 for r in rep.purged] == [True]
    assert _rows(db, s["old"][0])["studies"] == 0 and _rows(db, s["mid"])["studies"] == 1
    assert rep.archive_bytes_after <= 0.9 * 2.5 * per_study and not rep.over_limit


def test_protected_studies_are_kept(config, db, setup):
    _, s = setup
    old = s["old"][0]
    mid = s["mid"]
    JobQueue(db).enqueue(old, "analyze", "k")  # queued job
    db.execute("DELETE FROM reports WHERE study_uid = ?", (mid,))  # not signed
    assert protection(db, old, True) == "analysis running"
    assert protection(db, mid, True) == "no signed report" and protection(db, mid, False) is None
    rep = apply_policy(config, db, RetentionPolicy(retention_days=10))
    assert rep.purged == [] and rep.protected == {"analysis running": 1, "no signed report": 1}
    db.execute("UPDATE jobs SET state = 'done'")
    Outbox(db).add("pacs", "dicom/x.dcm", study_uid=old)  # result not delivered yet
    assert protection(db, old, True) == "outbox not sent"
    rep = apply_policy(config, db, RetentionPolicy(retention_days=10, keep_unsigned=False))
    assert [p["reason"] for p in rep.purged] == ["older than 10 days"]  # mid only
    assert _rows(db, old)["instances"] == 2 and _rows(db, mid)["studies"] == 0


def test_dry_run_changes_nothing(config, db, setup):
    _, s = setup
    before = int(db.query("SELECT COUNT(*) FROM instances")[0][0])
    rep = apply_policy(config, db, RetentionPolicy(retention_days=10), dry_run=True)
    assert len(rep.purged) == 2 and int(db.query("SELECT COUNT(*) FROM instances")[0][0]) == before
    assert all(p.exists() for p in s["old"][1])


def test_an_instance_stored_during_a_purge_is_kept(config, db, setup, tmp_path, monkeypatch):
    """A new instance of the study arrives after the purge listed its files: it, its series
    and its study stay (an acknowledged instance is never lost)."""
    archive, s = setup
    old, _ = s["old"]
    late = samples.dx_chest(128, seed=99, patient_id="P-OLD")
    late.StudyInstanceUID = old
    late_path = samples.save(late, tmp_path / "late.dcm")
    import dicom_node.retention as retention

    real_unlink = Path.unlink
    stored = []

    def unlink_then_store(self, *a, **k):  # the late instance lands while the purge deletes files
        real_unlink(self, *a, **k)
        if not stored:
            stored.append(archive.store_file(late_path))

    monkeypatch.setattr(retention.Path, "unlink", unlink_then_store)
    done = purge_study(config, db, old, "test")
    monkeypatch.undo()
    assert done["instances"] == 2 and stored
    rows = db.query("SELECT sop_instance_uid, path FROM instances WHERE study_uid = ?", (old,))
    assert [r["sop_instance_uid"] for r in rows] == [str(late.SOPInstanceUID)]
    assert (config.root / rows[0]["path"]).is_file()
    study = db.query("SELECT state, num_instances, num_series FROM studies WHERE study_uid = ?", (old,))[0]
    assert study["state"] == "receiving" and study["num_instances"] == 1 and study["num_series"] == 1
    StabilityMonitor(db, 0.0).check(now=10**10)  # and it becomes stable as any study
    assert db.query("SELECT state FROM studies WHERE study_uid = ?", (old,))[0][0] == "stable"


def test_crash_after_deleting_files_is_finished_by_the_next_pass(config, db, setup, monkeypatch):
    archive, s = setup
    old, files = s["old"]
    import dicom_node.retention as retention

    calls = {"n": 0}
    real = Database.transaction

    def crash_on_second_transaction(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(self)

    monkeypatch.setattr(retention.Database, "transaction", crash_on_second_transaction)
    with pytest.raises(KeyboardInterrupt):
        purge_study(config, db, old, "test")
    monkeypatch.undo()
    assert not any(p.exists() for p in files)
    assert db.query("SELECT state FROM studies WHERE study_uid = ?", (old,))[0][0] == "purging"
    archive.reconcile()  # start-up: rows without files dropped
    rep = apply_policy(config, db, RetentionPolicy(retention_days=365))  # not by age: unfinished
    assert [p["reason"] for p in rep.purged] == ["unfinished purge"]
    assert _rows(db, old)["studies"] == 0


def test_purge_cli(config, db, setup):
    _, s = setup
    env_root = ["--root", str(config.root)]
    import os

    env = {**os.environ, "MEDWS_DB_URL": config.db_url} if config.db_url else dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "medws", "node", "purge", *env_root, "--days", "30", "--dry-run",
                          "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["purged"] == 1 and json.loads(out.stdout)["dry_run"] is True
    out = subprocess.run([sys.executable, "-m", "medws", "node", "purge", *env_root], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2 and "no retention policy" in out.stderr
    out = subprocess.run([sys.executable, "-m", "medws", "node", "purge", *env_root, "--days", "30", "--json"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["purged"] == 1
    assert _rows(db, s["old"][0])["studies"] == 0


@pytest.mark.timeout(120)
def test_serving_node_applies_the_policy(config, db, setup):
    """``node serve`` with ``retention_days`` (here from the environment) purges at start."""
    import os

    from tests.conftest import get_port

    _, s = setup
    env = {**os.environ, "MEDWS_RETENTION_DAYS": "30"}
    if config.db_url:
        env["MEDWS_DB_URL"] = config.db_url
    with medws_process("node", "serve", "--root", str(config.root), "--host", "127.0.0.1",
                       "--port", str(get_port()), env=env) as (proc, event):
        assert event["event"] == "listening"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _rows(db, s["old"][0])["studies"]:
            time.sleep(0.2)
        assert _rows(db, s["old"][0])["studies"] == 0 and _rows(db, s["mid"])["studies"] == 1
        assert terminate(proc) == 0
