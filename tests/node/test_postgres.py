"""The index on PostgreSQL (ARCHITECTURE "The archive": same SQL, chosen by a URL).

The archive, C-FIND, jobs and DCMTK tests run on both backends through the
``backend`` parameter (see tests/node/conftest.py); these cover what is specific to
the second dialect: placeholders, rows, schema parity, the write lock, connections,
and the outbox / delivery / embeddings paths on a real PostgreSQL server.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dicom_node.archive import Archive
from dicom_node.db import SCHEMA, Database, dialect_of, redact_url, returned_id, to_pyformat
from dicom_node.errors import ConfigError
from dicom_node.outbox import Outbox
from tests.conftest import get_port
from tests.node.conftest import BACKENDS
from tests.support import dcmtk

ALL_TABLES = ("meta", "patients", "studies", "series", "instances", "jobs", "findings", "reports", "outbox", "peers",
              "audit", "ai_objects", "destinations", "embeddings")


# ------------------------------------------------------------------ no server needed
def test_placeholders_outside_literals_and_comments_only() -> None:
    sql = ("SELECT 'it''s ?', \"odd?col\" FROM t -- why?\n"
           "WHERE a = ? AND b LIKE ? ESCAPE '\\' AND c = '%' /* ? % */ AND d = ?")
    assert to_pyformat(sql) == ("SELECT 'it''s ?', \"odd?col\" FROM t -- why?\n"
                                "WHERE a = %s AND b LIKE %s ESCAPE '\\' AND c = '%%' /* ? %% */ AND d = %s")
    assert to_pyformat("SELECT x % 2 FROM t WHERE y = ?") == "SELECT x %% 2 FROM t WHERE y = %s"


def test_url_dialects_and_errors() -> None:
    assert dialect_of("sqlite:////tmp/x/index.sqlite") == "sqlite"
    assert dialect_of("postgresql://medws@db.example:5432/medws") == "postgresql"
    assert dialect_of("postgres://medws@db.example/medws") == "postgresql"
    with pytest.raises(ConfigError, match="not supported") as e:
        Database("mysql://root:s3cret@localhost/medws")
    assert "s3cret" not in str(e.value)
    assert redact_url("postgresql://medws:s3cret@db:5432/medws") == "postgresql://medws:***@db:5432/medws"
    assert redact_url("postgresql://medws@db/medws") == "postgresql://medws@db/medws"
    db = Database("postgresql://postgres@127.0.0.1:1/none")  # nothing listens on port 1
    assert db.path is None and db.root is None
    with pytest.raises(ConfigError, match="cannot connect to the PostgreSQL index"):
        db.query("SELECT 1")


# ------------------------------------------------------------------ a real server
@pytest.fixture
def pg(postgres_server) -> Database:
    db = Database(postgres_server.create_database())
    db.init_schema()
    yield db
    db.close()


def test_rows_read_like_sqlite_rows(pg: Database) -> None:
    pg.execute("INSERT INTO peers (name, ae_title, host, port, created_at) VALUES (?, ?, ?, ?, ?)",
               ("pacs", "PACS", "127.0.0.1", 104, 1.5))
    row = pg.query("SELECT name, port, created_at AS \"CreatedAt\" FROM peers WHERE name = ?", ("pacs",))[0]
    assert row["name"] == row[0] == row["NAME"] == "pacs"
    assert row["port"] == 104 and row["CreatedAt"] == row["createdat"] == 1.5
    assert dict(row) == {"name": "pacs", "port": 104, "CreatedAt": 1.5}
    assert list(row) == ["pacs", 104, 1.5] and len(row) == 3
    with pytest.raises(IndexError):
        row["missing"]
    count = pg.query("SELECT COUNT(*) FROM peers")[0]
    assert count[0] == 1


def test_schema_matches_sqlite_and_is_idempotent(pg: Database, tmp_path: Path) -> None:
    from dicom_node.analysis import ensure_schema
    from dicom_node.embeddings import ensure_schema as ensure_embeddings

    lite = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        for db in (lite, pg, pg):  # twice on PostgreSQL: idempotent
            ensure_schema(db)
            ensure_embeddings(db)
        for table in ALL_TABLES:
            assert pg.columns(table) == lite.columns(table) != set(), table
    finally:
        lite.close()
    assert pg.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "1"
    types = {(r[0], r[1]): r[2] for r in pg.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE column_name IN ('id', "
        "'vector') AND table_schema = current_schema()")}
    assert types[("jobs", "id")] == types[("embeddings", "id")] == "bigint"  # {serial_pk}: BIGSERIAL
    assert types[("embeddings", "vector")] == "bytea"  # {blob}
    assert "{serial_pk}" in SCHEMA
    # ids come from RETURNING on both
    assert [Outbox(db).add("p", "a.dcm") for db in (pg, pg)] == [1, 2]


def test_failed_transaction_rolls_back(pg: Database) -> None:
    with pytest.raises(RuntimeError):
        with pg.transaction() as conn:
            conn.execute("INSERT INTO audit (at, event) VALUES (?, ?)", (1.0, "x"))
            raise RuntimeError("boom")
    assert pg.query("SELECT COUNT(*) FROM audit")[0][0] == 0
    with pytest.raises(Exception, match="duplicate key"):
        with pg.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
            conn.execute("INSERT INTO meta (key, value) VALUES ('a', '2')")
    assert pg.query("SELECT COUNT(*) FROM meta WHERE key = 'a'")[0][0] == 0
    assert pg.query("SELECT 1")[0][0] == 1  # the connection is usable again
    with pg.transaction():
        with pytest.raises(RuntimeError, match="within a transaction"):  # as on SQLite: no nesting
            with pg.transaction():
                pass


def test_nul_in_text_is_dropped_not_fatal(pg: Database) -> None:
    pg.execute("INSERT INTO patients (patient_id, patient_name) VALUES (?, ?)", ("p1", "DOE^JANE\x00\x00"))
    assert pg.query("SELECT patient_name FROM patients WHERE patient_id = 'p1'")[0][0] == "DOE^JANE"


@pytest.mark.parametrize("backend", BACKENDS)
def test_transactions_serialise_read_modify_write(db: Database) -> None:
    """Read-then-write inside transaction() never loses an update (SQLite's write lock;
    PostgreSQL's advisory lock under READ COMMITTED)."""
    db.execute("INSERT INTO meta (key, value) VALUES ('n', '0')")

    def bump() -> None:
        for _ in range(15):
            with db.transaction() as conn:
                n = int(conn.execute("SELECT value FROM meta WHERE key = 'n'").fetchone()[0])
                time.sleep(0.0005)  # widen the race window
                conn.execute("UPDATE meta SET value = ? WHERE key = 'n'", (str(n + 1),))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.query("SELECT value FROM meta WHERE key = 'n'")[0][0] == "60"


def test_connections_of_ended_threads_are_closed(pg: Database) -> None:
    def use() -> None:
        pg.query("SELECT 1")

    for _ in range(12):
        t = threading.Thread(target=use)
        t.start()
        t.join()
    pg.query("SELECT 1")  # this thread's first connection prunes the ended threads' ones
    # a closed session leaves pg_stat_activity when its server process has exited, which
    # under load takes a moment after the client closed it
    deadline = time.monotonic() + 10
    while True:
        n = pg.query("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()")[0][0]
        if n <= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert n <= 2, n


@pytest.mark.parametrize("backend", BACKENDS)
def test_outbox_delivery_to_storescp(config, db: Database, ct_files: list[Path], tmp_path: Path) -> None:
    from dicom_node.delivery import Delivery, pipeline_status
    from dicom_node.peers import PeerRegistry
    from dicom_node.scp import node_status

    archive = Archive(config, db)
    stored = [archive.store_file(f) for f in ct_files[:2]]
    port = get_port()
    PeerRegistry(db).add("pacs", "STORESCP", "127.0.0.1", port)
    outbox = Outbox(db)
    ids = [outbox.add("pacs", r.path.relative_to(config.root), study_uid=r.study_uid) for r in stored]
    ids.append(outbox.add("pacs", "dicom/missing.dcm"))
    assert ids == sorted(set(ids))
    delivery = Delivery(db, config.ae_title, max_attempts=2)
    with dcmtk.storescp(port, tmp_path / "pacs"):
        attempt = delivery.deliver_once()
    assert (attempt.sent, attempt.dead) == (2, 1)
    assert len(list((tmp_path / "pacs").iterdir())) == 2
    assert outbox.counts() == {"pending": 0, "sending": 0, "sent": 2, "failed": 1}
    assert delivery.retry() == 1 and outbox.counts()["pending"] == 1
    status = node_status(db)
    assert status["instances"] == 2 and status["study_states"] == {"receiving": 1}
    assert pipeline_status(db)["destinations"] == [{"peer": "pacs", "ae_title": "STORESCP", "auto_send": False}]


@pytest.mark.parametrize("backend", BACKENDS)
def test_embeddings_and_similarity_search(config, db: Database) -> None:
    from dicom_node.embeddings import EmbeddingRow, Space, ensure_schema, rows_for, upsert, vector_of
    from dicom_node.similarity import Filters, SimilarityIndex

    ensure_schema(db)
    space = Space("cxr-image", "test-embed", "1.0.0")
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i, uid in enumerate(("1.1", "1.2", "1.3")):
        db.execute("INSERT INTO studies (study_uid, patient_id, study_date, state) VALUES (?, 'p', ?, 'stable')",
                   (uid, f"2024010{i + 1}"))
        with db.transaction() as conn:
            upsert(conn, EmbeddingRow(f"cxr-image|{uid}|||", uid, space.kind, space.model_name, space.model_version,
                                      vecs[i], "src", uid + ".1", uid + ".1.1", "CR"))
    first = rows_for(db, "1.1")[0]["id"]
    with db.transaction() as conn:  # replacing an item gives it a new id (ANN labels are never reused)
        new_id = upsert(conn, EmbeddingRow("cxr-image|1.1|||", "1.1", space.kind, space.model_name,
                                           space.model_version, vecs[0], "src2", "1.1.1", "1.1.1.1", "CR"))
    assert new_id > first and [r["id"] for r in rows_for(db, "1.1")] == [new_id]
    assert np.array_equal(vector_of(db, new_id), vecs[0])
    index = SimilarityIndex(config.root, db)
    index.sync({space})
    hits = index.search(space, vecs[1], k=2)
    assert hits[0].study_uid == "1.2" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [h.study_uid for h in index.search(space, vecs[1], k=3, filters=Filters(date_from="20240103"))] == ["1.3"]


def test_returned_id_needs_one_row(pg: Database) -> None:
    cur = pg.execute("INSERT INTO audit (at, event) VALUES (?, 'a'), (?, 'b') RETURNING id", (1.0, 2.0))
    with pytest.raises(ValueError):
        returned_id(cur)


def test_select_star_survives_another_process_adding_a_column(pg: Database) -> None:
    """No server-side prepared statements: a repeated ``SELECT *`` keeps working after
    another connection's additive ``ALTER TABLE`` (analysis.ensure_schema at start-up)."""
    for _ in range(8):
        assert pg.query("SELECT * FROM jobs WHERE id = ?", (1,)) == []
    other = Database(pg.url)
    try:
        assert other.add_column("jobs", "extra", "TEXT") and not other.add_column("jobs", "extra", "TEXT")
    finally:
        other.close()
    pg.execute("INSERT INTO jobs (study_uid, task, content_key, created_at, updated_at) VALUES ('1', 't', 'k', 0, 0)")
    assert pg.query("SELECT * FROM jobs WHERE id = ?", (1,))[0]["extra"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_storescu_associations_keep_counts_right(node, ct_files: list[Path]) -> None:
    """Four DCMTK senders at once, each file sent twice at the same time: every
    association succeeds and the index counts stay exact (the write lock at work)."""
    from tests.node.conftest import TEST_AE

    halves = [ct_files[:6], ct_files[6:]] * 2
    results: list[int] = []

    def send(files: list[Path]) -> None:
        proc = dcmtk.run("storescu", "-aet", TEST_AE, "-aec", node.config.ae_title, "127.0.0.1", str(node.port),
                         *[str(p) for p in files])
        results.append(proc.returncode)

    threads = [threading.Thread(target=send, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0, 0, 0, 0]
    assert node.archive.counts() == {"patients": 1, "studies": 1, "series": 1, "instances": 12}
    assert [tuple(r) for r in node.db.query("SELECT num_series, num_instances FROM studies")] == [(1, 12)]
    assert [r[0] for r in node.db.query("SELECT num_instances FROM series")] == [12]
    assert len(list((node.config.root / "dicom").rglob("*.dcm"))) == 12
