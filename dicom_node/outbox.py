"""The outbox: results waiting to be sent to a peer (``outbox`` table).

This module holds the table API; delivery with retries is built on it elsewhere.
States: ``pending`` -> ``sending`` -> ``sent`` | ``failed``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from dicom_node.db import Database, returned_id

logger = logging.getLogger(__name__)

STATES = ("pending", "sending", "sent", "failed")


class Outbox:
    """Items to deliver, persisted in the index."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, peer: str, path: str | Path, kind: str = "result", study_uid: str | None = None,
            sop_instance_uid: str | None = None) -> int:
        """Queue the file at ``path`` for ``peer``; returns the item id."""
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO outbox (peer, path, kind, study_uid, sop_instance_uid, state, next_attempt_at, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?) RETURNING id",
            (peer, str(path), kind, study_uid, sop_instance_uid, now, now, now),
        )
        return returned_id(cur)

    def counts(self) -> dict[str, int]:
        """Number of items per state (every state present, zero included)."""
        out = {s: 0 for s in STATES}
        for row in self.db.query("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
            out[row[0]] = int(row[1])
        return out
