"""A ``medws node serve`` process and Orthanc as the PACS, for the end-to-end tests
and ``benchmarks/bench_e2e.py``."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dicom_node.analysis import ensure_schema
from dicom_node.config import load_config
from dicom_node.db import Database
from dicom_node.delivery import Destinations
from dicom_node.peers import PeerRegistry
from tests.conftest import get_port
from tests.support.dcmtk import wait_port
from tests.support.medws_process import stop

SENDER_AE = "TESTSCU"

SETTINGS = """[node]
ae_title = "MEDWS"
host = "127.0.0.1"
port = {port}
quiet_period_s = {quiet}
require_registered = true

[analysis]
poll_interval_s = 0.2
report_language = "{language}"

[outbox]
backoff_s = {backoff}
backoff_max_s = {backoff_max}
max_attempts = 50
"""


class MedwsServer:
    """``medws node serve`` in a subprocess on ``root`` (registered peers: Orthanc, the test SCU)."""

    def __init__(self, root: Path, orthanc_port: int, quiet_period_s: float = 0.5, backoff_s: float = 0.5,
                 backoff_max_s: float = 2.0, language: str = "en") -> None:
        self.root = Path(root)
        self.port = get_port()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "medws.toml").write_text(SETTINGS.format(port=self.port, quiet=quiet_period_s, backoff=backoff_s,
                                                              backoff_max=backoff_max_s, language=language))
        self.config = load_config(self.root, env={})
        db = Database(self.config.database_url)
        ensure_schema(db)
        peers = PeerRegistry(db)
        if not db.query("SELECT 1 FROM peers WHERE name = 'orthanc'"):
            peers.add("orthanc", "ORTHANC", "127.0.0.1", orthanc_port)
            peers.add("tester", SENDER_AE, "127.0.0.1", 11113)
        Destinations(db).set("orthanc", True)
        db.close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "serve.log"

    def start(self, timeout: float = 60.0) -> "MedwsServer":
        env = dict(os.environ, MEDWS_ORT_THREADS=os.environ.get("MEDWS_ORT_THREADS", "2"))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "medws", "node", "serve", "--root", str(self.root)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_port(self.port, timeout=timeout)
        return self

    def kill(self) -> None:
        """kill -9 (a crash)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        stop(self.proc, timeout_s=30)
        self.proc = None

    def db(self) -> Database:
        return Database(self.config.database_url)


def orthanc_objects(orthanc: Any, study_uid: str) -> dict[str, list[str]]:
    """SOP Instance UIDs Orthanc holds for the study, by series modality."""
    sid = orthanc.study_id(study_uid)
    if sid is None:
        return {}
    out: dict[str, list[str]] = {}
    for series in orthanc.get(f"/studies/{sid}/series"):
        modality = series["MainDicomTags"].get("Modality", "")
        for iid in series["Instances"]:
            tags = orthanc.get(f"/instances/{iid}")["MainDicomTags"]
            out.setdefault(modality, []).append(tags["SOPInstanceUID"])
    return out


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")
