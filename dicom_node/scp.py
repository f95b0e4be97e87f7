"""The node's server: pynetdicom AE wiring, acceptor processes, start/stop.

Throughput measures (see ``benchmarks/bench_store.py``): the maximum PDU we accept is
raised from pynetdicom's 16 KiB (``max_pdu``), accepted sockets get ``TCP_NODELAY``,
C-STORE writes the received bytes without decoding them, and ``workers`` > 1 runs
several acceptor processes, each with its own pynetdicom AE and its own index
connection, so more than one core receives: the main process accepts and hands the
connections round-robin to the processes (:class:`_Dispatcher`).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import select
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer
from pydicom import uid as _uid

from dicom_node import handlers
from dicom_node.archive import Archive
from dicom_node.audit import Audit
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.jobs import JobQueue
from dicom_node.outbox import Outbox
from dicom_node.peers import PeerRegistry
from dicom_node.stability import StabilityMonitor, StableHook
from dicom_node.storage_acceptor import StorageAcceptor

logger = logging.getLogger(__name__)

#: transfer syntaxes accepted for storage, stored as sent (PS3.5 Annex A)
TRANSFER_SYNTAXES: list[str] = [
    _uid.ExplicitVRLittleEndian,
    _uid.ImplicitVRLittleEndian,
    _uid.DeflatedExplicitVRLittleEndian,
    _uid.ExplicitVRBigEndian,
    _uid.JPEGBaseline8Bit,
    _uid.JPEGExtended12Bit,
    _uid.JPEGLossless,
    _uid.JPEGLosslessSV1,
    _uid.JPEGLSLossless,
    _uid.JPEGLSNearLossless,
    _uid.JPEG2000Lossless,
    _uid.JPEG2000,
    _uid.HTJ2KLossless,
    _uid.HTJ2KLosslessRPCL,
    _uid.HTJ2K,
    _uid.RLELossless,
]
UNCOMPRESSED = [_uid.ExplicitVRLittleEndian, _uid.ImplicitVRLittleEndian]
VERIFICATION_SYNTAXES = UNCOMPRESSED + [_uid.ExplicitVRBigEndian]

RUN_FILE = "run/node.json"


class _WaitingTime:
    """Stands in for the ``time`` module inside ``pynetdicom.association`` and
    ``pynetdicom.dul``: their reactors poll with ``time.sleep(0.001)`` between
    checks, which on a loaded machine costs several milliseconds per hop and per
    C-STORE.  Here a short sleep in an association thread waits on its DIMSE message
    queue and in a DUL thread on its socket, so the thread wakes as soon as work
    arrives; the waits are never longer than the sleeps they replace.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds > 0.005:
            time.sleep(seconds)
            return
        thread = threading.current_thread()
        assoc = thread if getattr(thread, "dimse", None) is not None else getattr(thread, "assoc", None)
        if assoc is None or not getattr(assoc, "is_acceptor", False):
            # only the node's own (acceptor) associations: a requestor's reactor must keep
            # pynetdicom's timing, or it can take the response its user thread waits for
            # ("Received unexpected C-STORE service message", then a network time-out)
            time.sleep(seconds)
            return
        queue_ = getattr(getattr(thread, "dimse", None), "msg_queue", None)
        if queue_ is not None:  # an Association reactor
            with queue_.not_empty:
                if not queue_._qsize():
                    queue_.not_empty.wait(seconds)
            return
        sock = getattr(getattr(thread, "socket", None), "socket", None)
        if sock is not None and getattr(thread, "assoc", None) is not None:  # a DUL reactor
            outgoing = getattr(thread, "to_provider_queue", None)
            waiting = [sock]
            if isinstance(outgoing, _WakingQueue):
                if outgoing.qsize():
                    return
                waiting.append(outgoing.wake_fd)
            try:
                ready, _, _ = select.select(waiting, [], [], seconds)
            except (OSError, ValueError):
                time.sleep(seconds)
                return
            if isinstance(outgoing, _WakingQueue) and outgoing.wake_fd in ready:
                outgoing.drain()
            return
        time.sleep(seconds)


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing-primitive queue, with a pipe that becomes readable on
    ``put`` so a DUL waiting in ``select`` on its socket also wakes to send."""

    def __init__(self) -> None:
        super().__init__()
        self.wake_fd, self._write_fd = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._write_fd, False)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass

    def drain(self) -> None:
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def __del__(self) -> None:  # after the DUL thread that used it is gone
        for fd in (self.wake_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _wake_dul_on_send(event: Any) -> None:
    """EVT_REQUESTED: give this association's DUL a :class:`_WakingQueue` (its
    outgoing queue is still empty: nothing has been answered yet)."""
    dul = event.assoc.dul
    if isinstance(dul.to_provider_queue, queue.Queue) and not dul.to_provider_queue.qsize():
        dul.to_provider_queue = _WakingQueue()


def install_event_driven_waits() -> None:
    """Replace pynetdicom's reactor polling sleeps by waits on work (see
    :class:`_WaitingTime`); idempotent."""
    import pynetdicom.association
    import pynetdicom.dul

    shim = _WaitingTime()
    pynetdicom.association.time = shim  # type: ignore[assignment]
    pynetdicom.dul.time = shim  # type: ignore[assignment]


class _Dispatcher:
    """Hands accepted connections round-robin to this process and to the extra
    acceptor processes (one Unix socket each; the connection's descriptor is passed
    with ``SCM_RIGHTS``), so N associations spread evenly over the processes.

    SO_REUSEPORT listeners were tried first: the kernel picks the listener by a hash
    of the connection's addresses, which for 4 associations over 2 processes often
    put 3 or all 4 in one process.
    """

    def __init__(self) -> None:
        self.channels: list[socket.socket] = []
        self._next = 0
        self._lock = threading.Lock()

    def target(self) -> socket.socket | None:
        """The channel of the process for the next connection (``None``: this one)."""
        with self._lock:
            slot = self._next % (len(self.channels) + 1)
            self._next += 1
        return None if slot == 0 else self.channels[slot - 1]


def _server_class(reuse_port: bool, dispatcher: _Dispatcher | None = None,
                  acceptor: StorageAcceptor | None = None,
                  handshake_timeout_s: float = 60.0) -> type[ThreadedAssociationServer]:
    class _Server(ThreadedAssociationServer):
        def server_bind(self) -> None:
            if reuse_port:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()

        def get_request(self) -> tuple[socket.socket, Any]:
            client, address = self.socket.accept()
            try:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
            if self.ssl_context:
                # the TLS handshake runs in the connection's own thread (process_request_thread),
                # bounded by the network timeout: a client that never completes it cannot stall
                # the accept loop
                client.settimeout(handshake_timeout_s or None)
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            return client, address

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.do_handshake()
                    request.settimeout(None)
                except (ssl.SSLError, OSError) as e:
                    logger.warning("TLS handshake with %s failed: %s", client_address[0], e)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)

        def process_request(self, request: Any, client_address: Any) -> None:
            channel = dispatcher.target() if dispatcher is not None else None
            if channel is not None:
                try:
                    # a TLS socket is still unwrapped here (no handshake yet): the descriptor is a
                    # plain TCP connection and the other process runs the handshake
                    socket.send_fds(channel, [b"c"], [request.fileno()])
                    request.close()  # not shutdown(): the connection lives on in the other process
                    return
                except OSError:
                    logger.warning("acceptor process unreachable; serving the association here")
            if acceptor is not None:  # storage associations: our own receive path; others: pynetdicom
                acceptor.start(request, client_address,
                               lambda sock, address: ThreadedAssociationServer.process_request(self, sock, address))
                return
            super().process_request(request, client_address)

    return _Server


def _receive_connections(node: "Node", channel: socket.socket) -> None:
    """Extra acceptor: serve each connection whose descriptor arrives on ``channel``."""
    while True:
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(channel, 16, 4)
        except OSError:
            return
        if not fds:  # the main process closed the channel
            return
        for fd in fds:
            conn = socket.socket(fileno=fd)
            server = node.server
            if server is None:
                conn.close()
                return
            try:
                address = conn.getpeername()
            except OSError:
                conn.close()
                continue
            if server.ssl_context:  # handed over before any TLS byte: the handshake happens here
                conn.settimeout(node.config.network_timeout_s or None)
                conn = server.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            server.process_request(conn, address)


class Node:
    """One acceptor: AE, handlers and the services they call.

    Parameters
    ----------
    config
        Node settings.
    hooks
        Stability hooks (default: queue an ``analyze`` job); extend
        ``node.stability.hooks`` to run more on each stable study.
    run_stability
        Run the stability monitor in this process (only the main acceptor does).
    """

    def __init__(self, config: NodeConfig, hooks: list[StableHook] | None = None, run_stability: bool = True) -> None:
        self.config = config
        config.dicom_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.database_url, root=config.root)
        self.db.init_schema()
        self.audit = Audit(self.db)
        self.peers = PeerRegistry(self.db, self.audit, config)
        self.archive = Archive(config, self.db, self.audit)
        self.jobs = JobQueue(self.db)
        self.outbox = Outbox(self.db)
        self.stability = StabilityMonitor(self.db, config.quiet_period_s, hooks)
        self.run_stability = run_stability
        self.ae: AE | None = None
        self.server: ThreadedAssociationServer | None = None
        self.storage = StorageAcceptor(
            config, self.archive, self.peers, self.audit, TRANSFER_SYNTAXES,
            VERIFICATION_SYNTAXES,
            others_active=lambda: len(self.server.active_associations) if self.server is not None else 0,
        ) if config.storage_acceptor else None

    def build_ae(self) -> AE:
        """The pynetdicom AE with every supported presentation context."""
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_pdu_size = self.config.max_pdu
        ae.network_timeout = self.config.network_timeout_s
        ae.maximum_associations = self.config.max_associations
        ae.add_supported_context(Verification, VERIFICATION_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            # scp_role/scu_role: accept the requestor's SCP role for C-GET (PS3.7 D.3.3.4)
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for model in (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
                      StudyRootQueryRetrieveInformationModelMove):
            ae.add_supported_context(model, UNCOMPRESSED)
        # sub-operation associations (C-MOVE) propose contexts per request
        return ae

    def event_handlers(self) -> list[Any]:
        """``evt_handlers`` with their bound dependencies."""
        c = self.config
        tuning = [(evt.EVT_REQUESTED, _wake_dul_on_send)] if c.event_driven_waits else []
        return tuning + [
            (evt.EVT_REQUESTED, handlers.handle_requested, [self.peers, self.audit, c.require_registered]),
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, handlers.handle_store, [self.archive]),
            (evt.EVT_C_FIND, handlers.handle_find, [self.db, c.ae_title]),
            (evt.EVT_C_GET, handlers.handle_get, [self.archive]),
            (evt.EVT_C_MOVE, handlers.handle_move, [self.archive, self.peers]),
        ]

    def start(self, reconcile: bool = True, reuse_port: bool = False, port: int | None = None,
              dispatcher: _Dispatcher | None = None, host: str | None = None) -> int:
        """Start accepting (non-blocking); returns the bound port.  ``dispatcher``
        hands some accepted connections to other acceptor processes."""
        if reconcile:
            self.archive.reconcile()
        if self.config.event_driven_waits:
            install_event_driven_waits()
        self.ae = self.build_ae()
        ssl_context = None
        if self.config.tls:  # every association through pynetdicom (the storage fast path reads raw sockets)
            from dicom_node.tls import server_context

            ssl_context = server_context(self.config.tls_cert, self.config.tls_key, self.config.tls_ca)
        server_cls = _server_class(reuse_port, dispatcher, None if ssl_context else self.storage,
                                   handshake_timeout_s=self.config.network_timeout_s)
        address = (self.config.host if host is None else host, self.config.port if port is None else port)
        self.server = self.ae.make_server(
            address, ae_title=self.config.ae_title, evt_handlers=self.event_handlers(), server_class=server_cls,
            ssl_context=ssl_context,
        )
        thread = threading.Thread(target=self.server.serve_forever, name="acceptor", daemon=True)
        thread.start()
        self.ae._servers.append(self.server)  # so ae.shutdown() stops it too
        if self.run_stability:
            self.stability.start()
        bound = int(self.server.server_address[1])
        logger.info("node %s listening on %s:%d", self.config.ae_title, self.config.host, bound)
        return bound

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self.server is None:
            raise RuntimeError("node not started")
        return int(self.server.server_address[1])

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let running associations finish (up to ``grace_s``), close."""
        self.stability.stop()
        if self.server is not None and self.ae is not None:
            server = self.server
            server.shutdown()
            deadline = time.monotonic() + grace_s
            # let established associations finish; half-open connections are aborted below
            while time.monotonic() < deadline and (
                any(a.is_established for a in server.active_associations)
                or (self.storage is not None and self.storage.active)
            ):
                time.sleep(0.05)
            if self.storage is not None:
                self.storage.abort_all()
            self.ae.shutdown()
            self.server = None
        self.db.close()

    def status(self) -> dict[str, Any]:
        """``node status`` contents: counts of the archive, jobs and outbox."""
        return node_status(self.db)


def node_status(db: Database) -> dict[str, Any]:
    """Counts: patients, studies, series, instances; jobs and outbox by state;
    studies by state."""
    out: dict[str, Any] = {}
    for table in ("patients", "studies", "series", "instances"):
        out[table] = int(db.query(f"SELECT COUNT(*) FROM {table}")[0][0])
    out["jobs"] = JobQueue(db).counts()
    out["outbox"] = Outbox(db).counts()
    out["study_states"] = {r[0]: int(r[1]) for r in db.query("SELECT state, COUNT(*) FROM studies GROUP BY state")}
    from dicom_node.delivery import pipeline_status  # dead letters, destinations, failed jobs (docs/pipeline.md)

    out["analysis"] = pipeline_status(db)
    return out


# --------------------------------------------------------------------- serving
def wait_for_stop(stop: threading.Event, tick_s: float = 0.25) -> None:
    """Block the main thread until ``stop`` is set, waking every ``tick_s``.

    A signal the kernel delivers to another thread (ONNX Runtime's, the acceptor's ...)
    does not interrupt a wait without timeout, so CPython would not run the SIGTERM
    handler that sets ``stop`` until the main thread next executes bytecode: an
    un-timed ``Event.wait()`` here could ignore SIGTERM for ever.
    """
    while not stop.wait(tick_s):
        pass


def _acceptor_main(config: NodeConfig, channel: socket.socket, level: int, ready: Any = None) -> None:
    """Entry of an extra acceptor process (spawned): serves the connections the main
    process passes on ``channel``; sets ``ready`` once it can."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    node = Node(config, run_stability=False)
    # its own server only runs the associations handed over; it listens on a loopback
    # port nobody is told about
    node.start(reconcile=False, port=0, host="127.0.0.1")
    threading.Thread(target=_receive_connections, args=(node, channel), name="handover", daemon=True).start()
    if ready is not None:
        ready.set()
    wait_for_stop(stop)
    node.stop()
    channel.close()


def write_run_file(config: NodeConfig, port: int) -> Path:
    """Record the serving node (pid, host, port, AE title) in ``<root>/run/node.json``."""
    path = config.root / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": config.host, "port": port,
                                "ae_title": config.ae_title}), encoding="utf-8")
    return path


def read_run_file(root: Path) -> dict[str, Any] | None:
    """The running node's record, or ``None`` when no node is running for ``root``."""
    path = root / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
        return info
    except (OSError, ValueError, KeyError):
        return None


def serve(config: NodeConfig, hooks: list[StableHook] | None = None, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> int:
    """Run the node in the foreground until SIGTERM/SIGINT (or ``stop`` is set).

    With ``config.workers`` > 1, ``workers - 1`` extra acceptor processes share the
    port (SO_REUSEPORT).  Running jobs left by a crash are re-queued at start-up.
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    node = Node(config, hooks=hooks)
    node.jobs.requeue_running()
    multi = config.workers > 1
    dispatcher = _Dispatcher() if multi else None
    children: list[multiprocessing.process.BaseProcess] = []
    if multi:
        node.archive.reconcile()  # before any acceptor stores
        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().level
        events = []
        for _ in range(config.workers - 1):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            child_ready = ctx.Event()
            proc = ctx.Process(target=_acceptor_main, args=(config, theirs, level, child_ready), daemon=True)
            proc.start()
            theirs.close()
            children.append(proc)
            events.append((child_ready, ours))
        for child_ready, ours in events:  # announce "listening" only once every acceptor is ready
            if child_ready.wait(timeout=120):
                dispatcher.channels.append(ours)  # type: ignore[union-attr]
            else:
                logger.error("an acceptor process did not start within 120 s")
                ours.close()
    port = node.start(reconcile=not multi, dispatcher=dispatcher)
    run_file = write_run_file(config, port)
    monitor = None
    if config.monitor_port:
        from dicom_node.monitor import Monitor

        try:
            monitor = Monitor(config).start()
        except OSError as e:  # port taken: the node serves DICOM regardless
            logger.error("monitoring endpoint %s:%d not started: %s", config.monitor_host, config.monitor_port, e)
    from dicom_node.retention import RetentionWorker

    retention = RetentionWorker(config).start()
    listening = {"event": "listening", "ae_title": config.ae_title, "host": config.host, "port": port,
                 "workers": config.workers}
    if monitor is not None:
        listening["monitor"] = monitor.url
    if config.tls:
        listening["tls"] = True
    print(json.dumps(listening), flush=True)
    if ready is not None:
        ready.set()
    try:
        wait_for_stop(stop)
    finally:
        logger.info("shutting down")
        for proc in children:
            if proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in children:
            proc.join(timeout=15)
        if monitor is not None:
            monitor.stop()
        if retention is not None:
            retention.stop()
        node.stop()
        for channel in dispatcher.channels if dispatcher is not None else []:
            channel.close()
        run_file.unlink(missing_ok=True)
    return 0
