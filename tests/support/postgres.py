"""A throw-away PostgreSQL server for tests: the system's ``initdb`` and ``postgres`` in
a temporary folder, listening on 127.0.0.1 with an OS-chosen port, trust auth.

``initdb`` refuses to run as root; as root the server runs as ``nobody`` (the folder is
handed to that user).  fsync is off: the data dies with the test session.  The server
is a child of the test process and gets SIGINT (fast shutdown) if that process dies
(Linux ``PR_SET_PDEATHSIG``), so a killed test run leaves no server behind.

Fixtures (import them into an area's conftest.py): ``backend`` is ``"sqlite"`` unless
a test parametrizes it (``@pytest.mark.parametrize("backend", BACKENDS)``); ``db_url``
is then ``""`` (the embedded default) or a fresh database on the session's server
(``postgres_server``), for the area's ``config`` fixture to use as ``db_url``.
"""
from __future__ import annotations

import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import get_port
from tests.support.medws_process import stop

SEARCH = "/usr/lib/postgresql/*/bin"
_names = itertools.count(1)


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: from PATH, else the newest
    ``/usr/lib/postgresql/<version>/bin``; ``None`` when PostgreSQL is not installed."""
    initdb, server = shutil.which("initdb"), shutil.which("postgres")
    if initdb and server and Path(initdb).parent == Path(server).parent:
        return Path(initdb).parent

    def version(d: str) -> tuple[int, ...]:
        part = Path(d).parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    for d in sorted(glob.glob(SEARCH), key=version, reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "postgres").is_file():
            return Path(d)
    return None


class PostgresServer:
    """One PostgreSQL cluster; :meth:`start`, :meth:`create_database`, :meth:`stop`."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = 0
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "nobody"
        base = "/tmp" if os.path.isdir("/tmp") else None  # a folder the server user can reach
        self.dir = Path(tempfile.mkdtemp(prefix="medws-pg-", dir=base))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, args: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir, env={**os.environ, "LC_ALL": "C", "LANG": "C"}, **self._as_user())

    def start(self) -> None:
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        proc = self._run([self.bin_dir / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-locale", "--no-sync"])
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stderr or proc.stdout}")
        for _attempt in range(3):  # the OS-chosen port may be taken between choice and bind
            self.port = get_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(self.bin_dir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                     "-k", str(self.dir), "-F", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                     "-c", "max_connections=200"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, preexec_fn=_die_with_parent,
                    env={**os.environ, "LC_ALL": "C", "LANG": "C"}, **self._as_user())
            if self._wait_ready(30.0):
                return
            self._terminate()
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
        raise RuntimeError(f"PostgreSQL did not start:\n{tail}")

    def _wait_ready(self, timeout_s: float) -> bool:
        import psycopg

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        stop(self.proc, signal.SIGINT, 15)  # SIGINT: PostgreSQL's fast shutdown
        self.proc = None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"medws_test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._terminate()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the server's child process: SIGINT when the test process dies (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - not Linux: stopped by the fixture only
        pass


#: index backends of the tests that run on both
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def backend() -> str:
    """The index backend (``sqlite``; tests parametrize it to run on PostgreSQL too)."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (skips when PostgreSQL is not installed)."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, postgres) not found in PATH or {SEARCH}")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """``""`` (the embedded SQLite default) or the URL of a fresh PostgreSQL database."""
    if backend == "sqlite":
        return ""
    assert backend == "postgresql", backend
    return request.getfixturevalue("postgres_server").create_database()
