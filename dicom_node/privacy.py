"""Keeping patient identifiers out of log lines.

Log lines name studies and patients through :func:`phi`, which returns a short
non-reversible tag unless the debug switch ``MEDWS_LOG_PHI=1`` is set
(``medws --log-phi``).  The audit table keeps the real UIDs (it is part of the
protected archive, not of the logs).
"""
from __future__ import annotations

import hashlib
import os


def log_phi_enabled() -> bool:
    """True when the debug switch ``MEDWS_LOG_PHI=1`` is set."""
    return os.environ.get("MEDWS_LOG_PHI", "") == "1"


def phi(value: object) -> str:
    """``value`` itself with the debug switch on, else ``#<8 hex digits>`` of its hash."""
    text = "" if value is None else str(value)
    if log_phi_enabled():
        return text
    if not text:
        return "#-"
    return "#" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]
