"""DICOM Upper Layer PDUs and DIMSE command sets, encoded and decoded directly.

Just what the node's storage acceptor (:mod:`dicom_node.storage_acceptor`) needs:
A-ASSOCIATE-RQ parsing (PS3.8 9.3.2), A-ASSOCIATE-AC/RJ (9.3.3, 9.3.4),
P-DATA-TF presentation data values (9.3.5), A-RELEASE-RP (9.3.7), A-ABORT (9.3.8),
and command sets in implicit VR little endian (PS3.7 6.3.1, E.1).  Pure functions
over ``bytes``; the socket loop lives in the acceptor.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from dicom_node.errors import NodeError

# PDU types (PS3.8 Table 9-11)
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07

# user information sub-items (PS3.8 D.3.3, PS3.7 D.3.3)
MAX_LENGTH = 0x51
IMPLEMENTATION_CLASS_UID = 0x52
ASYNC_OPS_WINDOW = 0x53
ROLE_SELECTION = 0x54
IMPLEMENTATION_VERSION_NAME = 0x55

# presentation context results (PS3.8 Table 9-18)
ACCEPTANCE = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# A-ABORT source and reasons (PS3.8 Table 9-26)
ABORT_SERVICE_PROVIDER = 2
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_INVALID_PARAMETER = 6

# command fields and data set type (PS3.7 E.1)
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


class PDUError(NodeError):
    """A PDU or command set is malformed (answered with A-ABORT)."""


@dataclass(frozen=True)
class ProposedContext:
    """One presentation context of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRequest:
    """The fields of an A-ASSOCIATE-RQ the acceptor acts on.

    ``other_user_items`` lists the user-information sub-item types besides maximum
    length, implementation class/version and the asynchronous operations window
    (e.g. 0x54 role selection, 0x58 user identity), so the caller can leave such
    associations to a full implementation.
    """

    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[ProposedContext, ...]
    max_pdu: int
    implementation_class_uid: str
    implementation_version: str
    async_ops: tuple[int, int] | None
    other_user_items: tuple[int, ...]


def _uid(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\0 ").strip()


def _items(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, value) of the variable items between ``start`` and ``end`` (2-byte lengths)."""
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise PDUError("truncated item header")
        kind = data[pos]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if pos + 4 + length > end:
            raise PDUError(f"item 0x{kind:02X} overruns its PDU")
        yield kind, data[pos + 4:pos + 4 + length]
        pos += 4 + length


def pdu_length(header: bytes) -> tuple[int, int]:
    """(type, length) from the 6-byte PDU header (PS3.8 9.3.1)."""
    kind, _reserved, length = struct.unpack(">BBI", header)
    return kind, length


def parse_associate_rq(pdu: bytes) -> AssociateRequest:
    """Decode a whole A-ASSOCIATE-RQ PDU (header included)."""
    if len(pdu) < 74 or pdu[0] != ASSOCIATE_RQ:
        raise PDUError("not an A-ASSOCIATE-RQ PDU")
    _kind, length = pdu_length(pdu[:6])
    if length + 6 != len(pdu):
        raise PDUError("A-ASSOCIATE-RQ length does not match its content")
    called = pdu[10:26].decode("ascii", "replace").strip()
    calling = pdu[26:42].decode("ascii", "replace").strip()
    app_context = ""
    contexts: list[ProposedContext] = []
    max_pdu, impl_uid, impl_version = 0, "", ""
    async_ops: tuple[int, int] | None = None
    others: list[int] = []
    for kind, value in _items(pdu, 74, len(pdu)):
        if kind == 0x10:
            app_context = _uid(value)
        elif kind == 0x20:
            if len(value) < 4:
                raise PDUError("presentation context item too short")
            abstract, syntaxes = "", []
            for sub, sub_value in _items(value, 4, len(value)):
                if sub == 0x30:
                    abstract = _uid(sub_value)
                elif sub == 0x40:
                    syntaxes.append(_uid(sub_value))
            contexts.append(ProposedContext(value[0], abstract, tuple(syntaxes)))
        elif kind == 0x50:
            for sub, sub_value in _items(value, 0, len(value)):
                if sub == MAX_LENGTH and len(sub_value) == 4:
                    (max_pdu,) = struct.unpack(">I", sub_value)
                elif sub == IMPLEMENTATION_CLASS_UID:
                    impl_uid = _uid(sub_value)
                elif sub == IMPLEMENTATION_VERSION_NAME:
                    impl_version = sub_value.decode("ascii", "replace").strip()
                elif sub == ASYNC_OPS_WINDOW and len(sub_value) == 4:
                    async_ops = struct.unpack(">HH", sub_value)  # type: ignore[assignment]
                else:
                    others.append(sub)
    if not contexts:
        raise PDUError("A-ASSOCIATE-RQ proposes no presentation context")
    return AssociateRequest(called, calling, app_context, tuple(contexts), max_pdu, impl_uid, impl_version,
                            async_ops, tuple(others))


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def associate_ac(rq: AssociateRequest, results: list[tuple[int, int, str]], max_pdu: int,
                 implementation_class_uid: str, implementation_version: str) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3): ``results`` holds (context id, result, transfer
    syntax) per proposed context; called/calling AE titles are returned as received."""
    contexts = b"".join(
        _item(0x21, struct.pack(">BBBB", cid, 0, result, 0) + _item(0x40, syntax.encode("ascii")))
        for cid, result, syntax in results
    )
    user = _item(MAX_LENGTH, struct.pack(">I", max_pdu)) + _item(IMPLEMENTATION_CLASS_UID,
                                                                 implementation_class_uid.encode("ascii"))
    if rq.async_ops is not None:  # operations are performed one at a time (PS3.7 D.3.3.3)
        user += _item(ASYNC_OPS_WINDOW, struct.pack(">HH", 1, 1))
    user += _item(IMPLEMENTATION_VERSION_NAME, implementation_version.encode("ascii")[:16])
    body = (struct.pack(">HH", 1, 0) + _ae(rq.called_ae) + _ae(rq.calling_ae) + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT.encode("ascii")) + contexts + _item(0x50, user))
    return _pdu(ASSOCIATE_AC, body)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return _pdu(ASSOCIATE_RJ, bytes((0, result, source, reason)))


def abort(source: int = ABORT_SERVICE_PROVIDER, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8)."""
    return _pdu(ABORT, bytes((0, 0, source, reason)))


RELEASE_RP_PDU = _pdu(RELEASE_RP, bytes(4))


def pdvs(body: memoryview) -> Iterator[tuple[int, bool, bool, memoryview]]:
    """(context id, is command, is last fragment, fragment) of each presentation data
    value item in a P-DATA-TF body (PS3.8 9.3.5, E.2)."""
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            raise PDUError("truncated presentation data value item")
        (length,) = struct.unpack_from(">I", body, pos)
        if length < 2 or pos + 4 + length > end:
            raise PDUError("presentation data value item length is invalid")
        control = body[pos + 5]
        yield body[pos + 4], bool(control & 1), bool(control & 2), body[pos + 6:pos + 4 + length]
        pos += 4 + length


def p_data(context_id: int, command: bool, last: bool, data: bytes) -> bytes:
    """A P-DATA-TF PDU with one presentation data value."""
    pdv = struct.pack(">IBB", len(data) + 2, context_id, (1 if command else 0) | (2 if last else 0)) + data
    return _pdu(P_DATA_TF, pdv)


def parse_command(data: bytes) -> dict[int, bytes]:
    """Element values of a command set (implicit VR little endian, group 0000) by tag."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise PDUError("truncated command set")
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if group != 0 or pos + 8 + length > end:
            raise PDUError("invalid command set element")
        out[element] = bytes(data[pos + 8:pos + 8 + length])
        pos += 8 + length
    return out


def command_uint(command: dict[int, bytes], element: int) -> int | None:
    """A US/UL command element as an integer (``None`` when absent)."""
    raw = command.get(element)
    if raw is None or len(raw) not in (2, 4):
        return None
    return int.from_bytes(raw, "little")


def command_uid(command: dict[int, bytes], element: int) -> str:
    """A UI command element as text ('' when absent)."""
    return _uid(command.get(element, b""))


def _us(element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0, element, 2, value)


def _ui(element: int, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\0"
    return struct.pack("<HHI", 0, element, len(raw)) + raw


def response(command_field: int, message_id: int, status: int, sop_class_uid: str,
             sop_instance_uid: str = "") -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (PS3.7 9.3.1.2, 9.3.5.2) with its
    group length, elements in ascending tag order."""
    body = _ui(0x0002, sop_class_uid) + _us(0x0100, command_field) + _us(0x0120, message_id)
    body += _us(0x0800, NO_DATA_SET) + _us(0x0900, status)
    if sop_instance_uid:
        body += _ui(0x1000, sop_instance_uid)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body
