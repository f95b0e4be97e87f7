"""Re-analysis withdraws the AI objects a PACS already holds: an IHE IOCM rejection note
(KOS, "Rejected for Quality Reasons") goes to the peers that received them, only."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.analysis import analyze_study
from dicom_node.archive import Archive
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.delivery import Delivery, Destinations
from dicom_node.findings import ResultError
from dicom_node.peers import PeerRegistry
from dicom_node.rejection import REJECTION_TITLE, build_rejection_note, rejected_uids
from tests.conftest import get_port
from tests.pipeline.conftest import BACKENDS, copy_as
from tests.results.sources import assert_valid
from tests.support import dcmtk


def _current(db: Database, study: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in db.query("SELECT kind, sop_instance_uid FROM ai_objects WHERE study_uid = ? AND state = 'current' "
                      "ORDER BY id", (study,)):
        out.setdefault(r["kind"], []).append(r["sop_instance_uid"])
    return out


def _received(out_dir: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in out_dir.iterdir() if p.is_file())}


@pytest.mark.parametrize("backend", BACKENDS)
def test_reanalysis_sends_a_rejection_note_for_delivered_objects(cxr_models, config: NodeConfig, db: Database,
                                                                  chest_cr: Path, tmp_path: Path) -> None:
    archive = Archive(config, db)
    src = archive.store_file(chest_cr)
    port = get_port()
    PeerRegistry(db).add("pacs", "STORESCP", "127.0.0.1", port)
    Destinations(db).set("pacs", True)
    delivery = Delivery(db, "MEDWS", max_attempts=2, base_s=0.0)
    received = tmp_path / "pacs"
    with dcmtk.storescp(port, received):
        analyze_study(config, src.study_uid)
        first = _current(db, src.study_uid)
        first_uids = set(sum(first.values(), []))
        assert delivery.deliver_once().sent == len(first_uids)
        assert set(_received(received)) == first_uids

        # a second destination added afterwards never held the first objects
        PeerRegistry(db).add("archive2", "ARCHIVE2", "127.0.0.1", get_port())
        Destinations(db).set("archive2", True)

        # a late instance: re-analysed; the delivered objects are withdrawn
        late = copy_as(chest_cr, tmp_path / "late.dcm", SOPInstanceUID=generate_uid(), InstanceNumber="2")
        archive.store_file(late)
        summary = analyze_study(config, src.study_uid)
        job = summary["jobs"][-1]
        second = _current(db, src.study_uid)
        (note_uid,) = second["rejection"]
        assert not first_uids & set(sum(second.values(), []))
        queued = {(r["peer"], r["sop_instance_uid"]) for r in db.query("SELECT peer, sop_instance_uid FROM outbox "
                                                                          "WHERE state = 'pending'")}
        assert ("pacs", note_uid) in queued and ("archive2", note_uid) not in queued
        assert {p for p, u in queued if u != note_uid} == {"pacs", "archive2"}  # the new objects go everywhere
        assert job["state"] == "done"

        delivery.deliver_once()
        got = _received(received)
    note = got[note_uid]
    assert note.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document
    title = note.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == (REJECTION_TITLE.value, "DCM")
    assert rejected_uids(note) == first_uids
    assert note.StudyInstanceUID == src.study_uid
    assert_valid(received / next(p.name for p in received.iterdir() if pydicom.dcmread(p).SOPInstanceUID == note_uid))

    # analysing the same content again changes nothing; the note itself is never withdrawn
    again = analyze_study(config, src.study_uid)
    assert again["jobs"][-1]["state"] == "done" and _current(db, src.study_uid) == second


def test_rejection_note_needs_objects_of_one_study(chest_cr: Path) -> None:
    ds = pydicom.dcmread(chest_cr, stop_before_pixels=True)
    with pytest.raises(ResultError):
        build_rejection_note([], generate_uid(), generate_uid())
    other = pydicom.dcmread(chest_cr, stop_before_pixels=True)
    other.StudyInstanceUID = generate_uid()
    with pytest.raises(ResultError):
        build_rejection_note([ds, other], generate_uid(), generate_uid())
    note = build_rejection_note([ds], generate_uid(), generate_uid())
    assert rejected_uids(note) == {ds.SOPInstanceUID}
