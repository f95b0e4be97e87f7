"""No patient identifiers in logs by default; the schema stays portable SQL."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pydicom
import pytest

from dicom_node import scu
from dicom_node.db import schema_sql
from dicom_node.peers import Peer
from dicom_node.privacy import phi
from tests.node.conftest import TEST_AE


def test_logs_hold_no_patient_identifiers(node, ct_files: list[Path], tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.delenv("MEDWS_LOG_PHI", raising=False)
    caplog.set_level(logging.DEBUG, logger="dicom_node")
    ds = pydicom.dcmread(ct_files[0])
    bad = tmp_path / "bad.dcm"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # refused: logged
    ds.save_as(bad)
    peer = Peer("medws", "MEDWS", "127.0.0.1", node.port)
    scu.send(peer, TEST_AE, [ct_files[0], bad])
    node.stability.check(now=10**10)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "stable" in text and "refused" in text  # the events were logged ...
    for secret in (ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID, ds.SOPInstanceUID):
        assert secret not in text  # ... without identifiers


def test_debug_switch_shows_identifiers(monkeypatch) -> None:
    monkeypatch.setenv("MEDWS_LOG_PHI", "1")
    assert phi("1.2.3") == "1.2.3"
    monkeypatch.delenv("MEDWS_LOG_PHI")
    assert phi("1.2.3").startswith("#") and "1.2.3" not in phi("1.2.3")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_schema_is_plain_portable_sql(dialect: str) -> None:
    sql = schema_sql(dialect)
    for sqlite_only in ("AUTOINCREMENT", "WITHOUT ROWID", "PRAGMA", "INSERT OR", "REPLACE INTO", "DATETIME("):
        assert sqlite_only not in sql.upper()
    if dialect == "postgresql":
        assert "INTEGER PRIMARY KEY," not in sql and "BIGSERIAL PRIMARY KEY" in sql
    types = set(re.findall(r"^ +\w+ ([A-Z]+(?: PRECISION)?)", sql, flags=re.M))
    assert types <= {"TEXT", "INTEGER", "BIGINT", "DOUBLE PRECISION", "BIGSERIAL"}
