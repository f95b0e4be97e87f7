"""The SCP over the network with pynetdicom as the peer: echo, store, find, get,
move, association policy, and bad input that must not take the node down."""
from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification

from dicom_node import scu
from dicom_node.audit import Audit
from dicom_node.errors import AssociationError
from dicom_node.peers import Peer
from dicom_node.scp import Node

from tests.node.conftest import TEST_AE
from tests.conftest import get_port


def _peer(node: Node) -> Peer:
    return Peer("medws", node.config.ae_title, "127.0.0.1", node.port)


def _send_raw(node: Node, path: Path, calling: str = TEST_AE) -> int:
    """C-STORE the file's data set bytes as they are (even when broken)."""
    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title=calling)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.config.ae_title)
    assert assoc.is_established
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()
    return int(status.Status)


def test_echo_store_find(node: Node, ct_files: list[Path]) -> None:
    peer = _peer(node)
    assert scu.echo(peer, TEST_AE) == 0
    result = scu.send(peer, TEST_AE, ct_files[:4])
    assert result.sent == 4 and result.failed == 0
    studies = scu.find(peer, TEST_AE, "STUDY", {"PatientID": "MEDWS-CT-0001"})
    assert len(studies) == 1 and int(studies[0]["NumberOfStudyRelatedInstances"]) == 4
    images = scu.find(peer, TEST_AE, "IMAGE", {"StudyInstanceUID": studies[0]["StudyInstanceUID"]})
    assert len(images) == 4


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm", "emri_small_RLE.dcm",
                                  "image_dfl.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_bigendian.dcm"])
def test_store_compressed_and_other_syntaxes_as_sent(node: Node, name: str) -> None:
    path = Path(get_testdata_file(name))
    assert _send_raw(node, path) == 0
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    stored = node.archive.study_paths(ds.StudyInstanceUID)
    meta = pydicom.filereader.read_file_meta_info(path)
    start = 144 + int(meta.FileMetaInformationGroupLength)
    assert len(stored) == 1
    start_s = 144 + int(pydicom.filereader.read_file_meta_info(stored[0]).FileMetaInformationGroupLength)
    assert stored[0].read_bytes()[start_s:] == path.read_bytes()[start:]


def test_unregistered_ae_is_rejected_and_audited(node: Node) -> None:
    with pytest.raises(AssociationError, match="rejected"):
        scu.echo(_peer(node), "STRANGER")
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(Verification)
    seen = []  # the A-ASSOCIATE-RJ PDU as it arrived (pynetdicom's is_rejected can lose a race
    #            with the connection close that follows it, see dicom_node.scu.associate)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDWS",
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda e: seen.append(e.pdu))])
    assert not assoc.is_established
    (rj,) = [p for p in seen if type(p).__name__ == "A_ASSOCIATE_RJ"]
    assert (rj.result, rj.source, rj.reason_diagnostic) == (0x01, 0x01, 0x03)
    events = Audit(node.db).events("association.rejected")
    assert events and events[0]["actor"] == "STRANGER"
    assert scu.echo(_peer(node), TEST_AE) == 0  # the registered peer still gets in


def test_registered_ae_from_wrong_host_is_rejected(node: Node) -> None:
    node.peers.add("elsewhere", "FARAWAY", "10.255.255.1", 104)
    with pytest.raises(AssociationError, match="rejected"):
        scu.echo(_peer(node), "FARAWAY")


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    ds = pydicom.dcmread(src)
    for k, v in changes.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(dst)
    return dst


def test_bad_input_statuses_and_node_keeps_working(config, ct_files: list[Path], tmp_path: Path) -> None:
    node = Node(config.replace(max_instance_bytes=600_000))
    node.peers.add("tester", TEST_AE, "127.0.0.1", 11113)
    node.start()
    try:
        good = ct_files[0]
        raw = good.read_bytes()
        truncated = tmp_path / "truncated.dcm"
        truncated.write_bytes(raw[: len(raw) - 5000])
        assert _send_raw(node, truncated) == 0xC000
        no_uid = _rewrite(good, tmp_path / "no_uid.dcm", SOPInstanceUID=None)
        assert _send_raw(node, no_uid) == 0xC000
        mismatch = _rewrite(good, tmp_path / "mismatch.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
        assert _send_raw(node, mismatch) == 0xA900
        big = pydicom.dcmread(good)
        big.Rows = 600
        big.PixelData = b"\0\0" * 600 * 512
        big.SOPInstanceUID = big.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
        big.save_as(tmp_path / "big.dcm")
        assert _send_raw(node, tmp_path / "big.dcm") == 0xA700
        study = pydicom.dcmread(good, stop_before_pixels=True).StudyInstanceUID
        blocker = config.dicom_dir / study
        blocker.write_bytes(b"a file where the study folder should be")
        assert _send_raw(node, good) == 0xA700  # write error
        assert node.archive.counts()["instances"] == 0
        assert not [p for p in config.dicom_dir.rglob("*") if p.is_file() and p != blocker]
        blocker.unlink()
        assert _send_raw(node, good) == 0  # the next association works
        assert node.archive.counts()["instances"] == 1
    finally:
        node.stop()


def test_c_get_and_c_move(node: Node, ct_files: list[Path], tmp_path: Path) -> None:
    peer = _peer(node)
    scu.send(peer, TEST_AE, ct_files[:3])
    study = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID

    # C-GET: the requestor takes the SCP role for CT storage
    received: list[str] = []

    def on_store(event):
        received.append(event.request.AffectedSOPInstanceUID)
        return 0

    ae = AE(ae_title=TEST_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDWS", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    ident = pydicom.Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    statuses = [int(s.Status) for s, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1] == 0 and len(received) == 3

    # C-MOVE to a second node registered as peer
    other_cfg = node.config.replace(root=tmp_path / "other", ae_title="OTHER")
    other = Node(other_cfg)
    other.peers.add("medws", "MEDWS", "127.0.0.1", node.port)
    other_port = other.start()
    try:
        node.peers.add("other", "OTHER", "127.0.0.1", other_port)
        result = scu.move(peer, TEST_AE, "OTHER", study)
        assert result["completed"] == 3 and result["failed"] == 0
        assert other.archive.counts()["instances"] == 3
        with pytest.raises(AssociationError, match="0xA801"):
            scu.move(peer, TEST_AE, "UNKNOWN", study)
    finally:
        other.stop()
