"""Integration: a study signed in the workstation reaches a real Orthanc PACS.

The chest study is in the PACS (uploaded to Orthanc) and in medws's archive; the
radiologist reviews and signs; the VERIFIED SR is stored in the archive and queued in
the outbox for the registered Orthanc peer; the queued item is delivered by C-STORE with
the node's SCU (the outbox worker does the same in production) and Orthanc then holds the
SR, VERIFIED, with the verifying observer, in the same study.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node import scu
from dicom_node.peers import PeerRegistry
from tests.support.orthanc import Orthanc, orthanc_binary
from workstation.core import signing
from workstation.core.store import ReadingStore
from workstation.core.study import load_study_files
from workstation.core.users import UserStore


@pytest.fixture
def pacs(tmp_path):
    orthanc_binary()
    server = Orthanc(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop()


def test_signed_sr_reaches_orthanc(demo_root, pacs: Orthanc):
    root, studies = demo_root
    store = ReadingStore.open(root)
    try:
        for p in store.study_paths(studies.chest_uid):
            pacs.upload(p)  # the PACS holds the images
        PeerRegistry(store.db, store.audit).add("orthanc", pacs.ae_title, "127.0.0.1", pacs.dicom_port)
        users = UserStore.for_root(root)
        users.add("drpark", "radiologist", "pacs-pass-123", "Park^Soyeon")
        loaded = load_study_files(store.study_paths(studies.chest_uid))
        state = store.review_state(studies.chest_uid, lambda _s: loaded.series[0].spacing)
        state.subscribe(lambda d: store.save_decision(studies.chest_uid, d, state.get(d.finding_id)))
        by = {it.label: it for it in state.items}
        state.accept(by["pneumothorax"].id, "drpark")
        for label in ("pleural_effusion", "nodule_mass", "consolidation"):
            state.reject(by[label].id, "drpark")
        text = "Small right apical pneumothorax."
        with pytest.raises(signing.SigningBlocked, match="communication"):
            signing.sign(store, users, studies.chest_uid, "drpark", "pacs-pass-123", text, state.items)
        text += " Discussed with Dr Han (ward 7) by phone at 14:05."
        res = signing.sign(store, users, studies.chest_uid, "drpark", "pacs-pass-123", text, state.items)
        assert res.outbox_rows == 1
        rows = store.db.query("SELECT * FROM outbox WHERE state = 'pending' AND peer = 'orthanc'")
        assert [r["sop_instance_uid"] for r in rows] == [res.sr_sop_uid]
        peer = PeerRegistry(store.db).get("orthanc")
        sent = scu.send(peer, "MEDWS", [Path(r["path"]) if Path(r["path"]).is_absolute() else root / r["path"]
                                        for r in rows])
        assert sent.failed == 0 and sent.sent == 1
        held = pacs.study_instance_uids(studies.chest_uid)
        assert res.sr_sop_uid in held and studies.chest_sop in held
        oid = [i["ID"] for i in pacs.get(f"/studies/{pacs.study_id(studies.chest_uid)}/instances")
               if i["MainDicomTags"]["SOPInstanceUID"] == res.sr_sop_uid][0]
        tags = pacs.get(f"/instances/{oid}/simplified-tags")
        assert tags["VerificationFlag"] == "VERIFIED" and tags["Modality"] == "SR"
        assert tags["VerifyingObserverSequence"][0]["VerifyingObserverName"] == "Park^Soyeon"
    finally:
        store.close()
