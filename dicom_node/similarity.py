"""The approximate-nearest-neighbour index over the archive's embeddings (hnswlib).

Files, beside the archive: ``<root>/index/<kind>--<model>--<version>.hnsw`` (an HNSW
graph, inner-product space over L2-normalised vectors = cosine) and a ``.json``
sidecar (sha256 of the graph file, dimension, parameters).  Labels are the ids of the
``embeddings`` table (:mod:`dicom_node.embeddings`), which is the source of truth and
never reuses an id.

Opening a space verifies the graph file against its sidecar (a missing, truncated or
corrupt file is never handed to hnswlib, which does not validate its input) and then
reconciles it with the table: ids in the table but not in the graph are added, ids
no longer in the table are marked deleted.  A missing/corrupt file, or one with more
than :data:`MAX_DELETED_FRACTION` deleted entries, is rebuilt from the stored vectors.
Writers hold an exclusive file lock (``<root>/index/.lock``) while they load, change
and save (atomic rename), so several processes can share the index.

Search: hnswlib HNSW (M=16, ef_construction=100, ef=max(128, 4k)) over the space;
when filters (modality, finding type, signed cases only, study date range) leave at
most :data:`EXACT_LIMIT` vectors the search is exact (a matrix product over the stored
vectors), otherwise HNSW runs with the filter as a label predicate.  Hits are grouped
per study (best similarity), the query study excluded.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.db import Database
from dicom_node.embeddings import Space, ensure_schema, from_blob, study_findings
from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

INDEX_DIR = "index"
M = 16
EF_CONSTRUCTION = 100
EF_SEARCH_MIN = 128  # bench_cbir_1m: smallest ef with recall@10 >= 0.95 at 1M
EXACT_LIMIT = 20_000
MAX_DELETED_FRACTION = 0.3
_PROCESS_LOCK = threading.Lock()


class SimilarityError(NodeError):
    """The similarity index cannot answer (bad filter, unknown study, no vectors)."""


# ------------------------------------------------------------------ one HNSW graph
class VectorIndex:
    """An hnswlib inner-product index with integer labels; grows as needed.

    Parameters
    ----------
    dim : int
    capacity : int
        Initial number of elements (doubled when full).
    threads : int
        hnswlib threads for add/query.
    """

    def __init__(self, dim: int, capacity: int = 1024, threads: int = 1, m: int = M,
                 ef_construction: int = EF_CONSTRUCTION) -> None:
        import hnswlib

        self.dim = int(dim)
        self.m, self.ef_construction = m, ef_construction
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(max_elements=max(16, capacity), M=m, ef_construction=ef_construction,
                              allow_replace_deleted=False)
        self.index.set_num_threads(threads)
        self.deleted: set[int] = set()
        self.fingerprint: tuple[int, int, int] | None = None

    @classmethod
    def load(cls, path: Path, dim: int, threads: int = 1) -> "VectorIndex":
        import hnswlib

        self = cls.__new__(cls)
        self.dim = int(dim)
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.load_index(str(path))
        self.m, self.ef_construction = self.index.M, self.index.ef_construction
        self.index.set_num_threads(threads)
        self.deleted = set()
        self.fingerprint = None
        return self

    def labels(self) -> set[int]:
        """Every label in the graph, deleted ones included."""
        return set(int(i) for i in self.index.get_ids_list())

    def __len__(self) -> int:
        return self.index.get_current_count() - len(self.deleted)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        need = self.index.get_current_count() + len(ids)
        if need > self.index.get_max_elements():
            self.index.resize_index(max(need, 2 * self.index.get_max_elements()))
        self.index.add_items(vectors, ids)
        self.deleted.difference_update(int(i) for i in ids)

    def delete(self, ids: Iterable[int]) -> None:
        for i in ids:
            i = int(i)
            if i in self.deleted:
                continue
            try:
                self.index.mark_deleted(i)
            except RuntimeError:  # already deleted or unknown label
                pass
            self.deleted.add(i)

    def search(self, vector: np.ndarray, k: int, allowed: set[int] | None = None,
               ef: int | None = None) -> list[tuple[int, float]]:
        """Up to ``k`` (label, cosine similarity) pairs, best first."""
        n = len(self)
        k = min(int(k), n)
        if k <= 0:
            return []
        self.index.set_ef(max(ef or EF_SEARCH_MIN, 4 * k))
        flt = (lambda label: label in allowed) if allowed is not None else None
        if allowed is not None:
            k = min(k, len(allowed))
        q = np.asarray(vector, np.float32).reshape(1, -1)
        while True:
            try:
                labels, dist = self.index.knn_query(q, k=k, filter=flt)
                break
            except RuntimeError:  # fewer than k reachable through the filter: ask for fewer
                if k <= 1:
                    return []
                k //= 2
        return [(int(lab), float(1.0 - d)) for lab, d in zip(labels[0], dist[0])]

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))


def exact_search(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Exact inner-product top-k (the reference for recall and the small-filter path)."""
    if len(ids) == 0:
        return []
    sims = vectors @ np.asarray(query, np.float32)
    k = min(k, len(ids))
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top])]
    return [(int(ids[i]), float(sims[i])) for i in top]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ filters
def _date(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return None
    import datetime as _dt

    digits = value.replace("-", "")
    try:
        if len(digits) != 8 or not digits.isdigit():
            raise ValueError(digits)
        _dt.datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise SimilarityError(f"{what} {value!r} is not a date (YYYYMMDD or YYYY-MM-DD)") from None
    return digits


@dataclass(frozen=True)
class Filters:
    """Which archived cases may be returned.

    ``modality``: e.g. ``"CR"`` or ``("CR", "DX")``; ``finding``: a finding label the case
    must have (AI findings); ``signed_only``: only cases with a signed report;
    ``date_from``/``date_to``: inclusive study-date bounds (YYYYMMDD or YYYY-MM-DD).
    """

    modality: tuple[str, ...] = ()
    finding: str | None = None
    signed_only: bool = False
    date_from: str | None = None
    date_to: str | None = None
    exclude_studies: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if isinstance(self.modality, str):
            object.__setattr__(self, "modality", (self.modality,) if self.modality else ())
        object.__setattr__(self, "modality", tuple(m.upper() for m in self.modality))
        object.__setattr__(self, "date_from", _date(self.date_from, "date_from"))
        object.__setattr__(self, "date_to", _date(self.date_to, "date_to"))
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise SimilarityError(f"date range {self.date_from}..{self.date_to} is empty")

    @property
    def active(self) -> bool:
        return bool(self.modality or self.finding or self.signed_only or self.date_from or self.date_to)


def allowed_studies(db: Database, filters: Filters) -> set[str] | None:
    """Study UIDs passing ``filters`` (``None`` = no restriction apart from exclusions)."""
    if not filters.active:
        return None
    sql, params = ["SELECT s.study_uid FROM studies s WHERE 1 = 1"], []
    if filters.modality:
        marks = ", ".join("?" for _ in filters.modality)
        sql.append(f"AND EXISTS (SELECT 1 FROM series se WHERE se.study_uid = s.study_uid AND se.modality IN ({marks}))")
        params += list(filters.modality)
    if filters.signed_only:
        sql.append("AND EXISTS (SELECT 1 FROM reports r WHERE r.study_uid = s.study_uid AND r.state = 'signed')")
    if filters.date_from:
        sql.append("AND s.study_date >= ?")
        params.append(filters.date_from)
    if filters.date_to:
        sql.append("AND s.study_date <= ?")
        params.append(filters.date_to)
    uids = {r[0] for r in db.query(" ".join(sql), params)}
    if filters.finding:
        want = filters.finding.lower()
        uids = {u for u in uids if any(str(f.get("label", "")).lower() == want for f in study_findings(db, u))}
    return uids


# ------------------------------------------------------------------ the archive's index
@dataclass(frozen=True)
class Hit:
    """One similar case: the study, its best-matching item and the cosine similarity."""

    study_uid: str
    similarity: float
    embedding_id: int
    series_uid: str
    sop_instance_uid: str
    kind: str
    label: str = ""
    box: tuple[float, ...] | None = None


class SimilarityIndex:
    """The ANN spaces of one archive (``<root>/index``), backed by the ``embeddings`` table.

    Parameters
    ----------
    root : path
        Archive root.
    db : Database
    threads : int
        hnswlib threads.
    """

    _cache: dict[tuple[str, str], tuple[float, int, VectorIndex]] = {}

    def __init__(self, root: Path, db: Database, threads: int = 1) -> None:
        self.root = Path(root)
        self.db = db
        self.threads = threads
        self.dir = self.root / INDEX_DIR
        ensure_schema(db)

    # ------------------------------------------------------------ files
    def paths(self, space: Space) -> tuple[Path, Path]:
        return self.dir / f"{space.slug}.hnsw", self.dir / f"{space.slug}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with _PROCESS_LOCK, open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def spaces(self) -> list[Space]:
        """Spaces that have stored vectors."""
        return [Space(r[0], r[1], r[2]) for r in self.db.query(
            "SELECT DISTINCT kind, model_name, model_version FROM embeddings ORDER BY kind, model_name, model_version")]

    def _table(self, space: Space, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        sql = "SELECT id, vector, dim FROM embeddings WHERE kind = ? AND model_name = ? AND model_version = ?"
        params: list[Any] = [space.kind, space.model_name, space.model_version]
        rows = self.db.query(sql + " ORDER BY id", params)
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r["id"] in wanted]
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return (np.array([r["id"] for r in rows], np.int64),
                np.stack([from_blob(r["vector"], r["dim"]) for r in rows]))

    def _table_ids(self, space: Space) -> set[int]:
        return {r[0] for r in self.db.query(
            "SELECT id FROM embeddings WHERE kind = ? AND model_name = ? AND model_version = ?",
            (space.kind, space.model_name, space.model_version))}

    def _dim(self, space: Space) -> int | None:
        r = self.db.query("SELECT dim FROM embeddings WHERE kind = ? AND model_name = ? AND model_version = ? "
                          "LIMIT 1", (space.kind, space.model_name, space.model_version))
        return int(r[0][0]) if r else None

    def _read_file(self, space: Space, dim: int) -> VectorIndex | None:
        """The saved graph when it matches its sidecar, else ``None`` (logged)."""
        graph, side = self.paths(space)
        if not graph.is_file():
            if side.is_file():
                logger.warning("index %s: graph file missing; rebuilding from stored embeddings", space.slug)
            return None
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            if int(meta["dim"]) != dim or meta["sha256"] != _sha256(graph):
                raise ValueError("checksum or dimension differs from the sidecar")
            vi = VectorIndex.load(graph, dim, self.threads)
            vi.deleted = set(int(i) for i in meta.get("deleted", []))
            return vi
        except Exception as e:  # noqa: BLE001 - a corrupt file is rebuilt, never trusted
            logger.warning("index %s unusable (%s: %s); rebuilding from stored embeddings", space.slug,
                           type(e).__name__, e)
            return None

    def _write_file(self, space: Space, vi: VectorIndex) -> None:
        graph, side = self.paths(space)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = graph.with_name(f"{graph.name}.tmp{os.getpid()}")
        vi.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        meta = {"kind": space.kind, "model": space.model_name, "version": space.model_version, "dim": vi.dim,
                "count": len(vi), "deleted": sorted(vi.deleted), "M": vi.m, "ef_construction": vi.ef_construction,
                "library": "hnswlib", "space": "ip", "sha256": _sha256(tmp), "saved_at": time.time()}
        side_tmp = side.with_name(f"{side.name}.tmp{os.getpid()}")
        side_tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, graph)
        os.replace(side_tmp, side)
        st = graph.stat()
        self._cache[(str(self.root), space.slug)] = (st.st_mtime, st.st_size, vi)

    def _build(self, space: Space) -> VectorIndex:
        ids, vecs = self._table(space)
        vi = VectorIndex(vecs.shape[1] if len(ids) else (self._dim(space) or 1), capacity=max(1024, 2 * len(ids)),
                         threads=self.threads)
        vi.add(ids, vecs)
        logger.info("index %s built from %d stored embeddings", space.slug, len(ids))
        return vi

    def _fingerprint(self, space: Space) -> tuple[int, int, int]:
        r = self.db.query("SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(id), 0) FROM embeddings "
                          "WHERE kind = ? AND model_name = ? AND model_version = ?",
                          (space.kind, space.model_name, space.model_version))[0]
        return int(r[0]), int(r[1]), int(r[2])

    def _reconcile(self, space: Space, vi: VectorIndex) -> bool:
        """Bring ``vi`` in line with the table; True when it changed."""
        fp = self._fingerprint(space)
        if getattr(vi, "fingerprint", None) == fp:
            return False
        table = self._table_ids(space)
        present = vi.labels()
        live = present - vi.deleted
        add = table - live
        gone = live - table
        if add:
            ids, vecs = self._table(space, add)
            vi.add(ids, vecs)
        if gone:
            vi.delete(gone)
        vi.fingerprint = fp
        return bool(add or gone)

    def open(self, space: Space, write: bool = False) -> VectorIndex | None:
        """The space's index, verified and reconciled with the table (``None``: no vectors).

        ``write``: save it back when reconciling changed it (caller holds the lock)."""
        dim = self._dim(space)
        graph, _ = self.paths(space)
        if dim is None:
            return None
        key = (str(self.root), space.slug)
        vi = None
        cached = self._cache.get(key)
        if cached is not None and graph.is_file():
            st = graph.stat()
            if (st.st_mtime, st.st_size) == cached[:2]:
                vi = cached[2]
        rebuilt = False
        if vi is None:
            vi = self._read_file(space, dim)
            if vi is not None:
                st = graph.stat()
                self._cache[key] = (st.st_mtime, st.st_size, vi)
        if vi is None:
            vi, rebuilt = self._build(space), True
        changed = self._reconcile(space, vi)
        total = vi.index.get_current_count()
        if total and len(vi.deleted) > MAX_DELETED_FRACTION * total:
            vi, rebuilt = self._build(space), True
        if write and (changed or rebuilt):
            self._write_file(space, vi)
        return vi

    def sync(self, spaces: Iterable[Space] | None = None) -> None:
        """Apply the table's changes to the index files of ``spaces`` (default: all)."""
        with self._locked():
            for space in spaces if spaces is not None else self.spaces():
                vi = self.open(space, write=True)
                graph, side = self.paths(space)
                if vi is None:  # no vectors left in this space
                    graph.unlink(missing_ok=True)
                    side.unlink(missing_ok=True)
                    self._cache.pop((str(self.root), space.slug), None)

    def rebuild(self) -> dict[str, int]:
        """Rebuild every space from the stored embeddings; returns slug -> vectors."""
        out = {}
        with self._locked():
            for space in self.spaces():
                vi = self._build(space)
                self._write_file(space, vi)
                out[space.slug] = len(vi)
        return out

    def status(self) -> list[dict[str, Any]]:
        """Per space: stored vectors, indexed vectors and whether the file is valid."""
        out = []
        for space in self.spaces():
            graph, side = self.paths(space)
            dim = self._dim(space) or 0
            vi = self._read_file(space, dim) if graph.is_file() else None
            out.append({"space": space.slug, "stored": len(self._table_ids(space)), "dim": dim,
                        "file": graph.is_file(), "valid": vi is not None, "indexed": len(vi) if vi else 0})
        return out

    def _rows(self, ids: list[int]) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self.db.query("SELECT id, study_uid, series_uid, sop_instance_uid, kind, label, box "
                                   f"FROM embeddings WHERE id IN ({marks})", chunk):
                out[r["id"]] = r
        return out

    # ------------------------------------------------------------ search
    def search(self, space: Space, vector: np.ndarray, k: int = 10, filters: Filters | None = None,
               per_study: bool = True) -> list[Hit]:
        """Top ``k`` cases (one hit per study when ``per_study``) most similar to ``vector``."""
        filters = filters or Filters()
        if k < 1:
            raise SimilarityError(f"k must be >= 1, got {k}")
        vector = np.asarray(vector, np.float32).ravel()
        with self._locked():
            vi = self.open(space, write=True)
        if vi is None:
            return []
        if vi.dim != vector.shape[0]:
            raise SimilarityError(f"query vector has {vector.shape[0]} dims, space {space.slug} has {vi.dim}")
        studies = allowed_studies(self.db, filters)
        allowed = None
        if studies is not None:
            allowed = {r[0] for r in self.db.query(
                "SELECT id, study_uid FROM embeddings WHERE kind = ? AND model_name = ? AND model_version = ?",
                (space.kind, space.model_name, space.model_version))
                if r[1] in studies and r[1] not in filters.exclude_studies}
        if allowed is not None and len(allowed) <= EXACT_LIMIT:
            ids, vecs = self._table(space, allowed)
            raw = exact_search(vecs, ids, vector, len(ids)) if len(ids) else []
        else:
            fetch = (k * 4 if per_study else k) + 8 * len(filters.exclude_studies)
            with _PROCESS_LOCK:  # no graph change (add/resize by a writer thread) during the query
                raw = vi.search(vector, fetch, allowed)
        rows = self._rows([label for label, _ in raw])
        hits: list[Hit] = []
        seen: set[str] = set()
        for label, sim in raw:
            r = rows.get(label)
            if r is None or r["study_uid"] in filters.exclude_studies or (per_study and r["study_uid"] in seen):
                continue
            seen.add(r["study_uid"])
            box = tuple(json.loads(r["box"])) if r["box"] else None
            hits.append(Hit(r["study_uid"], sim, label, r["series_uid"] or "", r["sop_instance_uid"] or "",
                            r["kind"], r["label"] or "", box))
            if len(hits) >= k:
                break
        return hits
