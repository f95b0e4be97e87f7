"""The node's own storage receive path: PDU encoding checked against pynetdicom's
decoders, routing between it and pynetdicom, protocol errors, the association limit,
and byte-identical storage on both paths."""
from __future__ import annotations

import socket
import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_dataset
from pynetdicom import AE, build_role
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dicom_node import pdu
from dicom_node.scp import Node
from dicom_node.storage_acceptor import handles, negotiate
from tests.node.conftest import TEST_AE

EXPLICIT, IMPLICIT, J2K = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90"


def _rq_bytes(contexts: list, max_pdu: int = 16382, roles: list | None = None) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = pdu.APPLICATION_CONTEXT
    primitive.calling_ae_title = "CALLER"
    primitive.called_ae_title = "MEDWS"
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    primitive.presentation_context_definition_list = contexts
    item = MaximumLengthNotification()
    item.maximum_length_received = max_pdu
    primitive.user_information = [item] + (roles or [])
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return rq.encode()


def test_associate_rq_parsed_and_ac_decodes_in_pynetdicom() -> None:
    raw = _rq_bytes([build_context(CTImageStorage, [J2K, EXPLICIT]), build_context(Verification)])
    rq = pdu.parse_associate_rq(raw)
    assert (rq.calling_ae, rq.called_ae, rq.max_pdu) == ("CALLER", "MEDWS", 16382)
    assert rq.contexts[0].abstract_syntax == str(CTImageStorage)
    assert rq.contexts[0].transfer_syntaxes == (J2K, EXPLICIT)
    assert handles(rq)
    results = negotiate(rq, [EXPLICIT, IMPLICIT], [IMPLICIT])
    assert results == [(1, pdu.ACCEPTANCE, EXPLICIT), (3, pdu.ACCEPTANCE, IMPLICIT)]
    ac = A_ASSOCIATE_AC()
    encoded = pdu.associate_ac(rq, results, 1 << 22, "1.2.3.4", "MEDWS_TEST")
    ac.decode(encoded)
    assert ac.called_ae_title == "MEDWS" and ac.calling_ae_title == "CALLER"
    cxs = {cx.context_id: (cx.result, cx.transfer_syntax) for cx in ac.presentation_context}
    assert cxs == {1: (0, EXPLICIT), 3: (0, IMPLICIT)}
    user = {type(i).__name__: i for i in ac.user_information.user_data}
    assert user["MaximumLengthSubItem"].maximum_length_received == 1 << 22
    assert user["ImplementationClassUIDSubItem"].implementation_class_uid == "1.2.3.4"


def test_unsupported_syntax_and_routing_decisions() -> None:
    rq = pdu.parse_associate_rq(_rq_bytes([build_context(CTImageStorage, [J2K])]))
    assert negotiate(rq, [EXPLICIT], [IMPLICIT]) == [(1, pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED, J2K)]
    query = pdu.parse_associate_rq(_rq_bytes([build_context(CTImageStorage),
                                              build_context(StudyRootQueryRetrieveInformationModelFind)]))
    assert not handles(query)  # query/retrieve: pynetdicom
    role = pdu.parse_associate_rq(_rq_bytes([build_context(CTImageStorage)],
                                            roles=[build_role(CTImageStorage, scp_role=True)]))
    assert not handles(role)  # role selection (C-GET): pynetdicom


def test_malformed_pdus_raise() -> None:
    raw = _rq_bytes([build_context(CTImageStorage)])
    with pytest.raises(pdu.PDUError):
        pdu.parse_associate_rq(raw[:-3])
    with pytest.raises(pdu.PDUError):
        list(pdu.pdvs(memoryview(struct.pack(">IBB", 100, 1, 3) + b"short")))
    with pytest.raises(pdu.PDUError):
        pdu.parse_command(struct.pack("<HHI", 8, 0x10, 2) + b"xx")  # not group 0000


def test_response_command_set_is_valid_implicit_le() -> None:
    raw = pdu.response(pdu.C_STORE_RSP, 7, 0xA900, str(CTImageStorage), "1.2.3.44")
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8001, 7, 0xA900)
    assert ds.AffectedSOPClassUID == CTImageStorage and ds.AffectedSOPInstanceUID == "1.2.3.44"
    assert ds.CommandDataSetType == 0x0101
    fragments = list(pdu.pdvs(memoryview(pdu.p_data(5, True, True, raw)[6:])))
    assert [(c, cmd, last, bytes(f)) for c, cmd, last, f in fragments] == [(5, True, True, raw)]


def _associate_raw(node: Node, contexts: list) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.sendall(_rq_bytes(contexts))
    header = sock.recv(6, socket.MSG_WAITALL)
    body = sock.recv(pdu.pdu_length(header)[1], socket.MSG_WAITALL)
    assert header[0] == pdu.ASSOCIATE_AC, (header + body).hex()
    return sock


def test_protocol_error_is_aborted_and_node_keeps_serving(node: Node, ct_files: list[Path]) -> None:
    node.peers.add("caller", "CALLER", "127.0.0.1", 104)
    sock = _associate_raw(node, [build_context(CTImageStorage)])
    sock.sendall(pdu.p_data(9, False, True, b"data for a context never accepted"))
    reply = sock.recv(10, socket.MSG_WAITALL)
    assert reply[0] == pdu.ABORT and reply[9] == pdu.ABORT_INVALID_PARAMETER
    sock.close()
    sock = _associate_raw(node, [build_context(CTImageStorage)])
    sock.sendall(bytes([0x09, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # an unknown PDU type
    assert sock.recv(10, socket.MSG_WAITALL)[0] == pdu.ABORT
    sock.close()
    ae = AE(ae_title=TEST_AE)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDWS")
    assert int(assoc.send_c_store(pydicom.dcmread(ct_files[0])).Status) == 0
    assoc.release()
    assert node.archive.counts()["instances"] == 1


def test_association_limit_is_a_transient_rejection(config, ct_files: list[Path]) -> None:
    node = Node(config.replace(max_associations=1, require_registered=False))
    node.start()
    try:
        first = _associate_raw(node, [build_context(CTImageStorage)])
        second = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        second.sendall(_rq_bytes([build_context(Verification)]))
        reply = second.recv(10, socket.MSG_WAITALL)
        assert reply[0] == pdu.ASSOCIATE_RJ and tuple(reply[7:10]) == (0x02, 0x03, 0x02)
        second.close()
        first.sendall(pdu.abort(0, 0))
        first.close()
    finally:
        node.stop()


def test_both_receive_paths_store_identical_files(config, ct_files: list[Path], tmp_path: Path) -> None:
    stored = {}
    for fast in (True, False):
        cfg = config.replace(root=tmp_path / f"root_{fast}", storage_acceptor=fast, require_registered=False)
        node = Node(cfg)
        node.start()
        try:
            ae = AE(ae_title=TEST_AE)
            ae.add_requested_context(CTImageStorage, [EXPLICIT])
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)  # this one: pynetdicom
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDWS")
            assert int(assoc.send_c_echo().Status) == 0
            for path in ct_files[:3]:
                assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
            assoc.release()
            ae = AE(ae_title=TEST_AE)
            ae.add_requested_context(CTImageStorage, [EXPLICIT])
            assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDWS")  # storage only: the fast path
            for path in ct_files[3:6]:
                assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
            assoc.release()
            stored[fast] = {p.name: p.read_bytes() for p in cfg.dicom_dir.rglob("*.dcm")}
            assert node.archive.counts()["instances"] == 6
        finally:
            node.stop()
    assert stored[True] == stored[False] and len(stored[True]) == 6


def _store_command(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    def ui(element: int, value: str) -> bytes:
        raw = value.encode() + (b"\0" if len(value) % 2 else b"")
        return struct.pack("<HHI", 0, element, len(raw)) + raw

    def us(element: int, value: int) -> bytes:
        return struct.pack("<HHIH", 0, element, 2, value)

    body = ui(0x0002, sop_class) + us(0x0100, 0x0001) + us(0x0110, message_id) + us(0x0700, 0)
    body += us(0x0800, 0x0000) + ui(0x1000, sop_instance)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def test_interrupted_transfer_leaves_nothing_staged(node: Node, ct_files: list[Path]) -> None:
    import time

    node.peers.add("caller", "CALLER", "127.0.0.1", 104)
    ds = pydicom.dcmread(ct_files[0])
    data = ct_files[0].read_bytes()
    sock = _associate_raw(node, [build_context(CTImageStorage, [EXPLICIT])])
    sock.sendall(pdu.p_data(1, True, True, _store_command(1, str(ds.SOPClassUID), str(ds.SOPInstanceUID))))
    sock.sendall(pdu.p_data(1, False, False, data[200:60_000]))  # the first part only
    incoming = node.config.root / "incoming"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list(incoming.glob("*.tmp")):
        time.sleep(0.02)
    assert len(list(incoming.glob("*.tmp"))) == 1  # being written while it arrives
    sock.sendall(pdu.abort(0, 0))
    sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and list(incoming.glob("*.tmp")):
        time.sleep(0.02)
    assert not list(incoming.glob("*.tmp"))
    assert node.archive.counts()["instances"] == 0
    (incoming / "123.abc.tmp").write_bytes(b"left by a killed process")
    assert node.archive.reconcile()["temp_removed"] == 1
