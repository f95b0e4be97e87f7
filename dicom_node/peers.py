"""Registered DICOM peers (``peers`` table): name, AE title, host, port.

With ``require_registered`` (default) only a registered calling AE title coming
from its registered host may associate with the node (see :mod:`dicom_node.handlers`).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from dicom_node.audit import Audit
from dicom_node.db import Database
from dicom_node.errors import PeerError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """A remote application entity."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    tls_context: Any = field(default=None, compare=False, repr=False)
    """The client TLS context for a ``tls`` peer (the node's ``tls_ca``/``tls_cert``/``tls_key``)."""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ae_title": self.ae_title, "host": self.host, "port": self.port, "tls": self.tls}


def _addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def host_matches(registered: str, address: str) -> bool:
    """True when the connection's ``address`` is (one of) the registered host's addresses."""
    if registered in ("*", ""):
        return True
    return address in _addresses(registered) or registered == address


class PeerRegistry:
    """Add, list, find and remove peers."""

    def __init__(self, db: Database, audit: Audit | None = None, config: Any = None) -> None:
        self.db = db
        self.audit = audit or Audit(db)
        self.config = config  # the node's settings (TLS client files); default: read from the archive root
        self._tls_context: Any = None

    def _peer(self, r: Any) -> Peer:
        tls = bool(r["tls"]) if "tls" in r.keys() else False
        return Peer(r["name"], r["ae_title"], r["host"], int(r["port"]), tls, self._client_tls() if tls else None)

    def _client_tls(self) -> Any:
        """The node's client TLS context, from the settings of the archive this index belongs to."""
        if self._tls_context is None:
            from dicom_node.config import load_config
            from dicom_node.tls import client_context

            config = self.config or (load_config(self.db.root) if self.db.root is not None else None)
            self._tls_context = client_context(config.tls_ca, config.tls_cert, config.tls_key) if config \
                else client_context()
        return self._tls_context

    def add(self, name: str, ae_title: str, host: str, port: int, tls: bool = False) -> Peer:
        """Register a peer; raises :class:`PeerError` when the name exists or a field is invalid."""
        ae = ae_title.strip()
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise PeerError(f"peer name {name!r} must be letters, digits, '-', '_' or '.'")
        if not 1 <= len(ae) <= 16 or "\\" in ae:
            raise PeerError(f"AE title {ae_title!r} must be 1-16 characters without backslash")
        if not 1 <= int(port) <= 65535:
            raise PeerError(f"port {port} is outside 1-65535")
        if not host:
            raise PeerError("host is required")
        if self.db.query("SELECT 1 FROM peers WHERE name = ?", (name,)):
            raise PeerError(f"peer {name!r} already exists; remove it first")
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO peers (name, ae_title, host, port, created_at, tls) VALUES (?, ?, ?, ?, ?, ?)",
                (name, ae, host, int(port), time.time(), int(bool(tls))),
            )
            self.audit.record("peer.added", conn=conn, name=name, ae_title=ae, host=host, port=int(port),
                              tls=bool(tls))
        return Peer(name, ae, host, int(port), bool(tls), self._client_tls() if tls else None)

    def remove(self, name: str) -> None:
        """Unregister a peer."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM peers WHERE name = ?", (name,))
            if cur.rowcount != 1:
                raise PeerError(f"no peer named {name!r}; see `medws node peers list`")
            self.audit.record("peer.removed", conn=conn, name=name)

    def list(self) -> list[Peer]:
        """All peers by name."""
        return [self._peer(r) for r in self.db.query("SELECT * FROM peers ORDER BY name")]

    def get(self, name: str) -> Peer:
        """The peer called ``name``."""
        rows = self.db.query("SELECT * FROM peers WHERE name = ?", (name,))
        if not rows:
            raise PeerError(f"no peer named {name!r}; add it with `medws node peers add`")
        return self._peer(rows[0])

    def by_ae_title(self, ae_title: str) -> list[Peer]:
        """Peers registered under ``ae_title``."""
        return [self._peer(r) for r in self.db.query("SELECT * FROM peers WHERE ae_title = ?", (ae_title.strip(),))]

    def is_allowed(self, ae_title: str, address: str) -> bool:
        """True when ``ae_title`` is registered for the host at ``address``."""
        return any(host_matches(p.host, address) for p in self.by_ae_title(ae_title))
