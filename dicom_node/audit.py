"""Audit trail: security- and data-relevant events in the ``audit`` table.

Each event is one row (time, event name, actor, JSON detail) and one log line whose
identifiers pass through :func:`dicom_node.privacy.phi`.  Event names follow the
spirit of PS3.15 Annex A.5 (association rejected, instance replaced, peer added...).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from dicom_node.db import Database
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

#: detail keys holding patient or study identifiers (masked in log lines)
_SENSITIVE = {"study_uid", "series_uid", "sop_instance_uid", "patient_id", "patient_name", "accession_number"}


def _log_detail(detail: dict[str, Any]) -> str:
    return " ".join(f"{k}={phi(v) if k in _SENSITIVE else v}" for k, v in detail.items())


class Audit:
    """Writes audit events for one :class:`~dicom_node.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, event: str, actor: str = "", conn: Any = None, **detail: Any) -> None:
        """Append ``event`` (inside ``conn``'s open transaction when given)."""
        target = conn if conn is not None else self.db.conn
        target.execute(
            "INSERT INTO audit (at, event, actor, detail) VALUES (?, ?, ?, ?)",
            (time.time(), event, actor, json.dumps(detail, sort_keys=True, default=str)),
        )
        logger.info("audit %s actor=%s %s", event, actor, _log_detail(detail))

    def events(self, event: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Most recent events first, optionally only those named ``event``."""
        if event:
            rows = self.db.query("SELECT * FROM audit WHERE event = ? ORDER BY id DESC LIMIT ?", (event, limit))
        else:
            rows = self.db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": r["at"], "event": r["event"], "actor": r["actor"], **json.loads(r["detail"] or "{}")} for r in rows]
