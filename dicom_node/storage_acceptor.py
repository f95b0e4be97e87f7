"""The storage acceptor: the node's own receive path for storage associations.

An association that proposes only Storage SOP Classes and Verification (what a PACS
pushing studies, a modality, ``storescu`` or Orthanc send) is served here: the DICOM
Upper Layer and the C-STORE/C-ECHO DIMSE messages are handled straight on the socket
(:mod:`dicom_node.pdu`), each P-DATA-TF PDU read with one ``recv_into`` into its own
buffer and the data set handed to :meth:`Archive.store` as the bytes received.  Every
other association (query/retrieve, role selection for C-GET, user identity) goes to
pynetdicom unchanged: the A-ASSOCIATE-RQ is only *peeked* at (``MSG_PEEK``) before
that decision, so pynetdicom reads it from the socket itself.

Why: pynetdicom spends about 2.2 ms of CPU per 512 KB instance in its state machine,
PDU objects and per-fragment copies (``benchmarks/results/bench_store.md``, "no-op
SCP"), more than storing the instance durably costs.  The rules are the same on both
paths: registered calling AE titles only (A-ASSOCIATE-RJ otherwise, audited), the
maximum number of associations, the same status for every archive error
(:func:`dicom_node.handlers.store_status`), success only once the instance is durable
and indexed.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from dicom_node import pdu
from dicom_node.archive import Archive, StagedWrite
from dicom_node.audit import Audit
from dicom_node.config import NodeConfig
from dicom_node.dicom_file import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from dicom_node.handlers import admit, store_status
from dicom_node.peers import PeerRegistry

logger = logging.getLogger(__name__)

ARTIM_S = 2.0
"""How long the acceptor waits for the requestor to close the transport (PS3.8 ARTIM timer)."""

STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
VERIFICATION = str(Verification)
#: user-information items this path does not negotiate (PS3.7 D.3.3.4 role selection,
#: D.3.3.7 user identity): such associations go to pynetdicom
_FULL_STACK_ITEMS = frozenset({pdu.ROLE_SELECTION, 0x58})


def handles(rq: pdu.AssociateRequest) -> bool:
    """True when this path can serve the association ``rq`` proposes."""
    if _FULL_STACK_ITEMS.intersection(rq.other_user_items):
        return False
    return all(cx.abstract_syntax in STORAGE_SOP_CLASSES or cx.abstract_syntax == VERIFICATION
               for cx in rq.contexts)


def negotiate(rq: pdu.AssociateRequest, storage_syntaxes: list[str],
              verification_syntaxes: list[str]) -> list[tuple[int, int, str]]:
    """(context id, result, transfer syntax) per proposed context: the first of the
    requestor's transfer syntaxes that is supported, as pynetdicom negotiates
    (PS3.8 9.3.3.2)."""
    out = []
    for cx in rq.contexts:
        # a rejected context still carries one transfer syntax sub-item (not significant)
        first = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else "1.2.840.10008.1.2"
        if cx.abstract_syntax == VERIFICATION:
            supported = verification_syntaxes
        elif cx.abstract_syntax in STORAGE_SOP_CLASSES:
            supported = storage_syntaxes
        else:
            out.append((cx.id, pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED, first))
            continue
        chosen = next((ts for ts in cx.transfer_syntaxes if ts in supported), None)
        if chosen is None:
            out.append((cx.id, pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED, first))
        else:
            out.append((cx.id, pdu.ACCEPTANCE, chosen))
    return out


def peek_pdu(sock: socket.socket, timeout_s: float) -> bytes | None:
    """The first PDU on ``sock`` without consuming it (``None``: closed or timed out)."""
    deadline = time.monotonic() + timeout_s
    need = 6
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], remaining)
        if not ready:
            return None
        try:
            data = sock.recv(need, socket.MSG_PEEK)
        except OSError:
            return None
        if not data:
            return None
        if len(data) >= 6 and need == 6:
            need = 6 + pdu.pdu_length(data[:6])[1]
            if need > 1 << 20:  # an A-ASSOCIATE-RQ is a few KB; let the full stack judge this one
                return data[:6]
            continue
        if len(data) >= need:
            return data
        time.sleep(0.001)  # the rest of a large request is still in flight


class _Closed(Exception):
    """The peer closed the connection or the association ended."""


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise _Closed
        got += k
    return buf


class StorageAcceptor:
    """Serves storage associations on accepted sockets, one thread each.

    Parameters
    ----------
    config, archive, peers, audit
        The node's services.
    storage_syntaxes, verification_syntaxes
        Transfer syntaxes accepted for storage and for verification.
    others_active
        How many associations the full stack is serving now (for the limit).
    """

    def __init__(self, config: NodeConfig, archive: Archive, peers: PeerRegistry, audit: Audit,
                 storage_syntaxes: list[str], verification_syntaxes: list[str],
                 others_active: Callable[[], int] = lambda: 0) -> None:
        self.config = config
        self.archive = archive
        self.peers = peers
        self.audit = audit
        self.storage_syntaxes = list(storage_syntaxes)
        self.verification_syntaxes = list(verification_syntaxes)
        self.others_active = others_active
        self._active: set[socket.socket] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ routing
    def route(self, sock: socket.socket, address: Any, fallback: Callable[[socket.socket, Any], None]) -> None:
        """Peek at the A-ASSOCIATE-RQ: serve it here or hand the socket to ``fallback``."""
        request = peek_pdu(sock, self.config.network_timeout_s)
        rq = None
        if request is not None and request[0] == pdu.ASSOCIATE_RQ and len(request) > 6:
            try:
                rq = pdu.parse_associate_rq(request)
            except pdu.PDUError:
                rq = None  # the full stack answers malformed requests
        if rq is None or not handles(rq):
            fallback(sock, address)
            return
        self.serve(sock, address, rq, len(request))  # type: ignore[arg-type]

    def start(self, sock: socket.socket, address: Any, fallback: Callable[[socket.socket, Any], None]) -> None:
        """:meth:`route` in a new thread."""
        threading.Thread(target=self._route_safely, args=(sock, address, fallback), name="StorageAssociation",
                         daemon=True).start()

    def _route_safely(self, sock: socket.socket, address: Any, fallback: Callable[[socket.socket, Any], None]) -> None:
        try:
            self.route(sock, address, fallback)
        except Exception:  # noqa: BLE001 - one association must never take the node down
            logger.exception("storage association failed")
            self._close(sock)

    @property
    def active(self) -> int:
        """Associations being served here now."""
        with self._lock:
            return len(self._active)

    def abort_all(self) -> None:
        """Abort the associations still open (node shutdown after its grace period)."""
        with self._lock:
            socks = list(self._active)
        for sock in socks:
            try:
                sock.sendall(pdu.abort(pdu.ABORT_SERVICE_PROVIDER, 0))
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ association
    def serve(self, sock: socket.socket, address: Any, rq: pdu.AssociateRequest, rq_length: int) -> None:
        """Run one association whose A-ASSOCIATE-RQ (``rq_length`` bytes) is still
        unread on ``sock``."""
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        with self._lock:
            self._active.add(sock)
        try:
            sock.settimeout(self.config.network_timeout_s or None)
            _recv_exact(sock, rq_length)
            rejection = self._rejection(rq, host)
            if rejection is not None:
                sock.sendall(pdu.associate_rj(*rejection))
                return
            results = negotiate(rq, self.storage_syntaxes, self.verification_syntaxes)
            sock.sendall(pdu.associate_ac(rq, results, self.config.max_pdu, IMPLEMENTATION_CLASS_UID,
                                          IMPLEMENTATION_VERSION))
            accepted = {cid: (ts, next(cx.abstract_syntax for cx in rq.contexts if cx.id == cid))
                        for cid, result, ts in results if result == pdu.ACCEPTANCE}
            logger.info("storage association from %s accepted (%d of %d contexts)", rq.calling_ae,
                        len(accepted), len(results))
            messages = _Messages(self, sock, rq, accepted)
            try:
                messages.run()
            finally:
                messages.close()
        except _Closed:
            logger.info("storage association from %s: connection closed by the peer", rq.calling_ae)
        except (TimeoutError, socket.timeout):
            logger.warning("storage association from %s: network time-out, aborting", rq.calling_ae)
            self._send_quietly(sock, pdu.abort(pdu.ABORT_SERVICE_PROVIDER, 0))
        except pdu.PDUError as e:
            logger.warning("storage association from %s aborted: %s", rq.calling_ae, e)
            self._send_quietly(sock, pdu.abort(pdu.ABORT_SERVICE_PROVIDER, pdu.ABORT_INVALID_PARAMETER))
        except OSError as e:
            logger.warning("storage association from %s: %s", rq.calling_ae, e)
        finally:
            with self._lock:
                self._active.discard(sock)
            self._close(sock)

    def _rejection(self, rq: pdu.AssociateRequest, host: str) -> tuple[int, int, int] | None:
        if rq.application_context != pdu.APPLICATION_CONTEXT:
            return (0x01, 0x01, 0x02)  # application context name not supported (PS3.8 9.3.4)
        if not admit(self.peers, self.audit, self.config.require_registered, rq.calling_ae, host):
            return (0x01, 0x01, 0x03)  # calling AE title not recognized
        if self.active + self.others_active() > self.config.max_associations:
            logger.warning("association from %s rejected: %d associations already active", rq.calling_ae,
                           self.config.max_associations)
            return (0x02, 0x03, 0x02)  # transient, local limit exceeded
        return None

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass

    @staticmethod
    def _close(sock: socket.socket, artim_s: float = ARTIM_S) -> None:
        """Close the transport as the acceptor does after A-ASSOCIATE-RJ, A-RELEASE-RP or
        A-ABORT (PS3.8 9.2, state Sta13): stop sending, let the requestor close first
        (reading what it still sends, for at most the ARTIM time), then close.  Closing at
        once with unread bytes from the requestor makes the kernel reset the connection,
        and a reset can destroy the PDU just sent (a rejected requestor then saw an abort)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(artim_s)
            deadline = time.monotonic() + artim_s
            while time.monotonic() < deadline and sock.recv(65536):
                pass
        except OSError:
            pass
        sock.close()


class _Messages:
    """The DIMSE exchange of one established storage association."""

    def __init__(self, acceptor: StorageAcceptor, sock: socket.socket, rq: pdu.AssociateRequest,
                 accepted: dict[int, tuple[str, str]]) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.rq = rq
        self.accepted = accepted
        self.max_send = rq.max_pdu
        limit = acceptor.config.max_pdu
        self.max_receive = limit if limit else 1 << 30
        self.command: list[bytes] = []
        self.data: list[memoryview] = []
        self.data_size = 0
        self.pending: dict[int, bytes] | None = None  # a command waiting for its data set
        self.pending_context = 0
        self.staged: StagedWrite | None = None
        self.stored = 0

    def run(self) -> None:
        sock = self.sock
        while True:
            kind, length = pdu.pdu_length(bytes(_recv_exact(sock, 6)))
            if kind == pdu.P_DATA_TF:
                if length > self.max_receive + 6:
                    raise pdu.PDUError(f"P-DATA-TF of {length} bytes exceeds the negotiated maximum")
                body = _recv_exact(sock, length)
                for cid, is_command, last, fragment in pdu.pdvs(memoryview(body)):
                    self._fragment(cid, is_command, last, fragment)
            elif kind == pdu.RELEASE_RQ:
                _recv_exact(sock, length)
                sock.sendall(pdu.RELEASE_RP_PDU)
                logger.info("storage association from %s released after %d instances", self.rq.calling_ae,
                            self.stored)
                return
            elif kind == pdu.ABORT:
                _recv_exact(sock, length)
                logger.warning("storage association from %s aborted by the peer after %d instances",
                               self.rq.calling_ae, self.stored)
                return
            else:
                sock.sendall(pdu.abort(pdu.ABORT_SERVICE_PROVIDER, pdu.ABORT_UNEXPECTED_PDU
                                       if kind <= pdu.ABORT else pdu.ABORT_UNRECOGNIZED_PDU))
                logger.warning("storage association from %s aborted: unexpected PDU type 0x%02X",
                               self.rq.calling_ae, kind)
                return

    def _fragment(self, cid: int, is_command: bool, last: bool, fragment: memoryview) -> None:
        if cid not in self.accepted:
            raise pdu.PDUError(f"presentation context {cid} was not accepted")
        if is_command:
            if self.pending is not None:
                raise pdu.PDUError("a command arrived before the previous data set was complete")
            self.command.append(bytes(fragment))
            if last:
                command = pdu.parse_command(b"".join(self.command))
                self.command = []
                self._command(cid, command)
            return
        if self.pending is None or cid != self.pending_context:
            raise pdu.PDUError("a data set fragment arrived without its command")
        self.data_size += len(fragment)
        if self.data_size <= self.acceptor.config.max_instance_bytes:
            self.data.append(fragment)
            if self.staged is not None:
                self.staged.write(fragment)
        else:
            self.data = []  # keep reading, answer "out of resources" at the end
            if self.staged is not None:
                self.staged.discard()
                self.staged = None
        if last:
            command, self.pending = self.pending, None
            self._store(cid, command)

    def _command(self, cid: int, command: dict[int, bytes]) -> None:
        field = pdu.command_uint(command, 0x0100)
        message_id = pdu.command_uint(command, 0x0110) or 0
        sop_class = pdu.command_uid(command, 0x0002)
        if field == pdu.C_ECHO_RQ:
            self._respond(cid, pdu.response(pdu.C_ECHO_RSP, message_id, 0x0000, sop_class or VERIFICATION))
        elif field == pdu.C_STORE_RQ:
            if pdu.command_uint(command, 0x0800) == pdu.NO_DATA_SET:
                raise pdu.PDUError("C-STORE-RQ without a data set")
            self.pending, self.pending_context = command, cid
            self.data, self.data_size = [], 0
            self.staged = self._stage(cid, command)
        else:
            raise pdu.PDUError(f"command 0x{field or 0:04X} is not served on a storage association")

    def _store(self, cid: int, command: dict[int, bytes]) -> None:
        transfer_syntax = self.accepted[cid][0]
        sop_class = pdu.command_uid(command, 0x0002)
        sop_instance = pdu.command_uid(command, 0x1000)
        message_id = pdu.command_uint(command, 0x0110) or 0
        if self.data_size > self.acceptor.config.max_instance_bytes:
            data = b""
        else:
            # one fragment (a P-DATA-TF as large as the data set): its buffer, not a copy
            data = self.data[0] if len(self.data) == 1 else b"".join(self.data)  # type: ignore[assignment]
        self.data = []
        staged, self.staged = self.staged, None
        status = store_status(self.acceptor.archive, data, transfer_syntax, sop_class, sop_instance,
                              self.rq.calling_ae, size=self.data_size, staged=staged)
        if status == 0x0000:
            self.stored += 1
        self._respond(cid, pdu.response(pdu.C_STORE_RSP, message_id, status, sop_class, sop_instance))

    def _stage(self, cid: int, command: dict[int, bytes]) -> StagedWrite | None:
        """Start writing the announced instance while it arrives (``None``: it is
        written from memory once complete, e.g. when the request lacks its UIDs)."""
        sop_class, sop_instance = pdu.command_uid(command, 0x0002), pdu.command_uid(command, 0x1000)
        if not sop_class or not sop_instance:
            return None
        try:
            return self.acceptor.archive.stage(sop_class, sop_instance, self.accepted[cid][0], self.rq.calling_ae)
        except OSError as e:
            logger.warning("cannot stage an incoming instance (%s); it is written once complete", e)
            return None

    def close(self) -> None:
        """Remove what an unfinished C-STORE staged."""
        if self.staged is not None:
            self.staged.discard()
            self.staged = None

    def _respond(self, cid: int, command: bytes) -> None:
        room = (self.max_send - 6) if self.max_send else len(command)
        room = max(room, 1)
        chunks = [command[i:i + room] for i in range(0, len(command), room)] or [b""]
        self.sock.sendall(b"".join(pdu.p_data(cid, True, i == len(chunks) - 1, chunk)
                                   for i, chunk in enumerate(chunks)))
