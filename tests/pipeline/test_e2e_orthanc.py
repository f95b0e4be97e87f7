"""End to end with a real Orthanc as the PACS: Orthanc pushes a chest radiograph to
``medws node serve``; the SR, SEG and GSPS come back into Orthanc's copy of the study
and reference the radiograph; an Orthanc outage loses nothing and duplicates nothing;
a serve process killed (-9) in the middle of a job finishes it after restart."""
from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node import scu
from dicom_node.peers import Peer
from tests.pipeline.conftest import copy_as, sensitive_models
from tests.pipeline.harness import SENDER_AE, MedwsServer, orthanc_objects, wait_for
from tests.support.orthanc import Orthanc, orthanc_binary

pytestmark = pytest.mark.timeout(170)

AI_MODALITIES = {"SR", "SEG", "PR"}


@pytest.fixture
def pacs_and_node(cxr_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Orthanc, MedwsServer]]:
    orthanc_binary()
    # the installed models at an operating point where the test image has findings
    monkeypatch.setenv("MEDWS_MODELS_DIR", str(sensitive_models(tmp_path / "models")))
    orthanc = Orthanc(tmp_path / "orthanc")
    node = MedwsServer(tmp_path / "medws", orthanc.dicom_port)
    orthanc.modalities = {"medws": ("MEDWS", "127.0.0.1", node.port)}
    orthanc.start()
    node.start()
    yield orthanc, node
    node.stop()
    orthanc.stop()


def _new_study(src: Path, folder: Path, n: int) -> tuple[Path, str, str]:
    study, sop = generate_uid(), generate_uid()
    path = copy_as(src, folder / f"cr_{n}.dcm", StudyInstanceUID=study, SeriesInstanceUID=generate_uid(),
                   SOPInstanceUID=sop)
    return path, study, sop


def _expected(node: MedwsServer, study_uid: str) -> set[str]:
    db = node.db()
    try:
        return {r[0] for r in db.query("SELECT sop_instance_uid FROM ai_objects WHERE study_uid = ? "
                                       "AND state = 'current'", (study_uid,))}
    finally:
        db.close()


def _arrived(orthanc: Orthanc, study_uid: str, expected: set[str]) -> bool:
    held = orthanc_objects(orthanc, study_uid)
    ai = [u for m, uids in held.items() if m in AI_MODALITIES for u in uids]
    return bool(expected) and set(ai) == expected and len(ai) == len(expected)


def _analysed(node: MedwsServer, study_uid: str) -> bool:
    db = node.db()
    try:
        rows = db.query("SELECT state FROM jobs WHERE study_uid = ? AND task = 'cxr'", (study_uid,))
        return bool(rows) and all(r[0] == "done" for r in rows)
    finally:
        db.close()


def test_orthanc_push_results_back_outage_and_crash(pacs_and_node, chest_cr: Path, tmp_path: Path) -> None:
    orthanc, node = pacs_and_node
    # 1. the PACS pushes a chest radiograph; the AI objects arrive in the PACS's study
    path, study, cr_sop = _new_study(chest_cr, tmp_path, 1)
    orthanc.upload(path)
    orthanc.push_study(study, "medws")
    wait_for(lambda: _analysed(node, study), 60)
    expected = _expected(node, study)
    wait_for(lambda: _arrived(orthanc, study, expected), 30)
    held = orthanc_objects(orthanc, study)
    assert held["CR"] == [cr_sop] and "SR" in held
    db = node.db()
    data = db.query("SELECT data FROM findings WHERE study_uid = ?", (study,))[0][0]
    critical = db.query("SELECT ai_critical FROM studies WHERE study_uid = ?", (study,))[0][0]
    db.close()
    assert data.count('"label"') > 0 and len(held["SR"]) == len(held["SEG"]) == len(held["PR"]) == 1
    assert critical == (1 if '"label": "pneumothorax"' in data else 0)  # critical AI finding flagged
    sid = orthanc.study_id(study)
    for series in orthanc.get(f"/studies/{sid}/series"):
        modality = series["MainDicomTags"]["Modality"]
        if modality not in AI_MODALITIES:
            continue
        ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{series['Instances'][0]}/file")))
        assert ds.StudyInstanceUID == study
        if modality == "SR":
            refs = [i.ReferencedSOPInstanceUID for e in ds.CurrentRequestedProcedureEvidenceSequence
                    for s in e.ReferencedSeriesSequence for i in s.ReferencedSOPSequence]
            assert refs == [cr_sop] and ds.VerificationFlag == "UNVERIFIED"
        elif modality == "SEG":
            assert ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == cr_sop
        else:
            assert ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == cr_sop

    # 2. the PACS is down: results accumulate in the outbox, then all arrive exactly once
    orthanc.stop()
    studies = []
    for n in (2, 3):
        p, st, _ = _new_study(chest_cr, tmp_path, n)
        assert scu.send(Peer("medws", "MEDWS", "127.0.0.1", node.port), SENDER_AE, [p]).failed == 0
        studies.append(st)
    wait_for(lambda: all(_analysed(node, s) for s in studies), 60)

    def retried() -> bool:
        db = node.db()
        try:
            rows = db.query("SELECT attempts, last_error FROM outbox WHERE study_uid IN (?, ?)", studies)
            return bool(rows) and all(r[0] >= 1 and r[1] for r in rows)
        finally:
            db.close()

    wait_for(retried, 30)
    orthanc.start()
    for st in studies:
        exp = _expected(node, st)
        wait_for(lambda: _arrived(orthanc, st, exp), 30)
    def outbox() -> list:
        db = node.db()
        try:
            return db.query("SELECT peer, sop_instance_uid, state FROM outbox")
        finally:
            db.close()

    wait_for(lambda: all(r["state"] == "sent" for r in outbox()), 30)
    rows = outbox()
    assert len({(r["peer"], r["sop_instance_uid"]) for r in rows}) == len(rows)
    stats = orthanc.get("/statistics")
    assert stats["CountStudies"] == 3
    assert stats["CountInstances"] == 1 + len(rows)  # the pushed radiograph + each AI object, once

    # 3. kill -9 the node in the middle of a job; after restart the job completes
    p, st, _ = _new_study(chest_cr, tmp_path, 4)
    assert scu.send(Peer("medws", "MEDWS", "127.0.0.1", node.port), SENDER_AE, [p]).failed == 0

    def running() -> bool:
        db = node.db()
        try:
            return bool(db.query("SELECT 1 FROM jobs WHERE study_uid = ? AND task = 'cxr' AND state = 'running'",
                                 (st,)))
        finally:
            db.close()

    wait_for(running, 60, interval=0.01)
    node.kill()
    node.start()
    wait_for(lambda: _analysed(node, st), 60)
    exp = _expected(node, st)
    wait_for(lambda: _arrived(orthanc, st, exp), 30)
    db = node.db()
    attempts = db.query("SELECT attempts FROM jobs WHERE study_uid = ? AND task = 'cxr'", (st,))[0][0]
    sops = [r[0] for r in db.query("SELECT sop_instance_uid FROM instances WHERE study_uid = ?", (st,))]
    db.close()
    assert attempts == 2
    assert len(sops) == len(set(sops)) == 1 + len(exp)
