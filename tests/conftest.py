"""Fixtures shared by every test area (area-specific ones live in tests/<area>/conftest.py)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# tests drive pynetdicom requestors directly; give them the fix for pynetdicom's
# reactor/user-thread race on fast peers (see dicom_node.scu)
from dicom_node.scu import install_requestor_response_guard  # noqa: E402

install_requestor_response_guard()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDWS_SHARED_DATA", REPO.parent / "shared" / "data"))


def get_port() -> int:
    """A free TCP port on 127.0.0.1, chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return get_port()


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a clear message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set MEDWS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's real config or data directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("MEDWS_ROOT", raising=False)
    yield
