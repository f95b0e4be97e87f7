"""--workers N: the main process hands accepted associations round-robin to the
acceptor processes (descriptor passing); every association is served and indexed."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node import samples, scp
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from tests.conftest import get_port


@pytest.mark.timeout(150)
def test_associations_spread_over_acceptor_processes(config: NodeConfig) -> None:
    port = get_port()
    cfg = config.replace(workers=2, port=port, require_registered=False)
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=scp.serve, args=(cfg,), kwargs={"ready": ready, "stop": stop}, daemon=True)
    thread.start()
    try:
        assert ready.wait(120), "node did not start"
        datasets = samples.ct_series(6, size=32, seed=3, patient_id="MEDWS-DISPATCH")
        served = []
        for i in range(6):  # 6 associations: 3 in each process (round-robin)
            ae = AE(ae_title="TESTSCU")
            ae.add_requested_context(CTImageStorage)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", port, ae_title="MEDWS")
            assert assoc.is_established, f"association {i} not established"
            assert int(assoc.send_c_echo().Status) == 0
            assert int(assoc.send_c_store(datasets[i]).Status) == 0
            assoc.release()
            served.append(datasets[i].SOPInstanceUID)
    finally:
        stop.set()
        thread.join(60)
    db = Database(cfg.database_url)
    try:
        rows = {r[0] for r in db.query("SELECT sop_instance_uid FROM instances")}
    finally:
        db.close()
    assert rows == set(served)
    assert not list(Path(cfg.dicom_dir).rglob("*.tmp"))


def test_dispatcher_round_robin() -> None:
    import socket

    d = scp._Dispatcher()
    a, b = socket.socketpair()
    try:
        d.channels.append(a)
        assert [d.target() for _ in range(4)] == [None, a, None, a]
    finally:
        a.close()
        b.close()
