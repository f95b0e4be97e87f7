"""Fixtures of the CT tests (real TotalSegmentator CT from ../shared/data)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def totalseg(shared_data: Path) -> Path:
    p = shared_data / "ct" / "totalseg"
    if not p.is_dir():
        pytest.skip(f"{p} missing")
    return p
