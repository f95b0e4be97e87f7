"""A ``medws`` command running in the foreground (``node serve``, ``node worker``) for tests."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


@contextmanager
def medws_process(*args: str, env: Mapping[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, dict[str, Any]]]:
    """Start ``python -m medws ARGS``; yield the process and its first stdout line as JSON
    (the ``listening`` / ``working`` event); killed on exit if still running."""
    proc = subprocess.Popen([sys.executable, "-m", "medws", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=dict(env) if env is not None else None)
    try:
        line = proc.stdout.readline()
        yield proc, json.loads(line) if line.strip() else {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def terminate(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    """SIGTERM ``proc`` and return its exit status (a clean stop is 0)."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout_s)


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Stop a helper process still running: ``sig``, then kill it after ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
