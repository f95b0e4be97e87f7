"""Outbox delivery: AI objects to the peers that want them, nothing lost.

* Destinations: a registered peer with ``auto_send`` on receives every AI object
  (``destinations`` table; ``medws node destinations set PEER --auto-send``).
* Each due item (``pending`` with ``next_attempt_at`` <= now) is marked ``sending``,
  sent by C-STORE (PS3.4 B.2) -- items of one peer on one association -- and becomes
  ``sent`` on a success or warning status.  A failure schedules a retry after
  ``base * 2**(attempts-1)`` seconds (capped); after ``max_attempts`` the item is
  dead-lettered (``failed``) with its last error kept (``medws node outbox``).
* State is in the index, so delivery survives restarts; items left ``sending`` by a
  crash are put back to ``pending`` at start-up (the peer may receive such an object
  twice; a PACS keeps one copy per SOP Instance UID).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.db import Database
from dicom_node.errors import ConfigError, NodeError, PeerError

logger = logging.getLogger(__name__)

SUCCESS = (0x0000, 0xB000, 0xB006, 0xB007)


def backoff_s(attempts: int, base_s: float = 2.0, cap_s: float = 600.0) -> float:
    """Delay before the next try after ``attempts`` failed tries (exponential, capped)."""
    return float(min(cap_s, base_s * (2 ** max(0, attempts - 1))))


class Destinations:
    """Which registered peers get AI objects automatically."""

    def __init__(self, db: Database) -> None:
        from dicom_node.analysis import ensure_schema

        self.db = db
        ensure_schema(db)

    def set(self, peer: str, auto_send: bool) -> None:
        """Turn auto-send of AI objects to ``peer`` on or off (the peer must be registered)."""
        if not self.db.query("SELECT 1 FROM peers WHERE name = ?", (peer,)):
            raise PeerError(f"no registered peer {peer!r}; add it with 'medws node peers add'")
        self.db.execute(
            "INSERT INTO destinations (peer, auto_send, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (peer) DO UPDATE SET auto_send = excluded.auto_send, updated_at = excluded.updated_at",
            (peer, 1 if auto_send else 0, time.time()))

    def list(self) -> list[dict[str, Any]]:
        """Every registered peer with its auto-send flag."""
        return [{"peer": r["name"], "ae_title": r["ae_title"], "auto_send": bool(r["auto_send"] or 0)}
                for r in self.db.query("SELECT p.name, p.ae_title, d.auto_send FROM peers p "
                                       "LEFT JOIN destinations d ON d.peer = p.name ORDER BY p.name")]


@dataclass(frozen=True)
class Attempt:
    """Result of one delivery round."""

    sent: int = 0
    retried: int = 0
    dead: int = 0


class Delivery:
    """Delivers due outbox items.

    Parameters
    ----------
    db
        The index.
    calling_ae
        This node's AE title (the calling AE of the C-STORE associations).
    max_attempts, base_s, cap_s
        Dead-letter after ``max_attempts`` tries; retry delays per :func:`backoff_s`.
    """

    def __init__(self, db: Database, calling_ae: str, max_attempts: int = 8, base_s: float = 2.0,
                 cap_s: float = 600.0) -> None:
        from dicom_node.analysis import ensure_schema

        self.db = db
        self.calling_ae = calling_ae
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.cap_s = cap_s
        ensure_schema(db)

    def recover(self) -> int:
        """Put items a crash left ``sending`` back to ``pending`` (start-up)."""
        cur = self.db.execute("UPDATE outbox SET state = 'pending', updated_at = ? WHERE state = 'sending'",
                              (time.time(),))
        if cur.rowcount:
            logger.warning("outbox: %d item(s) left sending by a previous run are pending again", cur.rowcount)
        return int(cur.rowcount)

    def _root(self) -> Path:
        root = self.db.root
        if root is None:
            if self.db.path is None:
                raise ConfigError("the archive root of this index is unknown: give Database(url, root=...)")
            root = self.db.path.parent
        return root

    def claim_due(self, now: float | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Mark due pending items ``sending`` and return them."""
        now = time.time() if now is None else now
        with self.db.transaction() as conn:
            rows = [dict(r) for r in conn.execute(
                "SELECT * FROM outbox WHERE state = 'pending' AND COALESCE(next_attempt_at, 0) <= ? "
                "ORDER BY COALESCE(next_attempt_at, 0), id LIMIT ?", (now, limit))]
            for r in rows:
                conn.execute("UPDATE outbox SET state = 'sending', updated_at = ? WHERE id = ?", (now, r["id"]))
        return rows

    def deliver_once(self, now: float | None = None) -> Attempt:
        """One round: send every due item; returns the counts."""
        from dicom_node import scu
        from dicom_node.peers import PeerRegistry

        items = self.claim_due(now)
        if not items:
            return Attempt()
        by_peer: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            by_peer.setdefault(it["peer"], []).append(it)
        sent = retried = dead = 0
        registry = PeerRegistry(self.db)
        for peer_name, its in by_peer.items():
            statuses: dict[int, tuple[bool, str]] = {}
            try:
                peer = registry.get(peer_name)
            except NodeError as e:
                statuses = {it["id"]: (False, str(e)) for it in its}
            else:
                files, missing = [], {}
                for it in its:
                    path = Path(it["path"])
                    path = path if path.is_absolute() else self._root() / path
                    if path.is_file():
                        files.append((it, path))
                    else:
                        missing[it["id"]] = f"file {it['path']} is missing from the archive"
                statuses.update({k: (False, v) for k, v in missing.items()})
                if files:
                    try:
                        result = scu.send(peer, self.calling_ae, [p for _, p in files])
                        for it, p in files:
                            code = result.statuses.get(str(p), -1)
                            ok = code in SUCCESS
                            statuses[it["id"]] = (ok, "" if ok else
                                                  ("not sent (association ended)" if code == -1 else
                                                   f"C-STORE status 0x{code & 0xFFFF:04X}"))
                    except Exception as e:  # noqa: BLE001 - peer down, refused, timeout
                        for it, _ in files:
                            statuses[it["id"]] = (False, f"{type(e).__name__}: {e}")
            for it in its:
                ok, error = statuses[it["id"]]
                missing_file = error.startswith("file ") and error.endswith("missing from the archive")
                state = self._record(it, ok, error, final=missing_file)
                sent += state == "sent"
                retried += state == "pending"
                dead += state == "failed"
        if retried or dead:
            logger.warning("outbox: %d sent, %d to retry, %d dead-lettered", sent, retried, dead)
        return Attempt(sent, retried, dead)

    def _record(self, item: dict[str, Any], ok: bool, error: str, final: bool = False) -> str:
        now = time.time()
        attempts = int(item["attempts"]) + 1
        if ok:
            state, next_at, err = "sent", None, None
        elif final or attempts >= self.max_attempts:
            state, next_at, err = "failed", None, error
        else:
            state, next_at, err = "pending", now + backoff_s(attempts, self.base_s, self.cap_s), error
        self.db.execute("UPDATE outbox SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?, "
                        "updated_at = ? WHERE id = ? AND state = 'sending'",
                        (state, attempts, err, next_at, now, item["id"]))
        if state == "failed":
            logger.error("outbox item %s to %s dead-lettered after %d attempt(s): %s", item["id"], item["peer"],
                         attempts, error)
        return state

    def retry(self, item_ids: list[int] | None = None) -> int:
        """Put dead-lettered items (all, or ``item_ids``) back to ``pending`` now."""
        now = time.time()
        if item_ids:
            marks = ", ".join("?" for _ in item_ids)
            cur = self.db.execute(f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                                  f"updated_at = ? WHERE state = 'failed' AND id IN ({marks})", (now, now, *item_ids))
        else:
            cur = self.db.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                                  "updated_at = ? WHERE state = 'failed'", (now, now))
        return int(cur.rowcount)


def outbox_items(db: Database, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Outbox rows (newest first), optionally of one state, for status and the CLI."""
    sql, params = "SELECT id, peer, kind, study_uid, sop_instance_uid, state, attempts, last_error, " \
                  "next_attempt_at, updated_at FROM outbox", []
    if state:
        sql += " WHERE state = ?"
        params.append(state)
    return [dict(r) for r in db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))]


def pipeline_status(db: Database, limit: int = 20) -> dict[str, Any]:
    """The analysis/delivery part of ``medws node status --json``: dead letters with their
    error, peers' auto-send flags, failed jobs with their error, studies by AI status."""
    from dicom_node.analysis import ensure_schema

    ensure_schema(db)
    return {
        "dead_letters": [{k: it[k] for k in ("id", "peer", "kind", "sop_instance_uid", "attempts", "last_error")}
                         for it in outbox_items(db, "failed", limit)],
        "destinations": Destinations(db).list(),
        "failed_jobs": [dict(r) for r in db.query(
            "SELECT id, task, attempts, error FROM jobs WHERE state = 'failed' ORDER BY id DESC LIMIT ?", (limit,))],
        "ai_status": {r[0] or "none": int(r[1]) for r in db.query(
            "SELECT ai_status, COUNT(*) FROM studies GROUP BY ai_status")},
    }


class DeliveryWorker:
    """A thread running :meth:`Delivery.deliver_once` whenever woken or every poll."""

    def __init__(self, delivery: Delivery, poll_interval_s: float = 1.0) -> None:
        self.delivery = delivery
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        from dicom_node.analysis import DELIVERY_WAKE

        while not self._stop.is_set():
            DELIVERY_WAKE.clear()
            try:
                self.delivery.deliver_once()
            except Exception:  # noqa: BLE001 - delivery must keep going
                logger.exception("outbox delivery round failed")
            DELIVERY_WAKE.wait(self.poll_interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        from dicom_node.analysis import DELIVERY_WAKE

        self._stop.set()
        DELIVERY_WAKE.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a send in progress is retried after restart
