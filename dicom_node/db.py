"""The index database: schema and connections.

The embedded default is SQLite (standard library ``sqlite3``) in WAL mode; a
``postgresql://user@host:port/dbname`` URL selects PostgreSQL (psycopg 3) for sites
that outgrow one machine.  The schema and every statement are ONE SQL text for both:
portable types (TEXT, INTEGER, BIGINT, DOUBLE PRECISION), ``INSERT ... ON CONFLICT ...
DO UPDATE`` upserts, ``INSERT ... RETURNING id`` for new keys (SQLite >= 3.35), ``?``
placeholders (translated to ``%s`` for psycopg by :func:`to_pyformat`).  The few
unavoidable differences are the tokens of :data:`DIALECT_TOKENS` (``{serial_pk}``,
``{serial_pk_unique}``, ``{blob}``), substituted by :func:`schema_sql` and
:meth:`Database.executescript`.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    created_at DOUBLE PRECISION NOT NULL,
    tls INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
    id {serial_pk},
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,
    detail TEXT
);
"""

#: Per-dialect SQL tokens: the only places where the two dialects' SQL differs.
DIALECT_TOKENS = {
    "sqlite": {
        "serial_pk": "INTEGER PRIMARY KEY",
        # ids never reused after a delete (ANN labels): SQLite needs AUTOINCREMENT for that
        "serial_pk_unique": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "blob": "BLOB",
    },
    "postgresql": {
        "serial_pk": "BIGSERIAL PRIMARY KEY",
        "serial_pk_unique": "BIGSERIAL PRIMARY KEY",
        "blob": "BYTEA",
    },
}

#: ``pg_advisory_xact_lock`` key of :meth:`Database.transaction` on PostgreSQL
#: (the one "write lock" of the index, like SQLite's; 0x6d65647773 = "medws")
PG_WRITE_LOCK = 0x6D65647773

_PG_SCHEMES = ("postgresql://", "postgres://")


def schema_sql(dialect: str = "sqlite") -> str:
    """The schema for ``dialect`` (``sqlite`` or ``postgresql``)."""
    return dialect_sql(SCHEMA, dialect)


def dialect_sql(sql: str, dialect: str) -> str:
    """``sql`` with the ``{token}`` s of :data:`DIALECT_TOKENS` for ``dialect`` filled in."""
    try:
        tokens = DIALECT_TOKENS[dialect]
    except KeyError as e:
        raise ConfigError(f"unsupported database dialect {dialect!r}") from e
    return sql.format(**tokens)


def redact_url(url: str) -> str:
    """``url`` with its password (``scheme://user:PASSWORD@host``) replaced by ``***``,
    for messages and logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def dialect_of(url: str) -> str:
    """``sqlite`` or ``postgresql`` for a database URL (:class:`ConfigError` otherwise)."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(_PG_SCHEMES):
        return "postgresql"
    raise ConfigError(
        f"database URL {redact_url(url)!r} is not supported; use sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME "
        "(see docs/node.md)"
    )


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"database URL {url!r} is not a sqlite:///PATH URL")
    return Path(url[len("sqlite:///"):])


@functools.lru_cache(maxsize=4096)
def to_pyformat(sql: str) -> str:
    """``sql`` with ``?`` placeholders as psycopg's ``%s`` (and ``%`` doubled).

    A ``?`` inside a string literal (``'...'``, ``''`` escapes), a quoted identifier
    (``"..."``) or a comment (``--``, ``/* */``) is kept: only bare ``?`` are parameters
    (standard SQL quoting: a backslash does not escape a quote).  psycopg reads ``%``
    everywhere, literals included, so every ``%`` becomes ``%%``.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote: an escaped quote
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1].replace("%", "%%"))
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Row(tuple):
    """A result row readable by column name and by index, as :class:`sqlite3.Row` is
    (``row["id"]``, ``row[0]``, ``dict(row)``, ``row.keys()``; names case-insensitive)."""

    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key.lower()])
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    index: dict[str, int] = {}
    for i, k in enumerate(names):
        index.setdefault(k.lower(), i)  # the first of equal names, as sqlite3.Row
    return type("Row", (Row,), {"_names": names, "_index": index, "__slots__": ()})


def pg_row_factory(cursor: Any) -> Any:
    """psycopg row factory making :class:`Row` s (one subclass per result shape)."""
    cls = _row_class(tuple(d.name for d in (cursor.description or ())))

    def make(values: Sequence[Any]) -> Row:
        return cls(values)

    return make


def _pg_param(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL: a header value padded with NULs (malformed, but
    # received) is indexed without them instead of failing the store (the file keeps them)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "")
    return value


class PgConnection:
    """One psycopg connection with the ``sqlite3.Connection`` calls the node uses:
    ``execute(sql, params)`` with ``?`` placeholders, returning a cursor
    (``fetchone``, ``fetchall``, ``rowcount``, iteration) and ``executescript``."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(to_pyformat(sql), tuple(_pg_param(p) for p in params))

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def executescript(self, sql: str) -> None:
        """Several statements without parameters (simple-query protocol)."""
        self.raw.execute(sql)

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()


class Database:
    """Connections to the index, one per thread (``sqlite3`` objects are not shared
    between threads; a PostgreSQL connection is one server session); each process
    opens its own.

    Statements run in autocommit mode; :meth:`transaction` groups them.  SQLite:
    ``BEGIN IMMEDIATE`` so concurrent writers queue instead of deadlocking.
    PostgreSQL: ``BEGIN`` (READ COMMITTED: every statement sees what committed before
    it) then ``pg_advisory_xact_lock`` (:data:`PG_WRITE_LOCK`), so index transactions
    of every process and machine run one at a time, as SQLite's write lock makes them:
    the read-then-write logic inside them (job claim, duplicate check, series count)
    stays correct.

    Parameters
    ----------
    url
        ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DBNAME``.
    busy_timeout_s
        How long a statement or transaction waits for a lock before failing.
    synchronous
        SQLite ``PRAGMA synchronous`` (PostgreSQL: the server's ``synchronous_commit``).
    root
        The archive root this index belongs to (default: the folder of an embedded
        ``<root>/index.sqlite``; a PostgreSQL index needs it given).
    """

    def __init__(self, url: str, busy_timeout_s: float = 60.0, synchronous: str = "NORMAL",
                 root: str | Path | None = None) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self.path: Path | None = sqlite_path(url) if self.dialect == "sqlite" else None
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self._root = Path(root).resolve() if root is not None else None
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, Any]] = []
        self._lock = threading.Lock()

    @property
    def root(self) -> Path | None:
        """The archive root: as given, else the folder of ``<root>/index.sqlite``, else ``None``."""
        if self._root is not None:
            return self._root
        if self.path is not None and self.path.name == "index.sqlite":
            return self.path.parent
        return None

    def _open(self) -> Any:
        if self.dialect == "postgresql":
            return self._open_pg()
        assert self.path is not None
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
            self._all.append((threading.current_thread(), conn))
        return conn

    def _open_pg(self) -> PgConnection:
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - psycopg is a dependency
            raise ConfigError("a postgresql:// index needs psycopg 3 (pip install 'psycopg[binary]')") from e
        try:
            raw = psycopg.connect(self.url, autocommit=True, row_factory=pg_row_factory,
                                  connect_timeout=max(1, int(min(self.busy_timeout_s, 30))),
                                  application_name="medws")
        except psycopg.OperationalError as e:
            raise ConfigError(f"cannot connect to the PostgreSQL index: {str(e).strip()}") from e
        # a lock wait (the write lock, a row another transaction updates) fails after
        # busy_timeout_s, as SQLite's busy timeout does
        raw.execute(f"SET lock_timeout = {int(self.busy_timeout_s * 1000)}")
        # no server-side prepared statements: a "SELECT *" prepared before another
        # process's additive ALTER TABLE would fail ("cached plan must not change result type")
        raw.prepare_threshold = None
        conn = PgConnection(raw)
        with self._lock:
            # a connection is a server session: close those of threads that ended
            # (pynetdicom runs each association in a new thread)
            keep = []
            for thread, other in self._all:
                if thread.is_alive():
                    keep.append((thread, other))
                else:
                    try:
                        other.close()
                    except Exception:  # noqa: BLE001 - closing is best effort
                        pass
            self._all = keep + [(threading.current_thread(), conn)]
        return conn

    @property
    def conn(self) -> Any:
        """This thread's connection (opened on first use; a broken PostgreSQL one is
        replaced): a :class:`sqlite3.Connection` or a :class:`PgConnection`."""
        conn = getattr(self._local, "conn", None)
        if conn is None or (self.dialect == "postgresql" and conn.broken):
            conn = self._open()
            self._local.conn = conn
        return conn

    def executescript(self, sql: str) -> None:
        """Run several DDL statements (``{token}`` s of :data:`DIALECT_TOKENS` filled in;
        literal braces doubled).  On PostgreSQL inside :meth:`transaction`, so processes
        creating the same tables at once do not collide."""
        sql = dialect_sql(sql, self.dialect)
        if self.dialect == "sqlite":
            self.conn.executescript(sql)
            return
        with self.transaction() as conn:
            conn.executescript(sql)

    def init_schema(self) -> None:
        """Create missing tables and indexes (idempotent)."""
        self.executescript(SCHEMA)
        self.add_column("peers", "tls", "INTEGER NOT NULL DEFAULT 0")  # indexes created before DICOM TLS
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )

    def tables(self) -> set[str]:
        """Names of the index's tables."""
        if self.dialect == "sqlite":
            return {r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")}
        return {r[0] for r in self.query("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")}

    def columns(self, table: str) -> set[str]:
        """Column names of ``table`` (empty when it does not exist)."""
        if self.dialect == "sqlite":
            return {r[1] for r in self.query(f"PRAGMA table_info({table})")}
        return {r[0] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", (table,))}

    def add_column(self, table: str, name: str, kind: str) -> bool:
        """``ALTER TABLE table ADD COLUMN name kind`` unless present; True when added."""
        if name in self.columns(table):
            return False
        try:
            self.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        except Exception as e:  # noqa: BLE001 - a concurrent process added it first
            if "duplicate column" not in str(e) and "already exists" not in str(e):
                raise
            return False
        return True

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        """Run one statement on this thread's connection."""
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: tuple | list = ()) -> list[Any]:
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
    def transaction(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); on PostgreSQL
        ``BEGIN`` + the advisory write lock ... ``COMMIT``."""
        conn = self.conn
        if self.dialect == "postgresql":
            yield from self._pg_transaction(conn)
            return
        self._begin_immediate(conn)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _pg_transaction(self, conn: PgConnection) -> Iterator[PgConnection]:
        if conn.in_transaction:  # PostgreSQL would only warn, and the inner COMMIT end both
            raise RuntimeError("cannot start a transaction within a transaction")
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (PG_WRITE_LOCK,))
            yield conn
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a broken connection: the server rolled back
                logger.warning("index: ROLLBACK failed (connection lost)")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            for _thread, conn in self._all:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._all.clear()
        self._local = threading.local()


def returned_id(cur: Any) -> int:
    """The key an ``INSERT ... RETURNING id`` produced (portable ``lastrowid``).

    All rows are fetched: SQLite keeps the statement, and so its write, open until
    its result is read to the end."""
    rows = cur.fetchall()
    if len(rows) != 1:
        raise ValueError(f"INSERT ... RETURNING id gave {len(rows)} rows, expected 1")
    return int(rows[0][0])
