"""A real Orthanc PACS for tests: temporary config and storage, OS-chosen DICOM and
HTTP ports, a small REST client on ``urllib``, stopped by :meth:`Orthanc.stop`.

Use :func:`orthanc_server` as a context manager (or call ``start``/``stop`` in a
fixture finaliser).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.medws_process import stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str:
    """The ``Orthanc`` executable; skips the test when it is not installed."""
    path = shutil.which("Orthanc")
    if path is None:
        pytest.skip("Orthanc not installed (apt-get install orthanc)")
    return path


class Orthanc:
    """One Orthanc process.

    Parameters
    ----------
    workdir
        Folder for the config, storage and log (temporary, test-owned).
    ae_title
        Orthanc's DICOM AE title.
    modalities
        ``{name: (ae_title, host, port)}`` peers Orthanc knows (for C-MOVE / push).
    """

    def __init__(self, workdir: Path, ae_title: str = "ORTHANC",
                 modalities: dict[str, tuple[str, str, int]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.ae_title = ae_title
        self.modalities = dict(modalities or {})
        self.dicom_port = _free_port()
        self.http_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "medws-test-orthanc",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "StableAge": 1,
            "Plugins": [],
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "ConcurrentJobs": 2,
        }

    def start(self, timeout: float = 30.0) -> "Orthanc":
        """Write the config, start Orthanc and wait until its REST API answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        log = open(self.workdir / "orthanc.log", "wb")
        self.proc = subprocess.Popen([orthanc_binary(), str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError("Orthanc did not start")

    def stop(self) -> None:
        """Terminate Orthanc (kill after 10 s)."""
        stop(self.proc, timeout_s=10)
        self.proc = None

    # -------------------------------------------------------------- REST
    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
        with urllib.request.urlopen(req, timeout=60) as rsp:
            data = rsp.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, payload: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self._request("POST", path, body)

    def upload(self, path: Path) -> dict[str, Any]:
        """Store a DICOM file through the REST API."""
        return self._request("POST", "/instances", Path(path).read_bytes(), "application/dicom")

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's id of the study with ``study_uid`` (or ``None``)."""
        found = self.post("/tools/lookup", study_uid.encode())
        for item in found:
            if item.get("Type") == "Study":
                return str(item["ID"])
        return None

    def study_instance_uids(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs Orthanc holds for ``study_uid``."""
        sid = self.study_id(study_uid)
        if sid is None:
            return set()
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in self.get(f"/studies/{sid}/instances")}

    def push_study(self, study_uid: str, modality: str) -> Any:
        """C-STORE a study to a configured modality (synchronous)."""
        sid = self.study_id(study_uid)
        if sid is None:
            raise KeyError(study_uid)
        return self.post(f"/modalities/{modality}/store", {"Resources": [sid], "Synchronous": True})


@contextmanager
def orthanc_server(workdir: Path, **kwargs: Any) -> Iterator[Orthanc]:
    """A started :class:`Orthanc`, stopped on exit."""
    server = Orthanc(workdir, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
