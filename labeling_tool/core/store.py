"""The label store: annotations, image status and reviews in one SQLite file.

Every change is committed at once (WAL, ``synchronous=FULL``), so an application killed
at any moment loses nothing it had already shown as done.  Annotations are boxes,
polygons, brush masks (run-length encoded) and image-level labels, each owned by an
annotator.  Image status runs unlabelled -> in_progress -> labelled -> reviewed; a
reviewer approves (reviewed) or returns with a comment (back to in_progress).  Changes
to annotations are undoable (an in-memory undo/redo stack of before/after rows).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from labeling_tool.core.errors import StoreError

logger = logging.getLogger(__name__)

STATUSES = ("unlabelled", "in_progress", "labelled", "reviewed")
KINDS = ("box", "polygon", "mask", "label")
AI_STATES = ("proposed", "accepted", "edited", "rejected")
DECISIONS = ("approve", "return")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    patient_key TEXT NOT NULL DEFAULT '',
    study_uid TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'unlabelled',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(image_id),
    annotator TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    data TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'human',
    ai_state TEXT,
    model TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_image ON annotations(image_id);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id TEXT NOT NULL REFERENCES images(image_id),
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
"""


# -- run-length encoding of masks ----------------------------------------------------
def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary mask flattened row-major, starting with a run of 0s."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def rle_decode(counts: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`."""
    h, w = int(shape[0]), int(shape[1])
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    if flat.size != h * w:
        raise StoreError(f"mask run lengths cover {flat.size} pixels, expected {h * w}")
    return flat.reshape(h, w)


def disk_stroke(shape: Sequence[int], points: Iterable[Sequence[float]], radius: float) -> np.ndarray:
    """Pixels covered by a brush of ``radius`` dragged through ``points`` (x, y)."""
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=bool)
    pts = [(float(x), float(y)) for x, y in points]
    if not pts:
        return out
    dense = [pts[0]]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        n = max(1, int(np.hypot(x1 - x0, y1 - y0) / max(radius / 2, 0.5)))
        dense += [(x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n) for t in range(1, n + 1)]
    r = max(float(radius), 0.5)
    for cx, cy in dense:
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r
    return out


def polygon_mask(shape: Sequence[int], points: Sequence[Sequence[float]]) -> np.ndarray:
    """Rasterise a polygon of (x, y) vertices (pixel centres inside)."""
    from skimage.draw import polygon as _poly

    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=bool)
    if len(points) >= 3:
        xs = np.array([p[0] for p in points], dtype=float) - 0.5
        ys = np.array([p[1] for p in points], dtype=float) - 0.5
        rr, cc = _poly(ys, xs, shape=(h, w))
        out[rr, cc] = True
    return out


@dataclass(frozen=True)
class Annotation:
    """One annotation.

    ``data`` by kind: box ``{"x1","y1","x2","y2"}`` (pixel edges, x to the right);
    polygon ``{"points": [[x, y], ...]}``; mask ``{"shape": [h, w], "rle": [...]}``
    (:func:`rle_encode`); label ``{}`` (image-level).  ``source`` is ``human``, ``ai``
    (a pre-annotation proposal) or ``reader`` (a radiologist's decision imported from
    the workstation); ``ai_state`` tracks proposals: proposed/accepted/edited/rejected.
    """

    id: str
    image_id: str
    annotator: str
    kind: str
    label: str
    data: dict[str, Any]
    source: str = "human"
    ai_state: str | None = None
    model: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def mask(self) -> np.ndarray:
        if self.kind != "mask":
            raise StoreError(f"annotation {self.id} is a {self.kind}, not a mask")
        return rle_decode(self.data["rle"], self.data["shape"])

    def box(self) -> tuple[float, float, float, float]:
        d = self.data
        return float(d["x1"]), float(d["y1"]), float(d["x2"]), float(d["y2"])


def _validate(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    if kind not in KINDS:
        raise StoreError(f"unknown annotation kind {kind!r}; use one of {KINDS}")
    if kind == "box":
        try:
            x1, y1, x2, y2 = (float(data[k]) for k in ("x1", "y1", "x2", "y2"))
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError("a box needs numeric x1, y1, x2, y2") from e
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            raise StoreError("a box needs a non-zero width and height")
        return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
    if kind == "polygon":
        pts = [[float(x), float(y)] for x, y in data.get("points", [])]
        if len(pts) < 3:
            raise StoreError("a polygon needs at least 3 points")
        return {"points": pts}
    if kind == "mask":
        if "rle" not in data or "shape" not in data:
            raise StoreError("a mask needs shape and rle")
        return {"shape": [int(v) for v in data["shape"]], "rle": [int(v) for v in data["rle"]]}
    return {}


@dataclass
class _Change:
    rows: list[tuple[str, Annotation | None, Annotation | None]] = field(default_factory=list)


class LabelStore:
    """SQLite label store (beside the images of a folder, or in the archive root).

    Parameters
    ----------
    path
        The SQLite file; created when missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._undo: list[_Change] = []
        self._redo: list[_Change] = []
        self._listeners: list[Callable[[str, str], None]] = []

    @classmethod
    def open_for(cls, source) -> "LabelStore":
        """The store of an image source, with its images registered."""
        store = cls(source.store_path)
        store.sync_images(source.images())
        return store

    def close(self) -> None:
        self._db.close()

    # -- events --------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        """``callback(event, image_id)`` after each change (event: annotations/status/review)."""
        self._listeners.append(callback)

    def _emit(self, event: str, image_id: str) -> None:
        for cb in list(self._listeners):
            cb(event, image_id)

    # -- images --------------------------------------------------------------------
    def sync_images(self, refs: Iterable) -> int:
        """Register images not yet known (status unlabelled); returns how many were new."""
        now = time.time()
        before = self._db.total_changes
        with self._tx():
            for r in refs:
                self._db.execute(
                    "INSERT OR IGNORE INTO images(image_id, path, kind, patient_key, study_uid, status, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 'unlabelled', ?)",
                    (r.image_id, str(r.path), r.kind, r.patient_key, r.study_uid, now),
                )
        return self._db.total_changes - before

    def images(self, status: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM images", ()
        if status:
            sql, params = sql + " WHERE status = ?", (status,)
        return [dict(r) for r in self._db.execute(sql + " ORDER BY path", params)]

    def image(self, image_id: str) -> dict[str, Any]:
        row = self._db.execute("SELECT * FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"image {image_id} is not in this label store")
        return dict(row)

    def status(self, image_id: str) -> str:
        return self.image(image_id)["status"]

    def _set_status(self, image_id: str, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}")
        self._db.execute("UPDATE images SET status = ?, updated_at = ? WHERE image_id = ?", (status, time.time(), image_id))

    # -- annotations -------------------------------------------------------------------
    def annotations(self, image_id: str | None = None, annotator: str | None = None,
                    include_rejected: bool = True) -> list[Annotation]:
        sql, params = "SELECT * FROM annotations WHERE 1=1", []
        if image_id is not None:
            sql += " AND image_id = ?"
            params.append(image_id)
        if annotator is not None:
            sql += " AND annotator = ?"
            params.append(annotator)
        if not include_rejected:
            sql += " AND (ai_state IS NULL OR ai_state != 'rejected')"
        rows = self._db.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [self._row(r) for r in rows]

    def annotation(self, ann_id: str) -> Annotation:
        row = self._db.execute("SELECT * FROM annotations WHERE id = ?", (ann_id,)).fetchone()
        if row is None:
            raise StoreError(f"annotation {ann_id} does not exist")
        return self._row(row)

    @staticmethod
    def _row(r: sqlite3.Row) -> Annotation:
        return Annotation(r["id"], r["image_id"], r["annotator"], r["kind"], r["label"], json.loads(r["data"]),
                          r["source"], r["ai_state"], r["model"], r["created_at"], r["updated_at"])

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    def _write(self, before: Annotation | None, after: Annotation | None) -> None:
        if after is None:
            assert before is not None
            self._db.execute("DELETE FROM annotations WHERE id = ?", (before.id,))
            return
        self._db.execute(
            "INSERT OR REPLACE INTO annotations(id, image_id, annotator, kind, label, data, source, ai_state, model, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (after.id, after.image_id, after.annotator, after.kind, after.label, json.dumps(after.data), after.source,
             after.ai_state, after.model, after.created_at, after.updated_at),
        )

    def _apply(self, change: _Change, record: bool = True) -> None:
        image_ids = set()
        with self._tx():
            for _id, before, after in change.rows:
                self._write(before, after)
                image_ids.add((after or before).image_id)  # type: ignore[union-attr]
            for image_id in image_ids:
                human = self._db.execute(
                    "SELECT COUNT(*) FROM annotations WHERE image_id = ? AND (source != 'ai' OR ai_state IN "
                    "('accepted', 'edited'))", (image_id,)
                ).fetchone()[0]
                if human and self.status(image_id) == "unlabelled":
                    self._set_status(image_id, "in_progress")
        if record:
            self._undo.append(change)
            self._redo.clear()
        for image_id in image_ids:
            self._emit("annotations", image_id)

    def add(self, image_id: str, annotator: str, kind: str, label: str, data: dict[str, Any] | None = None, *,
            source: str = "human", ai_state: str | None = None, model: str = "") -> Annotation:
        """Add an annotation (saved at once; undoable)."""
        self.image(image_id)
        if not annotator:
            raise StoreError("an annotation needs an annotator name")
        if ai_state is not None and ai_state not in AI_STATES:
            raise StoreError(f"unknown AI proposal state {ai_state!r}")
        now = time.time()
        ann = Annotation(uuid.uuid4().hex, image_id, annotator, kind, label, _validate(kind, data or {}), source,
                         ai_state, model, now, now)
        self._apply(_Change([(ann.id, None, ann)]))
        return ann

    def update(self, ann_id: str, *, data: dict[str, Any] | None = None, label: str | None = None,
               annotator: str | None = None, ai_state: str | None = None) -> Annotation:
        """Change an annotation; editing an AI proposal's geometry marks it ``edited``."""
        before = self.annotation(ann_id)
        changes: dict[str, Any] = {"updated_at": time.time()}
        if data is not None:
            changes["data"] = _validate(before.kind, data)
            if before.source == "ai" and ai_state is None:
                changes["ai_state"] = "edited"
        if label is not None:
            changes["label"] = label
            if before.source == "ai" and ai_state is None:
                changes["ai_state"] = "edited"
        if annotator is not None:
            changes["annotator"] = annotator
        if ai_state is not None:
            if ai_state not in AI_STATES:
                raise StoreError(f"unknown AI proposal state {ai_state!r}")
            changes["ai_state"] = ai_state
        after = replace(before, **changes)
        self._apply(_Change([(ann_id, before, after)]))
        return after

    def delete(self, ann_id: str) -> None:
        before = self.annotation(ann_id)
        self._apply(_Change([(ann_id, before, None)]))

    def set_image_label(self, image_id: str, annotator: str, label: str, present: bool = True) -> None:
        """Set or clear an image-level label of ``annotator``."""
        existing = [a for a in self.annotations(image_id, annotator) if a.kind == "label" and a.label == label]
        if present and not existing:
            self.add(image_id, annotator, "label", label)
        elif not present and existing:
            self._apply(_Change([(a.id, a, None) for a in existing]))

    def image_labels(self, image_id: str, annotator: str | None = None) -> set[str]:
        return {a.label for a in self.annotations(image_id, annotator, include_rejected=False) if a.kind == "label"}

    def paint(self, image_id: str, annotator: str, label: str, shape: Sequence[int],
              points: Iterable[Sequence[float]], radius: float, erase: bool = False) -> None:
        """One brush (or eraser) stroke through ``points``: one autosaved, undoable change.

        The brush adds to ``annotator``'s mask of ``label``; the eraser removes the
        stroke from every mask of ``annotator`` on the image.
        """
        stroke = disk_stroke(shape, points, radius)
        masks = [a for a in self.annotations(image_id, annotator) if a.kind == "mask"]
        now = time.time()
        change = _Change()
        if erase:
            for a in masks:
                m = a.mask() & ~stroke
                if m.any():
                    change.rows.append((a.id, a, replace(a, data={"shape": list(m.shape), "rle": rle_encode(m)},
                                                         updated_at=now)))
                else:
                    change.rows.append((a.id, a, None))
        else:
            own = [a for a in masks if a.label == label]
            if own:
                a = own[0]
                m = a.mask() | stroke
                after = replace(a, data={"shape": list(m.shape), "rle": rle_encode(m)}, updated_at=now,
                                ai_state="edited" if a.source == "ai" else a.ai_state)
                change.rows.append((a.id, a, after))
            elif stroke.any():
                self.image(image_id)
                ann = Annotation(uuid.uuid4().hex, image_id, annotator, "mask", label,
                                 {"shape": [int(shape[0]), int(shape[1])], "rle": rle_encode(stroke)}, created_at=now,
                                 updated_at=now)
                change.rows.append((ann.id, None, ann))
        if change.rows:
            self._apply(change)

    # -- undo / redo ---------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        change = self._undo.pop()
        self._apply(_Change([(i, after, before) for i, before, after in reversed(change.rows)]), record=False)
        self._redo.append(change)
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        change = self._redo.pop()
        self._apply(change, record=False)
        self._undo.append(change)
        return True

    # -- workflow ------------------------------------------------------------------------
    def mark_labelled(self, image_id: str, annotator: str) -> None:
        """The annotator declares the image done (status ``labelled``)."""
        if not self.annotations(image_id, annotator, include_rejected=False):
            raise StoreError("nothing labelled yet: add an annotation or an image label (e.g. normal) first")
        with self._tx():
            self._set_status(image_id, "labelled")
        self._emit("status", image_id)

    def review(self, image_id: str, reviewer: str, decision: str, comment: str = "") -> None:
        """Approve (status ``reviewed``) or return with a comment (back to ``in_progress``)."""
        if decision not in DECISIONS:
            raise StoreError(f"review decision must be one of {DECISIONS}")
        if not reviewer:
            raise StoreError("a review needs the reviewer's name")
        if decision == "return" and not comment.strip():
            raise StoreError("returning an image needs a comment saying what to fix")
        if self.status(image_id) not in ("labelled", "reviewed"):
            raise StoreError("only labelled images can be reviewed")
        with self._tx():
            self._db.execute("INSERT INTO reviews(image_id, reviewer, decision, comment, at) VALUES (?, ?, ?, ?, ?)",
                             (image_id, reviewer, decision, comment, time.time()))
            self._set_status(image_id, "reviewed" if decision == "approve" else "in_progress")
        self._emit("review", image_id)

    def reviews(self, image_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM reviews WHERE image_id = ? ORDER BY id", (image_id,)).fetchall()
        return [dict(r) for r in rows]

    def annotators(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT annotator FROM annotations WHERE source != 'ai' ORDER BY annotator")
        return [r[0] for r in rows]
