"""The index database: schema and connections.

The embedded default is SQLite (standard library ``sqlite3``) in WAL mode.  The
schema and every statement use plain SQL that PostgreSQL also runs: portable types
(TEXT, INTEGER, BIGINT, DOUBLE PRECISION), ``INSERT ... ON CONFLICT ... DO UPDATE``
upserts, ``?`` placeholders (translated to ``%s`` for a PostgreSQL driver) and one
per-dialect token, the auto-numbered key (``{serial_pk}``).
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dicom_node.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,
    patient_name TEXT,
    birth_date TEXT,
    sex TEXT,
    updated_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    accession_number TEXT,
    study_id TEXT,
    study_date TEXT,
    study_time TEXT,
    study_description TEXT,
    referring_physician TEXT,
    modalities TEXT,
    body_part TEXT,
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'receiving',
    first_received DOUBLE PRECISION,
    last_received DOUBLE PRECISION,
    stable_at DOUBLE PRECISION,
    content_key TEXT,
    source_ae TEXT
);
CREATE INDEX IF NOT EXISTS studies_state ON studies (state, last_received);
CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_id);
CREATE INDEX IF NOT EXISTS studies_date ON studies (study_date);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    series_description TEXT,
    body_part TEXT,
    contrast_agent TEXT,
    slice_thickness DOUBLE PRECISION,
    image_type TEXT,
    view_position TEXT,
    num_instances INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS series_study ON series (study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    instance_number INTEGER,
    image_type TEXT,
    view_position TEXT,
    rows_ INTEGER,
    columns_ INTEGER,
    number_of_frames INTEGER,
    path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    source_ae TEXT
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS jobs (
    id {serial_pk},
    study_uid TEXT NOT NULL,
    task TEXT NOT NULL,
    content_key TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    worker_id TEXT,
    error TEXT,
    model_versions TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    UNIQUE (study_uid, task, content_key)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, priority, created_at);
CREATE TABLE IF NOT EXISTS findings (
    id {serial_pk},
    study_uid TEXT NOT NULL,
    job_id BIGINT,
    kind TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    data TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_study ON findings (study_uid);
CREATE TABLE IF NOT EXISTS reports (
    id {serial_pk},
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'draft',
    body TEXT,
    author TEXT,
    signed_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_study ON reports (study_uid);
CREATE TABLE IF NOT EXISTS outbox (
    id {serial_pk},
    peer TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'result',
    study_uid TEXT,
    sop_instance_uid TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS peers (
    name TEXT PRIMARY KEY,
    ae_title TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id {serial_pk},
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,
    detail TEXT
);
"""

_DIALECT_TOKENS = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY"},
    "postgresql": {"serial_pk": "BIGSERIAL PRIMARY KEY"},
}


def schema_sql(dialect: str = "sqlite") -> str:
    """The schema for ``dialect`` (``sqlite`` or ``postgresql``)."""
    try:
        return SCHEMA.format(**_DIALECT_TOKENS[dialect])
    except KeyError as e:
        raise ConfigError(f"unsupported database dialect {dialect!r}") from e


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"database URL {url!r} is not supported by this build; use sqlite:///PATH "
            "(a PostgreSQL URL needs a PostgreSQL driver, see docs/node.md)"
        )
    return Path(url[len("sqlite:///"):])


class Database:
    """Connections to the index, one per thread (``sqlite3`` objects are not shared
    between threads); each process opens its own.

    Statements run in autocommit mode; :meth:`transaction` groups them
    (``BEGIN IMMEDIATE`` so concurrent writers queue instead of deadlocking).
    """

    def __init__(self, url: str, busy_timeout_s: float = 60.0, synchronous: str = "NORMAL") -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives process crashes; the files themselves are fsync'd before
        # the index row, and Archive.reconcile re-indexes any file whose row a power
        # loss took away, so no acknowledged instance is lost.
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        with self._lock:
            self._all.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def init_schema(self) -> None:
        """Create missing tables and indexes (idempotent)."""
        self.conn.executescript(schema_sql("sqlite"))
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        """Run one statement on this thread's connection."""
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        """Run a SELECT and return all rows."""
        return self.conn.execute(sql, params).fetchall()

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried every 0.2 ms while another connection (another
        acceptor process) holds the write lock: SQLite's own busy handler sleeps 1, 2,
        5 ... ms between attempts, far longer than an index transaction here lasts."""
        conn.execute("PRAGMA busy_timeout=0")
        try:
            deadline = time.monotonic() + self.busy_timeout_s
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.0002)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""
        conn = self.conn
        self._begin_immediate(conn)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing is best effort
                    pass
            self._all.clear()
        self._local = threading.local()
