"""The ANN index: add/update/delete, persistence, rebuild after corruption, filters."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from dicom_node.db import Database
from dicom_node.embeddings import EmbeddingRow, Space, ensure_schema, upsert
from dicom_node.similarity import (Filters, SimilarityError, SimilarityIndex, VectorIndex, allowed_studies,
                                   exact_search)
from tests.support.postgres import BACKENDS, postgres_server  # noqa: F401  (session fixture)

SPACE = Space("cxr-image", "test-embed", "1.0.0")
DIM = 16


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path: Path):
    """The index on SQLite and on a real PostgreSQL server (the embeddings table, BLOB/BYTEA)."""
    url = (f"sqlite:///{tmp_path / 'index.sqlite'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_server").create_database())
    d = Database(url, root=tmp_path)
    d.init_schema()
    ensure_schema(d)
    yield d
    d.close()


def add_study(db, uid: str, date: str = "20240101", modality: str = "CR", label: str | None = None,
              signed: bool = False) -> None:
    now = time.time()
    db.execute("INSERT INTO studies (study_uid, patient_id, study_date, modalities, state) VALUES (?, 'p', ?, ?, "
               "'stable')", (uid, date, modality))
    db.execute("INSERT INTO series (series_uid, study_uid, modality) VALUES (?, ?, ?)", (uid + ".1", uid, modality))
    if label:
        db.execute("INSERT INTO findings (study_uid, kind, data, created_at) VALUES (?, 'cxr', ?, ?)",
                   (uid, json.dumps({"findings": [{"label": label}]}), now))
    if signed:
        db.execute("INSERT INTO reports (study_uid, state, body, created_at, updated_at) VALUES (?, 'signed', ?, ?, ?)",
                   (uid, json.dumps({"text": "signed"}), now, now))


def put(db, uid: str, vec, item: str = "") -> int:
    row = EmbeddingRow(f"cxr-image|{uid}|||{item}", uid, SPACE.kind, SPACE.model_name, SPACE.model_version,
                       unit(vec), "src", uid + ".1", uid + ".1.1", "CR")
    with db.transaction() as conn:
        return upsert(conn, row)


def basis(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    return v + noise * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def test_vector_index_matches_exact_search():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(100, 2100)
    vi = VectorIndex(DIM, capacity=64)  # grows while adding
    vi.add(ids, x)
    assert len(vi) == 2000
    recall = []
    for q in x[:50]:
        exact = {i for i, _ in exact_search(x, ids, q, 10)}
        approx = {i for i, _ in vi.search(q, 10)}
        recall.append(len(exact & approx) / 10)
    assert np.mean(recall) >= 0.95
    vi.delete(ids[:1000])
    assert len(vi) == 1000
    assert all(i >= 1100 for i, _ in vi.search(x[0], 10))
    got = vi.search(x[1500], 5, allowed={1600, 1700})
    assert {i for i, _ in got} <= {1600, 1700}


def test_add_update_delete_and_persistence(tmp_path, db):
    for i in range(6):
        add_study(db, f"1.{i}")
        put(db, f"1.{i}", basis(i))
    idx = SimilarityIndex(tmp_path, db)
    idx.sync()
    graph, side = idx.paths(SPACE)
    assert graph.is_file() and json.loads(side.read_text())["count"] == 6
    hits = idx.search(SPACE, basis(2), k=3)
    assert hits[0].study_uid == "1.2" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    # update: study 1.2 re-analysed, its vector now points like 1.5
    put(db, "1.2", basis(5, 0.01))
    idx.sync([SPACE])
    hits = idx.search(SPACE, basis(2), k=6)
    assert all(h.similarity < 0.5 for h in hits if h.study_uid == "1.2")
    assert {h.study_uid for h in idx.search(SPACE, basis(5), k=2)} == {"1.5", "1.2"}
    # delete: the study's vectors leave the index
    with db.transaction() as conn:
        conn.execute("DELETE FROM embeddings WHERE study_uid = '1.5'")
    idx.sync([SPACE])
    assert "1.5" not in {h.study_uid for h in idx.search(SPACE, basis(5), k=6)}
    # a fresh process (no in-memory cache) reads the saved file and gets the same answer
    SimilarityIndex._cache.clear()
    fresh = SimilarityIndex(tmp_path, db)
    assert [h.study_uid for h in fresh.search(SPACE, basis(3), k=2)][0] == "1.3"
    assert fresh.status()[0] == {"space": SPACE.slug, "stored": 5, "dim": DIM, "file": True, "valid": True,
                                 "indexed": 5}


@pytest.mark.parametrize("damage", ["garbage", "truncate", "missing", "sidecar"])
def test_rebuild_after_corruption(tmp_path, db, damage, caplog):
    for i in range(8):
        add_study(db, f"2.{i}")
        put(db, f"2.{i}", basis(i))
    idx = SimilarityIndex(tmp_path, db)
    idx.sync()
    graph, side = idx.paths(SPACE)
    if damage == "garbage":
        graph.write_bytes(b"\x00\xff" * 5000)
    elif damage == "truncate":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif damage == "missing":
        graph.unlink()
    else:
        side.write_text("{not json")
    SimilarityIndex._cache.clear()
    assert SimilarityIndex(tmp_path, db).status()[0]["valid"] is False
    hits = SimilarityIndex(tmp_path, db).search(SPACE, basis(4), k=1)
    assert hits[0].study_uid == "2.4"
    assert "rebuilding from stored embeddings" in caplog.text
    # the rebuilt file was saved and verifies again
    SimilarityIndex._cache.clear()
    st = SimilarityIndex(tmp_path, db).status()[0]
    assert st["valid"] and st["indexed"] == 8


def test_filters(tmp_path, db):
    add_study(db, "3.0", "20230105", "CR", "pleural_effusion", signed=True)
    add_study(db, "3.1", "20240105", "CR", "pleural_effusion", signed=False)
    add_study(db, "3.2", "20240210", "DX", "consolidation", signed=True)
    add_study(db, "3.3", "20240301", "CT", None, signed=True)
    for i in range(4):
        put(db, f"3.{i}", basis(0, 0.2, seed=i))
    idx = SimilarityIndex(tmp_path, db)
    q = basis(0)
    everything = {h.study_uid for h in idx.search(SPACE, q, 10)}
    assert everything == {"3.0", "3.1", "3.2", "3.3"}
    uids = lambda f: {h.study_uid for h in idx.search(SPACE, q, 10, f)}  # noqa: E731
    assert uids(Filters(modality="CR")) == {"3.0", "3.1"}
    assert uids(Filters(modality=("CR", "DX"))) == {"3.0", "3.1", "3.2"}
    assert uids(Filters(finding="pleural_effusion")) == {"3.0", "3.1"}
    assert uids(Filters(signed_only=True)) == {"3.0", "3.2", "3.3"}
    assert uids(Filters(date_from="2024-01-01", date_to="20240228")) == {"3.1", "3.2"}
    assert uids(Filters(finding="pleural_effusion", signed_only=True)) == {"3.0"}
    assert uids(Filters(exclude_studies=frozenset({"3.0", "3.1"}))) == {"3.2", "3.3"}
    assert uids(Filters(finding="pneumothorax")) == set()
    assert allowed_studies(db, Filters()) is None
    with pytest.raises(SimilarityError):
        Filters(date_from="2024-13")
    with pytest.raises(SimilarityError):
        Filters(date_from="20240301", date_to="20240101")
    with pytest.raises(SimilarityError):
        idx.search(SPACE, np.ones(DIM + 1, np.float32), 3)


def test_filtered_hnsw_path(tmp_path, db, monkeypatch):
    """Above the exact-search limit the filter runs inside HNSW and still holds."""
    import dicom_node.similarity as sim

    monkeypatch.setattr(sim, "EXACT_LIMIT", 2)
    for i in range(30):
        add_study(db, f"4.{i}", modality="CR" if i % 3 == 0 else "DX")
        put(db, f"4.{i}", basis(i % 4, 0.1, seed=i))
    idx = SimilarityIndex(tmp_path, db)
    hits = idx.search(SPACE, basis(0), 5, Filters(modality="CR"))
    assert hits and all(int(h.study_uid.split(".")[1]) % 3 == 0 for h in hits)


def test_one_hit_per_study(tmp_path, db):
    add_study(db, "5.0")
    add_study(db, "5.1")
    put(db, "5.0", basis(1), item="a")
    put(db, "5.0", basis(1, 0.05), item="b")
    put(db, "5.1", basis(1, 0.3))
    hits = SimilarityIndex(tmp_path, db).search(SPACE, basis(1), 5)
    assert [h.study_uid for h in hits] == ["5.0", "5.1"]
