"""The node as a service user: C-ECHO, C-FIND, C-MOVE and C-STORE to a peer.

Each call opens one association, does its work and releases it; failures raise
:class:`~dicom_node.errors.AssociationError` with the reason (rejected, aborted,
unreachable).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicom_node.errors import AssociationError, NodeError
from dicom_node.peers import Peer

logger = logging.getLogger(__name__)


def install_requestor_response_guard() -> None:
    """Close a race in pynetdicom's requestor (idempotent).

    After each ``send_c_*`` the requestor's reactor thread is released and, when it is
    scheduled late, runs its non-blocking ``get_msg`` after the user thread has sent the
    next request; a fast peer's response is then taken by the reactor ("Received
    unexpected C-STORE service message") and the user thread waits for the DIMSE
    time-out.  Here a requestor's reactor leaves responses on the queue for the user
    thread (it only serves requests, e.g. C-GET's C-STORE sub-operations).
    """
    import threading

    from pynetdicom.dimse import DIMSEServiceProvider

    if getattr(DIMSEServiceProvider.get_msg, "_medws_guard", False):
        return
    original = DIMSEServiceProvider.get_msg

    def get_msg(self: Any, block: bool = False) -> Any:
        if not block:
            assoc = getattr(self, "assoc", None)
            if assoc is not None and assoc.is_requestor and threading.current_thread() is assoc:
                with self.msg_queue.mutex:
                    head = self.msg_queue.queue[0] if self.msg_queue.queue else None
                if head is not None and not getattr(head[1], "is_valid_request", True):
                    return None, None
        return original(self, block)

    get_msg._medws_guard = True  # type: ignore[attr-defined]
    DIMSEServiceProvider.get_msg = get_msg  # type: ignore[method-assign]


install_requestor_response_guard()

DEFAULT_RETURN_KEYS = {
    "STUDY": ["PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
              "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"],
}


@dataclass
class SendResult:
    """Outcome of :func:`send`: per-file status (``path -> status``; -1 when not sent)."""

    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(1 for s in self.statuses.values() if s in (0x0000, 0xB000, 0xB007, 0xB006))

    @property
    def failed(self) -> int:
        return len(self.statuses) - self.sent


class _Negotiation:
    """What happened on the wire while an association was requested (for a precise error message)."""

    def __init__(self) -> None:
        self.connected = False
        self.received: list[str] = []
        self.rejection: Any = None  # the A-ASSOCIATE-RJ PDU, when one arrived

    def handlers(self) -> list[tuple[Any, Any]]:
        from pynetdicom import evt

        return [(evt.EVT_CONN_OPEN, self._open), (evt.EVT_PDU_RECV, self._pdu)]

    def _open(self, event: Any) -> None:
        self.connected = True

    def _pdu(self, event: Any) -> None:
        self.received.append(type(event.pdu).__name__)
        if self.received[-1] == "A_ASSOCIATE_RJ":
            self.rejection = event.pdu

    def reason(self, assoc: Association) -> str:
        if not self.connected:
            return "no connection (refused, unreachable or timed out)"
        if "A_ABORT_RQ" in self.received:
            return "the peer aborted it (A-ABORT)"
        if self.received:
            return f"unexpected answer ({', '.join(self.received)})"
        if assoc.is_aborted:
            return "the peer closed the connection without answering"
        return "no answer to the A-ASSOCIATE request"


@contextmanager
def associate(peer: Peer, calling_ae: str, contexts: list[Any], timeout_s: float = 30.0,
              max_pdu: int = 4 * 1024 * 1024, **kwargs: Any) -> Iterator[Association]:
    """An established association with ``peer`` (released on exit)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.maximum_pdu_size = max_pdu
    ae.requested_contexts = contexts
    if peer.tls and "tls_args" not in kwargs:  # DICOM over TLS (dicom_node.tls)
        from dicom_node.tls import client_context

        kwargs["tls_args"] = (peer.tls_context or client_context(), peer.host)
    negotiation = _Negotiation()
    handlers = list(kwargs.pop("evt_handlers", [])) + negotiation.handlers()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=handlers, **kwargs)
    if assoc.is_established:
        from pynetdicom import evt

        assoc.unbind(evt.EVT_PDU_RECV, negotiation._pdu)  # only the negotiation is of interest
    else:
        # the A-ASSOCIATE-RJ seen on the wire counts too: when the peer closes the connection
        # right after it, pynetdicom can end the request without setting is_rejected
        if assoc.is_rejected or negotiation.rejection is not None:
            rj = negotiation.rejection or getattr(assoc.acceptor, "primitive", None)
            why = f" ({rj.result_str}, {rj.reason_str})" if rj is not None and hasattr(rj, "reason_str") else ""
            raise AssociationError(
                f"peer {peer.name} ({peer.ae_title}@{peer.host}:{peer.port}) rejected the association{why}; "
                f"is this node ({calling_ae}) registered there?"
            )
        raise AssociationError(f"cannot associate with peer {peer.name} ({peer.ae_title}@{peer.host}:{peer.port}): "
                               + negotiation.reason(assoc))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def echo(peer: Peer, calling_ae: str) -> int:
    """C-ECHO (PS3.7 9.1.5); returns the status (0 = success)."""
    with associate(peer, calling_ae, [build_context(Verification)]) as assoc:
        status = assoc.send_c_echo()
        if not status:
            raise AssociationError(f"no C-ECHO response from {peer.name}")
        return int(status.Status)


def _identifier(level: str, filters: dict[str, str], keys: Iterable[str] | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in list(keys or DEFAULT_RETURN_KEYS[level]):
        setattr(ds, key, "")
    for key, value in filters.items():
        try:
            setattr(ds, key, value)
        except Exception as e:  # noqa: BLE001
            raise NodeError(f"{key} is not a DICOM keyword usable in a query") from e
    return ds


def _to_jsonable(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.keyword in ("SpecificCharacterSet",):
            continue
        value = elem.value
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        elif value is not None and not isinstance(value, (int, float)):
            value = str(value)
        out[elem.keyword] = value
    return out


def find(peer: Peer, calling_ae: str, level: str = "STUDY", filters: dict[str, str] | None = None,
         keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """C-FIND, Study Root (PS3.4 C.4.1); returns the matches as dicts."""
    level = level.upper()
    if level not in DEFAULT_RETURN_KEYS:
        raise NodeError(f"level must be STUDY, SERIES or IMAGE, not {level!r}")
    ident = _identifier(level, filters or {}, keys)
    out: list[dict[str, Any]] = []
    with associate(peer, calling_ae, [build_context(StudyRootQueryRetrieveInformationModelFind)]) as assoc:
        for status, identifier in assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise AssociationError(f"C-FIND to {peer.name} got no response (timeout or abort)")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and identifier is not None:
                out.append(_to_jsonable(identifier))
            elif code != 0x0000:
                raise AssociationError(f"C-FIND to {peer.name} failed with status 0x{code:04X}")
    return out


def move(peer: Peer, calling_ae: str, destination_ae: str, study_uid: str, series_uid: str | None = None) -> dict[str, int]:
    """C-MOVE (PS3.4 C.4.2) of a study (or one series) to ``destination_ae``.

    Returns the final sub-operation counts; raises when the move failed.
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    final: dict[str, int] = {}
    with associate(peer, calling_ae, [build_context(StudyRootQueryRetrieveInformationModelMove)], timeout_s=120) as assoc:
        for status, _ in assoc.send_c_move(ds, destination_ae, StudyRootQueryRetrieveInformationModelMove):
            if not status:
                raise AssociationError(f"C-MOVE from {peer.name} got no response (timeout or abort)")
            code = int(status.Status)
            final = {
                "status": code,
                "completed": int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                "failed": int(status.get("NumberOfFailedSuboperations", 0) or 0),
                "warning": int(status.get("NumberOfWarningSuboperations", 0) or 0),
            }
    if not final or final["status"] not in (0x0000, 0xB000):
        code = final.get("status", -1)
        raise AssociationError(f"C-MOVE from {peer.name} failed with status 0x{code & 0xFFFF:04X}: {final}")
    return final


def dicom_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files under ``paths`` (files or folders, recursively), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")))
        elif p.is_file():
            out.append(p)
        else:
            raise NodeError(f"{p} does not exist")
    return out


def send(peer: Peer, calling_ae: str, files: list[Path]) -> SendResult:
    """C-STORE (PS3.4 B.2) each file as stored (not re-encoded) on one association."""
    result = SendResult()
    metas: dict[Path, tuple[str, str]] = {}
    for f in files:
        try:
            meta = pydicom.filereader.read_file_meta_info(f)
            metas[f] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        except Exception:  # noqa: BLE001
            logger.warning("skipping %s: not a DICOM Part 10 file", f.name)
            result.statuses[str(f)] = -1
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in metas.values():
        syntaxes = by_class.setdefault(sop_class, [])
        if ts not in syntaxes:
            syntaxes.append(ts)
    if len(by_class) > 128:
        raise NodeError("more than 128 SOP classes in one send; send in parts")
    contexts = [build_context(c, ts) for c, ts in by_class.items()]
    if not contexts:
        return result
    # send each file's data set bytes as stored instead of decoding and re-encoding it
    _config.STORE_SEND_CHUNKED_DATASET = True
    with associate(peer, calling_ae, contexts, timeout_s=120) as assoc:
        for f in metas:
            status = assoc.send_c_store(f)
            code = int(status.Status) if status else -1
            result.statuses[str(f)] = code
            if code != 0:
                logger.warning("C-STORE of %s to %s: status 0x%04X", f.name, peer.name, code & 0xFFFF)
            if not assoc.is_established:
                break
    for f in metas:
        result.statuses.setdefault(str(f), -1)
    return result
