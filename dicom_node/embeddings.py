"""Stored embeddings: the ``embeddings`` table and their computation for a study.

Every analysed study gets (ARCHITECTURE "Analysis"): one vector per chest radiograph
(``cxr-image``), one per CT series (``ct-series``) and one per AI finding with a box
(``cxr-region`` / ``ct-region``: the finding's crop), each stored with the model name
and version that produced it (:mod:`models.embedding`).  The table is the source of
truth; the ANN index files (:mod:`dicom_node.similarity`) are rebuilt from it.

:class:`StudyIndexer` is the analysis hook: after a job of a study finishes it
(re)computes what changed (a vector is recomputed only when its source content or the
model version changed), deletes the vectors whose source is gone (re-analysis
superseded a finding, the study was deleted) and updates the index incrementally.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.db import Database, returned_id
from dicom_node.errors import NodeError
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

#: Embedding kinds (one ANN space per kind and model version).
CXR_IMAGE, CXR_REGION, CT_SERIES, CT_REGION = "cxr-image", "cxr-region", "ct-series", "ct-region"
KINDS = (CXR_IMAGE, CXR_REGION, CT_SERIES, CT_REGION)
RADIOGRAPH_MODALITIES = ("CR", "DX")
AI_SOURCE_AE = "MEDWS-AI"  # objects medws wrote itself (SR/SEG/GSPS) are not embedded

# ids are never reused (the ANN labels): {serial_pk_unique}; vectors: {blob} (db.DIALECT_TOKENS)
_TABLE = """
CREATE TABLE IF NOT EXISTS embeddings (
    id {serial_pk_unique},
    item_key TEXT NOT NULL UNIQUE,
    study_uid TEXT NOT NULL,
    series_uid TEXT,
    sop_instance_uid TEXT,
    kind TEXT NOT NULL,
    modality TEXT,
    label TEXT,
    box TEXT,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector {blob} NOT NULL,
    source_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_study ON embeddings (study_uid);
CREATE INDEX IF NOT EXISTS embeddings_space ON embeddings (kind, model_name, model_version);
"""


class EmbeddingStoreError(NodeError):
    """An embedding row is malformed or cannot be computed."""


def ensure_schema(db: Database) -> None:
    """Create the ``embeddings`` table (idempotent, additive)."""
    db.executescript(_TABLE)


@dataclass(frozen=True)
class Space:
    """One ANN space: a kind and the model (name, version) whose vectors it holds."""

    kind: str
    model_name: str
    model_version: str

    @property
    def slug(self) -> str:
        """File-name-safe name, e.g. ``cxr-image--cxr-embed--1.0.0``."""
        safe = lambda s: "".join(c if c.isalnum() or c in "._-" else "_" for c in s)  # noqa: E731
        return f"{safe(self.kind)}--{safe(self.model_name)}--{safe(self.model_version)}"


@dataclass
class EmbeddingRow:
    """One stored vector (``vector`` float32, L2-normalised)."""

    item_key: str
    study_uid: str
    kind: str
    model_name: str
    model_version: str
    vector: np.ndarray
    source_key: str
    series_uid: str = ""
    sop_instance_uid: str = ""
    modality: str = ""
    label: str = ""
    box: tuple[float, ...] | None = None
    id: int | None = None

    @property
    def space(self) -> Space:
        return Space(self.kind, self.model_name, self.model_version)


def item_key(kind: str, study_uid: str, series_uid: str = "", sop_instance_uid: str = "", item: str = "") -> str:
    """The unique key of what a vector describes (kind, study, series, instance, item)."""
    return "|".join((kind, study_uid, series_uid, sop_instance_uid, item))


def to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def from_blob(b: bytes, dim: int) -> np.ndarray:
    v = np.frombuffer(b, dtype="<f4")
    if v.size != dim:
        raise EmbeddingStoreError(f"stored vector has {v.size} values, expected {dim}")
    return v.astype(np.float32)


def upsert(conn: Any, row: EmbeddingRow) -> int:
    """Insert ``row``, replacing the row of the same item (a new id: ANN labels are never reused)."""
    conn.execute("DELETE FROM embeddings WHERE item_key = ?", (row.item_key,))
    cur = conn.execute(
        "INSERT INTO embeddings (item_key, study_uid, series_uid, sop_instance_uid, kind, modality, label, box, "
        "model_name, model_version, dim, vector, source_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "RETURNING id",
        (row.item_key, row.study_uid, row.series_uid, row.sop_instance_uid, row.kind, row.modality, row.label,
         json.dumps(list(row.box)) if row.box is not None else None, row.model_name, row.model_version,
         int(row.vector.shape[0]), to_blob(row.vector), row.source_key, time.time()))
    return returned_id(cur)


def rows_for(db: Database, study_uid: str) -> list[dict[str, Any]]:
    """Stored rows of one study (without vectors)."""
    return [dict(r) for r in db.query(
        "SELECT id, item_key, kind, series_uid, sop_instance_uid, modality, label, box, model_name, model_version, "
        "source_key FROM embeddings WHERE study_uid = ? ORDER BY id", (study_uid,))]


def vector_of(db: Database, row_id: int) -> np.ndarray:
    r = db.query("SELECT vector, dim FROM embeddings WHERE id = ?", (row_id,))
    if not r:
        raise EmbeddingStoreError(f"no embedding row {row_id}")
    return from_blob(r[0]["vector"], r[0]["dim"])


def _sha(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def _finding_items(data: dict[str, Any]) -> list[dict[str, Any]]:
    if "label" in data:
        return [data]
    return [f for f in data.get("findings", []) if isinstance(f, dict)]


def study_findings(db: Database, study_uid: str) -> list[dict[str, Any]]:
    """The study's current AI findings (parsed ``findings`` rows, each with its task)."""
    out = []
    for r in db.query("SELECT kind, data FROM findings WHERE study_uid = ? ORDER BY id", (study_uid,)):
        try:
            data = json.loads(r["data"] or "{}")
        except json.JSONDecodeError:
            continue
        for f in _finding_items(data):
            out.append({**f, "task": r["kind"]})
    return out


class StudyIndexer:
    """Computes a study's embeddings, stores them and updates the ANN index.

    Embedders are loaded on first use and shared by threads (ONNX Runtime sessions are
    thread-safe).  A missing chest X-ray model only disables the radiograph vectors.

    Parameters
    ----------
    root : path
        Archive root (files under ``<root>/dicom``, ANN files under ``<root>/index``).
    db : Database
    threads : int, optional
        ONNX Runtime intra-op threads.
    """

    def __init__(self, root: Path, db: Database, threads: int | None = None) -> None:
        self.root = Path(root)
        self.db = db
        self.threads = threads
        self._lock = threading.Lock()
        self._cxr: Any = None
        self._cxr_error: str | None = None
        self._ct: Any = None
        ensure_schema(db)

    # ------------------------------------------------------------ embedders
    def cxr(self) -> Any:
        """The chest X-ray embedder, or ``None`` when no model is installed (logged once)."""
        with self._lock:
            if self._cxr is None and self._cxr_error is None:
                from models.embedding import CxrEmbedder, EmbeddingError

                try:
                    self._cxr = CxrEmbedder(threads=self.threads)
                except EmbeddingError as e:
                    self._cxr_error = str(e)
                    logger.warning("radiograph embeddings disabled: %s", e)
            return self._cxr

    def ct(self) -> Any:
        if self._ct is None:
            from models.embedding import CtDescriptor

            self._ct = CtDescriptor()
        return self._ct

    # ------------------------------------------------------------ the hook
    def after_job(self, job: Any) -> None:
        """Analysis hook: index the job's study; never raises (a failure is logged).

        Env ``MEDWS_EMBEDDINGS=0`` switches it off."""
        if os.environ.get("MEDWS_EMBEDDINGS", "1").strip() == "0":
            return
        try:
            self.index_study(job.study_uid)
        except Exception as e:  # noqa: BLE001 - retrieval must never fail an analysis job
            logger.warning("embeddings of study %s not updated: %s: %s", phi(job.study_uid), type(e).__name__, e)
            logger.debug("embedding failure", exc_info=True)

    def index_study(self, study_uid: str) -> dict[str, int]:
        """Compute missing/outdated vectors of a study, drop stale ones, update the index.

        Returns counts ``{"added": n, "kept": n, "removed": n, "failed": n}``.
        """
        from dicom_node.similarity import SimilarityIndex

        exists = self.db.query("SELECT 1 FROM studies WHERE study_uid = ?", (study_uid,))
        wanted: list[EmbeddingRow | tuple[str, str]] = [] if not exists else self._plan(study_uid)
        have = {r["item_key"]: r for r in rows_for(self.db, study_uid)}
        counts = {"added": 0, "kept": 0, "removed": 0, "failed": 0}
        new_rows: list[EmbeddingRow] = []
        keep: set[str] = set()
        for item in wanted:
            key, source_key, compute = item  # type: ignore[misc]
            keep.add(key)
            if key in have and have[key]["source_key"] == source_key:
                counts["kept"] += 1
                continue
            try:
                new_rows.append(compute())
            except Exception as e:  # noqa: BLE001 - one unreadable image must not stop the rest
                counts["failed"] += 1
                keep.discard(key)
                logger.warning("embedding of one item of study %s failed: %s: %s", phi(study_uid),
                               type(e).__name__, e)
        stale = [r for k, r in have.items() if k not in keep]
        touched: set[Space] = {Space(r["kind"], r["model_name"], r["model_version"]) for r in stale}
        touched |= {r.space for r in new_rows}
        with self.db.transaction() as conn:
            for r in stale:
                conn.execute("DELETE FROM embeddings WHERE id = ?", (r["id"],))
            for r in new_rows:
                r.id = upsert(conn, r)
        counts["added"], counts["removed"] = len(new_rows), len(stale)
        if touched:
            SimilarityIndex(self.root, self.db).sync(touched)
        logger.info("study %s embeddings: %s", phi(study_uid), counts)
        return counts

    def remove_study(self, study_uid: str) -> int:
        """Delete a study's vectors (e.g. the study was deleted) and update the index."""
        from dicom_node.similarity import SimilarityIndex

        rows = rows_for(self.db, study_uid)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM embeddings WHERE study_uid = ?", (study_uid,))
        if rows:
            SimilarityIndex(self.root, self.db).sync({Space(r["kind"], r["model_name"], r["model_version"])
                                                      for r in rows})
        return len(rows)

    # ------------------------------------------------------------ planning
    def _plan(self, study_uid: str) -> list[tuple[str, str, Any]]:
        """(item key, source key, compute()) for every vector the study should have."""
        rows = self.db.query(
            "SELECT i.sop_instance_uid, i.series_uid, i.sha256, i.path, se.modality FROM instances i "
            "LEFT JOIN series se ON se.series_uid = i.series_uid WHERE i.study_uid = ? "
            "AND COALESCE(i.source_ae, '') != ? ORDER BY i.series_uid, i.instance_number, i.sop_instance_uid",
            (study_uid, AI_SOURCE_AE))
        plan: list[tuple[str, str, Any]] = []
        by_sop = {r["sop_instance_uid"]: dict(r) for r in rows}
        cxr = self.cxr() if any((r["modality"] or "") in RADIOGRAPH_MODALITIES for r in rows) else None
        ct_series: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            mod = (r["modality"] or "").upper()
            if mod in RADIOGRAPH_MODALITIES and cxr is not None:
                m = cxr.model
                plan.append((item_key(CXR_IMAGE, study_uid, r["series_uid"], r["sop_instance_uid"]),
                             _sha(r["sha256"], m.name, m.version),
                             lambda r=dict(r), m=m: self._cxr_image(study_uid, r, m)))
            elif mod == "CT":
                ct_series.setdefault(r["series_uid"], []).append(dict(r))
        ct_model = self.ct().model
        for series_uid, insts in ct_series.items():
            if len(insts) < 2:
                continue
            plan.append((item_key(CT_SERIES, study_uid, series_uid),
                         _sha(*sorted(i["sha256"] for i in insts), ct_model.name, ct_model.version),
                         lambda s=series_uid, i=insts: self._ct_series(study_uid, s, i)))
        for n, f in enumerate(study_findings(self.db, study_uid)):
            box = f.get("box")
            sop = (f.get("image") or {}).get("sop_instance_uid", "")
            inst = by_sop.get(sop)
            if not box or inst is None:
                continue
            mod = (inst["modality"] or "").upper()
            ident = f.get("tracking_uid") or f"{f['task']}-{n}"
            if mod in RADIOGRAPH_MODALITIES and cxr is not None:
                kind, m = CXR_REGION, cxr.model
            elif mod == "CT":
                kind, m = CT_REGION, ct_model
            else:
                continue
            plan.append((item_key(kind, study_uid, inst["series_uid"], sop, ident),
                         _sha(inst["sha256"], json.dumps(box), f.get("label"), m.name, m.version),
                         lambda f=f, inst=inst, kind=kind, ident=ident: self._region(study_uid, f, inst, kind, ident)))
        return plan

    # ------------------------------------------------------------ computing
    def _abs(self, rel: str) -> Path:
        return self.root / rel

    def _cxr_image(self, study_uid: str, inst: dict[str, Any], m: Any) -> EmbeddingRow:
        from models.imaging import load_radiograph

        rad = load_radiograph(self._abs(inst["path"]))
        v = self._cxr.embed(rad.pixels)
        return EmbeddingRow(item_key(CXR_IMAGE, study_uid, inst["series_uid"], inst["sop_instance_uid"]),
                            study_uid, CXR_IMAGE, m.name, m.version, v, _sha(inst["sha256"], m.name, m.version),
                            inst["series_uid"], inst["sop_instance_uid"], inst["modality"] or "")

    def _ct_series(self, study_uid: str, series_uid: str, insts: list[dict[str, Any]]) -> EmbeddingRow:
        from models.ct.volume import load_series

        vol = load_series([self._abs(i["path"]) for i in insts], series_uid=series_uid)
        ct = self.ct()
        v = ct.embed(vol.hu)
        m = ct.model
        mid = insts[len(insts) // 2]["sop_instance_uid"]
        return EmbeddingRow(item_key(CT_SERIES, study_uid, series_uid), study_uid, CT_SERIES, m.name, m.version, v,
                            _sha(*sorted(i["sha256"] for i in insts), m.name, m.version), series_uid, mid, "CT")

    def _region(self, study_uid: str, f: dict[str, Any], inst: dict[str, Any], kind: str, ident: str) -> EmbeddingRow:
        box = tuple(float(b) for b in f["box"])
        if kind == CXR_REGION:
            from models.imaging import load_radiograph

            pixels = load_radiograph(self._abs(inst["path"])).pixels
            v, m = self._cxr.embed_region(pixels, box), self._cxr.model
        else:
            import pydicom

            ds = pydicom.dcmread(self._abs(inst["path"]))
            hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
                getattr(ds, "RescaleIntercept", 0) or 0)
            ct = self.ct()
            v, m = ct.embed_crop(hu, box), ct.model
        return EmbeddingRow(item_key(kind, study_uid, inst["series_uid"], inst["sop_instance_uid"], ident),
                            study_uid, kind, m.name, m.version, v,
                            _sha(inst["sha256"], json.dumps(f["box"]), f.get("label"), m.name, m.version),
                            inst["series_uid"], inst["sop_instance_uid"], inst["modality"] or "",
                            str(f.get("label") or ""), box)
