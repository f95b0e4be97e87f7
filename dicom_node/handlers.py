"""pynetdicom event handlers: thin adapters from DIMSE requests to node calls.

Each handler receives what it uses as bound arguments (``evt_handlers=[(evt, fn,
[args])]``), calls one function, and maps :class:`~dicom_node.errors.NodeError`
subclasses to their DIMSE status (0xA700 out of resources, 0xA900 data set does not
match SOP class, 0xC000 cannot understand, 0x0111 duplicate); anything unexpected is
logged with its traceback and answered 0xC210 (PS3.4 B.2.3 "Error: cannot
understand", implementation specific sub-code) so the node keeps running.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import build_context

from dicom_node import query
from dicom_node.archive import Archive, StagedWrite
from dicom_node.audit import Audit
from dicom_node.db import Database
from dicom_node.errors import NodeError, TooLargeError
from dicom_node.peers import PeerRegistry

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
STATUS_UNEXPECTED = 0xC210
STATUS_UNKNOWN_MOVE_DESTINATION = 0xA801
STATUS_QUERY_FAILED = 0xC001


def _calling(event: Any) -> str:
    return str(event.assoc.requestor.ae_title or "").strip()


def admit(peers: PeerRegistry, audit: Audit, require_registered: bool, calling: str, address: str) -> bool:
    """True when ``calling`` may associate from ``address``; a refusal is audited and
    logged (the caller answers A-ASSOCIATE-RJ "calling AE title not recognized")."""
    if not require_registered or peers.is_allowed(calling, address):
        return True
    audit.record("association.rejected", actor=calling, address=address, reason="calling AE title not recognized")
    logger.warning("association from %s (%s) rejected: calling AE title not registered", calling, address)
    return False


def handle_requested(event: Any, peers: PeerRegistry, audit: Audit, require_registered: bool) -> None:
    """EVT_REQUESTED: reject an unregistered calling AE title/host with A-ASSOCIATE-RJ
    (rejected-permanent, service-user, "calling AE title not recognized", PS3.8 9.3.4)."""
    calling = str(event.assoc.requestor.primitive.calling_ae_title or "").strip()
    if admit(peers, audit, require_registered, calling, str(event.assoc.requestor.address or "")):
        return
    event.assoc.acse.send_reject(0x01, 0x01, 0x03)
    event.assoc.kill()  # as pynetdicom's own rejection: waits until the A-ASSOCIATE-RJ is sent


def handle_echo(event: Any) -> int:
    """C-ECHO (PS3.7 9.1.5): always success."""
    return STATUS_SUCCESS


def store_status(archive: Archive, data: bytes, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
                 calling: str, size: int | None = None, staged: StagedWrite | None = None) -> int:
    """Store one received instance; the C-STORE status to answer (PS3.4 B.2.3).

    ``size`` is the received length when ``data`` was dropped for exceeding
    ``max_instance_bytes`` while it arrived; ``staged``, the same bytes already
    written while they arrived (removed in every case).
    """
    try:
        if size is not None and size > archive.config.max_instance_bytes:
            if staged is not None:
                staged.discard()
            raise TooLargeError(f"instance of {size} bytes exceeds max_instance_bytes="
                                f"{archive.config.max_instance_bytes}")
        archive.store(data, transfer_syntax=transfer_syntax, sop_class_uid=sop_class_uid,
                      sop_instance_uid=sop_instance_uid, source_ae=calling, staged=staged)
    except NodeError as e:
        logger.warning("C-STORE from %s refused with 0x%04X: %s", calling, e.status, e)
        return e.status
    except Exception:  # noqa: BLE001 - the node must keep running
        logger.exception("C-STORE from %s failed unexpectedly", calling)
        return STATUS_UNEXPECTED
    return STATUS_SUCCESS


def handle_store(event: Any, archive: Archive) -> int:
    """C-STORE (PS3.4 B.2): store the received bytes; success only once durable."""
    request = event.request
    return store_status(archive, event.encoded_dataset(include_meta=False), str(event.context.transfer_syntax),
                        str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), _calling(event))


def _identifier(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.VR == "SQ":
            continue
        value = elem.value
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        out[elem.keyword] = "" if value is None else str(value)
    return out


def match_dataset(match: dict[str, Any], ae_title: str) -> Dataset:
    """A C-FIND response identifier from one match (UTF-8, PS3.5 6.1.2.3)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in match.items():
        setattr(ds, keyword, "" if value is None else (str(value) if not isinstance(value, str) else value))
    ds.RetrieveAETitle = ae_title
    return ds


def handle_find(event: Any, db: Database, ae_title: str) -> Iterator[tuple[int, Dataset | None]]:
    """C-FIND, Study Root (PS3.4 C.4.1): STUDY, SERIES and IMAGE levels."""
    try:
        matches = query.find(db, _identifier(event.identifier))
    except NodeError as e:
        logger.warning("C-FIND from %s refused with 0x%04X: %s", _calling(event), e.status, e)
        yield e.status, None
        return
    except Exception:  # noqa: BLE001
        logger.exception("C-FIND from %s failed", _calling(event))
        yield STATUS_QUERY_FAILED, None
        return
    for match in matches:
        if event.is_cancelled:
            yield STATUS_CANCEL, None
            return
        yield STATUS_PENDING, match_dataset(match, ae_title)


def _rows(event: Any, db: Database) -> list[dict[str, Any]]:
    return query.instance_rows(db, _identifier(event.identifier))


def _datasets(event: Any, archive: Archive, rows: list[dict[str, Any]]) -> Iterator[tuple[int, Dataset | None]]:
    for row in rows:
        if event.is_cancelled:
            yield STATUS_CANCEL, None
            return
        yield STATUS_PENDING, pydicom.dcmread(archive.absolute(row["path"]))


def handle_get(event: Any, archive: Archive) -> Iterator[Any]:
    """C-GET (PS3.4 C.4.3): send the matching instances on the same association."""
    rows = _rows(event, archive.db)  # a NodeError here is answered 0xC4xx by pynetdicom
    yield len(rows)
    yield from _datasets(event, archive, rows)


def storage_contexts(rows: list[dict[str, Any]]) -> list[Any]:
    """Presentation contexts to propose for sending ``rows``: each SOP class with its
    stored transfer syntax plus explicit and implicit VR little endian (max 128)."""
    by_class: dict[str, list[str]] = {}
    for row in rows:
        syntaxes = by_class.setdefault(row["sop_class_uid"], [])
        if row["transfer_syntax_uid"] not in syntaxes:
            syntaxes.append(row["transfer_syntax_uid"])
    contexts = []
    for sop_class, syntaxes in list(by_class.items())[:128]:
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts not in syntaxes:
                syntaxes.append(ts)
        contexts.append(build_context(sop_class, syntaxes))
    return contexts


def handle_move(event: Any, archive: Archive, peers: PeerRegistry) -> Iterator[Any]:
    """C-MOVE (PS3.4 C.4.2): send the matching instances to a registered peer."""
    destination = str(event.move_destination or "").strip()
    candidates = peers.by_ae_title(destination)
    if not candidates:
        logger.warning("C-MOVE from %s: destination %s is not a registered peer", _calling(event), destination)
        yield None, None
        return
    rows = _rows(event, archive.db)  # a NodeError here is answered 0xC5xx by pynetdicom
    peer = candidates[0]
    kwargs: dict[str, Any] = {"contexts": storage_contexts(rows) or None}
    if peer.tls:  # the sub-operations' association over TLS too (dicom_node.tls)
        kwargs["tls_args"] = (peer.tls_context, peer.host)
    yield peer.host, peer.port, kwargs
    yield len(rows)
    yield from _datasets(event, archive, rows)
