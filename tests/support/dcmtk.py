"""DCMTK command-line tools for interoperability tests and benchmarks.

pynetdicom installs console scripts with the same names (``storescp``, ``findscu``
...), which can shadow DCMTK's on ``PATH``; :func:`tool` returns the DCMTK binary
(checked by its ``--version`` output).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

_CANDIDATE_DIRS = ("/usr/bin", "/usr/local/bin", "/bin")


@functools.lru_cache(maxsize=None)
def find_tool(name: str) -> str | None:
    """Absolute path of DCMTK's ``name`` or ``None``."""
    candidates = [os.path.join(d, name) for d in _CANDIDATE_DIRS]
    found = shutil.which(name)
    if found:
        candidates.insert(0, found)
    for path in candidates:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return path
    return None


def tool(name: str) -> str:
    """DCMTK's ``name``; skips the test when DCMTK is not installed."""
    path = find_tool(name)
    if path is None:
        pytest.skip(f"DCMTK {name} not installed (apt-get install dcmtk)")
    return path


def run(name: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run DCMTK ``name`` with ``args``; returns the completed process (text output)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([tool(name), *args], capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Block until something listens on ``host:port``."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@contextmanager
def storescp(port: int, out_dir: Path, ae_title: str = "STORESCP", extra: Sequence[str] = (),
             env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A running DCMTK ``storescp`` writing into ``out_dir`` (stopped on exit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [tool("storescp"), "-aet", ae_title, "-od", str(out_dir), *extra, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
