"""kill -9 of the node in the middle of a 200-instance transfer: every instance that
received a success status is present, readable and indexed after the restart, and
the index holds nothing without its file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from dicom_node import samples
from dicom_node.config import load_config
from dicom_node.db import Database
from tests.conftest import get_port
from tests.support.dcmtk import wait_port


def _serve(root: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "medws", "node", "serve", "--root", str(root), "--host", "127.0.0.1",
                             "--port", str(port), "--ae-title", "MEDWS"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, timeout=30)
    return proc


@pytest.mark.timeout(180)
def test_kill_9_mid_transfer_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "medws", "node", "init", "--root", str(root)], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "medws", "node", "peers", "add", "sender", "--ae-title", "SENDER",
                    "--host", "127.0.0.1", "--port", "104", "--root", str(root)], check=True, capture_output=True)
    datasets = samples.ct_series(200, size=256, seed=5, patient_id="MEDWS-CRASH")
    port = get_port()
    server = _serve(root, port)

    acknowledged: list[str] = []
    kill_at = 70
    killed = threading.Event()

    ae = AE(ae_title="SENDER")
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 2  # the peer dies: do not wait 30 s
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDWS")
    assert assoc.is_established
    for ds in datasets:
        if not assoc.is_established:
            break
        status = assoc.send_c_store(ds)
        if status and int(status.Status) == 0:
            acknowledged.append(ds.SOPInstanceUID)
        if len(acknowledged) == kill_at and not killed.is_set():
            # kill without waiting for the current exchange: the next C-STORE is in flight
            threading.Timer(0.005, lambda: os.kill(server.pid, signal.SIGKILL)).start()
            killed.set()
    if assoc.is_established:
        assoc.abort()
    ae.shutdown()
    server.wait(timeout=30)
    assert server.returncode == -signal.SIGKILL
    assert kill_at <= len(acknowledged) < 200

    server = _serve(root, port)  # restart: reconcile runs at start-up
    try:
        config = load_config(root, env={})
        db = Database(config.database_url)
        rows = {r["sop_instance_uid"]: r["path"] for r in db.query("SELECT sop_instance_uid, path FROM instances")}
        for uid in acknowledged:
            assert uid in rows, "acknowledged instance missing from the index"
            ds = pydicom.dcmread(root / rows[uid])
            assert ds.SOPInstanceUID == uid and ds.pixel_array.shape == (256, 256)
        for uid, rel in rows.items():
            assert (root / rel).is_file(), "index row without its file"
        assert not list(root.rglob("*.tmp"))
        counted = db.query("SELECT num_instances FROM studies")[0][0]
        assert counted == len(rows)
        db.close()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
