"""The ``medws node`` CLI contract and ``medws demo``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import get_port
from tests.node.conftest import BACKENDS
from tests.support.dcmtk import wait_port


def medws(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medws", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_init_peers_status(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert medws("node", "init", "--root", str(root)).returncode == 0
    assert (root / "medws.toml").is_file() and (root / "index.sqlite").is_file()
    env = {"MEDWS_ROOT": str(root)}  # the default root
    assert medws("node", "peers", "add", "pacs", "--ae-title", "PACS", "--host", "127.0.0.1", "--port", "4242",
                 env=env).returncode == 0
    dup = medws("node", "peers", "add", "pacs", "--ae-title", "PACS", "--host", "127.0.0.1", "--port", "4242", env=env)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    listed = json.loads(medws("node", "peers", "list", "--json", env=env).stdout)
    assert listed == [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242, "tls": False}]
    status = json.loads(medws("node", "status", "--root", str(root), "--json").stdout)
    assert {"patients", "studies", "series", "instances", "jobs", "outbox"} <= set(status)
    assert status["instances"] == 0 and status["jobs"]["queued"] == 0 and status["outbox"]["pending"] == 0
    assert medws("node", "peers", "remove", "pacs", env=env).returncode == 0
    missing = medws("node", "echo", "pacs", env=env)
    assert missing.returncode == 1 and "no peer named" in missing.stderr


def test_echo_unreachable_peer_fails_cleanly(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    medws("node", "peers", "add", "gone", "--ae-title", "GONE", "--host", "127.0.0.1", "--port", str(get_port()),
          "--root", root)
    proc = medws("node", "echo", "gone", "--root", root)
    assert proc.returncode == 1 and "cannot associate" in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_receives_and_stops_cleanly_on_sigterm(tmp_path: Path, ct_files: list[Path], db_url: str) -> None:
    root = tmp_path / "root"
    env = {"MEDWS_DB_URL": db_url} if db_url else {}  # PostgreSQL: two acceptor processes share its index
    medws("node", "init", "--root", str(root), env=env)
    medws("node", "peers", "add", "me", "--ae-title", "SENDER", "--host", "127.0.0.1", "--port", "104",
          "--root", str(root), env=env)
    port = get_port()
    proc = subprocess.Popen([sys.executable, "-m", "medws", "node", "serve", "--root", str(root), "--host", "127.0.0.1",
                             "--port", str(port), "--ae-title", "MEDWS", "--quiet-period", "0.5", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        wait_port(port, timeout=30)
        from tests.support import dcmtk

        sent = dcmtk.run("storescu", "-aet", "SENDER", "-aec", "MEDWS", "127.0.0.1", str(port),
                         *[str(p) for p in ct_files[:5]])
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = json.loads(medws("node", "status", "--root", str(root), "--json", env=env).stdout)
            if status["study_states"].get("stable") == 1 and sum(status["jobs"].values()) >= 1:
                break
            time.sleep(0.3)
        # stable after the quiet period, and analysis queued (the analysis workers may already have run it)
        assert status["instances"] == 5 and status["studies"] == 1
        assert status["study_states"] == {"stable": 1} and sum(status["jobs"].values()) >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[0])["event"] == "listening"
    assert not (root / "run" / "node.json").exists()
    assert (root / "index.sqlite").exists() == (not db_url)


def _statuses(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "instances" in obj:
            out.append(obj)
    return out


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    proc = medws("demo", "--root", str(root), timeout=240)
    assert proc.returncode == 0, proc.stderr
    status = _statuses(proc.stdout)[0]  # printed once every study is stable
    assert status["studies"] == 3 and status["instances"] == 42 and status["study_states"] == {"stable": 3}
    assert sum(status["jobs"].values()) >= 3
    final = json.loads(medws("node", "status", "--root", str(root), "--json").stdout)
    again = _statuses(medws("demo", "--root", str(root), timeout=240).stdout)[-1]
    assert again["instances"] == final["instances"]  # identical duplicates: no second copy, no second analysis
    assert sum(again["jobs"].values()) == sum(final["jobs"].values())  # same content: nothing queued twice
