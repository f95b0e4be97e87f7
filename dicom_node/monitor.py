"""HTTP monitoring endpoint of a serving node: ``/health``, ``/status`` and ``/metrics``.

PACS administrators watch a node from their monitoring system rather than a shell: the
node serves, on ``monitor_host:monitor_port`` (loopback by default; 0 = off):

- ``GET /health``: 200 ``{"status": "ok", ...}`` when the index answers, else 503 with
  the error class (a load balancer or watchdog probe);
- ``GET /status``: the ``medws node status --json`` object;
- ``GET /metrics``: the same counts in the Prometheus text exposition format 0.0.4
  (archive objects and bytes, free disk space of the archive, jobs and outbox items by
  state, studies by state and AI status, uptime).

Only counts and states are served, never patient data (no names, IDs or UIDs): the
dead-letter and failed-job lists of ``/status`` carry SOP Instance UIDs and error texts,
so ``/status`` leaves those lists out and gives their lengths.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dicom_node.config import NodeConfig
from dicom_node.db import Database

logger = logging.getLogger(__name__)

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
_LISTS = ("dead_letters", "failed_jobs")


def public_status(status: dict[str, Any]) -> dict[str, Any]:
    """``node_status`` without identifiers: the dead-letter and failed-job lists become counts."""
    out = dict(status)
    analysis = dict(out.get("analysis") or {})
    for key in _LISTS:
        if key in analysis:
            analysis[key] = len(analysis[key])
    analysis.pop("destinations", None)  # peer names and flags: configuration, not status
    out["analysis"] = analysis
    return out


def _label(value: Any) -> str:
    """A label value escaped as the exposition format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(status: dict[str, Any], *, ae_title: str, version: str, uptime_s: float,
                 archive_bytes: int, disk_free_bytes: int | None) -> str:
    """The Prometheus text exposition (format 0.0.4) of a node's status.

    Every metric is a gauge with ``# HELP`` and ``# TYPE`` lines; states are labels, so a
    dashboard sums or plots them without knowing the state names in advance.
    """
    lines: list[str] = []

    def gauge(name: str, help_: str, samples: list[tuple[dict[str, Any], float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            tag = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{tag}}} {value:g}" if tag else f"{name} {value:g}")

    gauge("medws_up", "1 while the node serves", [({}, 1)])
    gauge("medws_info", "node identity", [({"ae_title": ae_title, "version": version}, 1)])
    gauge("medws_uptime_seconds", "seconds since the node started serving", [({}, round(uptime_s, 3))])
    gauge("medws_archive_objects", "objects in the archive index",
          [({"level": k}, status.get(k, 0)) for k in ("patients", "studies", "series", "instances")])
    gauge("medws_archive_bytes", "bytes of the stored DICOM files", [({}, archive_bytes)])
    if disk_free_bytes is not None:
        gauge("medws_disk_free_bytes", "free bytes on the archive's file system", [({}, disk_free_bytes)])
    gauge("medws_jobs", "analysis jobs by state", [({"state": k}, v) for k, v in sorted(status.get("jobs", {}).items())])
    gauge("medws_outbox_items", "outbox items by state (failed = dead letters)",
          [({"state": k}, v) for k, v in sorted(status.get("outbox", {}).items())])
    gauge("medws_studies", "studies by stability state",
          [({"state": k}, v) for k, v in sorted(status.get("study_states", {}).items())])
    ai = (status.get("analysis") or {}).get("ai_status", {})
    gauge("medws_studies_ai", "studies by AI status", [({"status": k}, v) for k, v in sorted(ai.items())])
    return "\n".join(lines) + "\n"


class Monitor:
    """The monitoring HTTP server of one node (a daemon thread; :meth:`stop` shuts it down).

    Parameters
    ----------
    config : NodeConfig
        ``monitor_host`` and ``monitor_port`` (0: the OS chooses, for tests) and the index.
    """

    def __init__(self, config: NodeConfig, port: int | None = None) -> None:
        self.config = config
        self.version = _version()
        self.started = time.monotonic()
        self.db = Database(config.database_url, root=config.root)
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "medws-monitor"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                code, ctype, body = monitor.respond(self.path)
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                logger.debug("monitor %s", format % args)

        self.server = ThreadingHTTPServer((config.monitor_host, config.monitor_port if port is None else port),
                                          Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.config.monitor_host}:{self.port}"

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for a GET of ``path``."""
        route = path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if route == "/health":
                self.db.query("SELECT 1")
                return 200, "application/json", _json({"status": "ok", "ae_title": self.config.ae_title,
                                                       "version": self.version,
                                                       "uptime_s": round(time.monotonic() - self.started, 1)})
            if route == "/status":
                return 200, "application/json", _json(public_status(self._status()))
            if route == "/metrics":
                return 200, CONTENT_TYPE_METRICS, self._metrics().encode("utf-8")
            if route == "/":
                return 200, "application/json", _json({"endpoints": ["/health", "/status", "/metrics"]})
            return 404, "application/json", _json({"error": f"no such endpoint {route}"})
        except Exception as e:  # noqa: BLE001 - the probe reports, the node keeps serving
            logger.warning("monitor %s failed: %s", route, type(e).__name__)
            return 503, "application/json", _json({"status": "error", "error": type(e).__name__})

    def _status(self) -> dict[str, Any]:
        from dicom_node.scp import node_status

        return node_status(self.db)

    def _metrics(self) -> str:
        status = self._status()
        archive_bytes = int(self.db.query("SELECT COALESCE(SUM(size_bytes), 0) FROM instances")[0][0])
        try:
            free: int | None = int(shutil.disk_usage(self.config.root).free)
        except OSError:
            free = None
        return metrics_text(status, ae_title=self.config.ae_title, version=self.version,
                            uptime_s=time.monotonic() - self.started, archive_bytes=archive_bytes,
                            disk_free_bytes=free)

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self.server.serve_forever, name="monitor", daemon=True)
        self._thread.start()
        logger.info("monitoring endpoint on %s", self.url)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.db.close()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medws")
    except PackageNotFoundError:
        return "unknown"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
