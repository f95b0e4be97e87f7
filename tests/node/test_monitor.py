"""The node's HTTP monitoring endpoint: /health, /status, /metrics (Prometheus text format)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dicom_node import samples
from dicom_node.monitor import metrics_text, public_status
from tests.conftest import get_port
from tests.support import dcmtk
from tests.support.medws_process import medws_process, terminate

STATUS = {"patients": 2, "studies": 3, "series": 4, "instances": 40,
          "jobs": {"queued": 1, "running": 0, "done": 5, "failed": 2},
          "outbox": {"pending": 3, "sending": 0, "sent": 7, "failed": 1},
          "study_states": {"receiving": 1, "stable": 2},
          "analysis": {"dead_letters": [{"id": 9, "sop_instance_uid": "1.2.3.4", "last_error": "refused"}],
                       "failed_jobs": [{"id": 1, "error": "x"}, {"id": 2, "error": "y"}],
                       "destinations": [{"peer": "pacs"}], "ai_status": {"none": 1, "ready": 2}}}
_SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+)$')


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """{(name, labels): value}; every sample must follow a HELP and a TYPE line of its metric."""
    out: dict[tuple[str, str], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind == "gauge"
            typed.add(name)
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"not an exposition-format sample: {line!r}"
        assert m.group(1) in typed, f"sample before its TYPE line: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def test_metrics_text_is_prometheus_exposition_with_every_state():
    text = metrics_text(STATUS, ae_title='MED"WS', version="0.1.0", uptime_s=12.5, archive_bytes=1234,
                        disk_free_bytes=10 ** 12)
    got = parse_metrics(text)
    assert got[("medws_up", "")] == 1 and got[("medws_uptime_seconds", "")] == 12.5
    assert got[("medws_archive_objects", '{level="instances"}')] == 40
    assert got[("medws_jobs", '{state="failed"}')] == 2 and got[("medws_outbox_items", '{state="failed"}')] == 1
    assert got[("medws_studies", '{state="receiving"}')] == 1 and got[("medws_studies_ai", '{status="ready"}')] == 2
    assert got[("medws_archive_bytes", "")] == 1234 and got[("medws_disk_free_bytes", "")] == 1e12
    assert 'medws_info{ae_title="MED\\"WS",version="0.1.0"} 1' in text.splitlines()


def test_public_status_keeps_counts_not_identifiers():
    pub = public_status(STATUS)
    assert pub["analysis"]["dead_letters"] == 1 and pub["analysis"]["failed_jobs"] == 2
    assert "destinations" not in pub["analysis"] and "1.2.3.4" not in json.dumps(pub)
    assert STATUS["analysis"]["dead_letters"][0]["sop_instance_uid"] == "1.2.3.4"  # input untouched


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.mark.timeout(180)
def test_serving_node_reports_health_status_and_metrics(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "medws", "node", "init", "--root", str(root)], check=True, capture_output=True)
    port, mport = get_port(), get_port()
    with medws_process("node", "serve", "--root", str(root), "--host", "127.0.0.1", "--port", str(port),
                       "--ae-title", "MEDWS", "--no-require-registered", "--monitor-port", str(mport)) as (proc, event):
        assert event["event"] == "listening" and event["monitor"] == f"http://127.0.0.1:{mport}"
        base = event["monitor"]
        code, ctype, body = _get(base + "/health")
        assert code == 200 and ctype == "application/json" and json.loads(body)["status"] == "ok"
        before = parse_metrics(_get(base + "/metrics")[2])
        assert before[("medws_archive_objects", '{level="instances"}')] == 0
        ds = samples.dx_chest(128, seed=3, patient_id="MON-PATIENT-7")
        ds.PatientName = "Monitor^Secret"
        dcm = samples.save(ds, tmp_path / "dx.dcm")
        dcmtk.run("storescu", "-aet", "MODALITY", "-aec", "MEDWS", "127.0.0.1", str(port), str(dcm))
        code, ctype, text = _get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        after = parse_metrics(text)
        assert after[("medws_archive_objects", '{level="instances"}')] == 1
        assert after[("medws_archive_bytes", "")] >= dcm.stat().st_size - 1024
        assert after[("medws_disk_free_bytes", "")] > 0
        code, _, status = _get(base + "/status")
        assert code == 200 and json.loads(status)["instances"] == 1
        for body in (text, status):  # counts only: no patient data
            assert "MON-PATIENT-7" not in body and "Secret" not in body and str(ds.StudyInstanceUID) not in body
        assert _get(base + "/nothing")[0] == 404
        assert terminate(proc) == 0
