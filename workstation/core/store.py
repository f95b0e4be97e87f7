"""The workstation's view of the node's archive and index (Qt-free).

Reads and writes through :mod:`dicom_node` (``Database``, ``Archive``, ``Audit``) and the
index tables it defines.  What the workstation relies on:

* ``findings``: one row per analysis result, ``data`` = ``AnalysisResult.to_json()``
  (the ``medws infer cxr --json`` object plus ``source``/``tracking_uid``); a row whose
  ``data`` is a single finding object (has ``label``) is accepted too.
* ``reports``: ``state`` ``draft`` (pipeline draft; ``body`` = text, or JSON
  ``{"text", "language", ...}``) and ``signed`` (frozen text, ``author``, ``signed_at``).
* ``finding_reviews`` (created here, owned by the workstation): the current review state
  of each finding (``tracking_uid``), including findings added by hand.
* ``audit``: every decision (``finding.accept|reject|edit|add|reset``), report edits,
  sign and addendum events, with who, when and what the AI said.
"""
from __future__ import annotations

import json
import logging
import time

import pydicom
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.archive import Archive
from dicom_node.audit import Audit
from dicom_node.config import NodeConfig, load_config
from dicom_node.db import Database, returned_id
from dicom_node.findings import FindingFormatError, decode_mask

from workstation.core import worklist
from workstation.core.review import Decision, ReviewItem, ReviewState, item_from_finding

logger = logging.getLogger(__name__)

_REVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS finding_reviews (
    study_uid TEXT NOT NULL,
    tracking_uid TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'ai',
    data TEXT NOT NULL,
    reviewer TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (study_uid, tracking_uid)
)"""
_PRIORITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS study_priority (
    study_uid TEXT PRIMARY KEY,
    priority TEXT NOT NULL,
    checked_at DOUBLE PRECISION NOT NULL
)"""


class StoreError(Exception):
    """The archive/index could not answer a workstation request."""


@dataclass
class ReportRecord:
    text: str
    language: str
    state: str  # "draft" | "signed" | "none"
    report_id: int | None
    author: str = ""
    signed_at: float | None = None


class ReadingStore:
    """Archive + index access for the workstation."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.root = config.root
        self.db = Database(config.database_url, root=config.root)
        self.db.init_schema()
        self.db.execute(_REVIEW_SCHEMA)
        self.db.execute(_PRIORITY_SCHEMA)
        self.audit = Audit(self.db)
        self.archive = Archive(config, self.db, self.audit)

    @classmethod
    def open(cls, root: str | Path | None = None) -> ReadingStore:
        return cls(load_config(root))

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- worklist
    def worklist(self, text: str = "", status: str | None = None, modality: str | None = None) -> list[worklist.WorklistRow]:
        return worklist.query(self.db, text, status, modality, pacs_priority=self.pacs_priorities())

    def pacs_priorities(self) -> dict[str, str]:
        """Study UID → PACS priority, read once per study from the header of one of its images (cached)."""
        missing = self.db.query(
            "SELECT s.study_uid, MIN(i.path) AS path FROM studies s JOIN instances i ON i.study_uid = s.study_uid "
            "WHERE s.study_uid NOT IN (SELECT study_uid FROM study_priority) GROUP BY s.study_uid")
        for r in missing:
            try:
                ds = pydicom.dcmread(self.archive.absolute(r["path"]), stop_before_pixels=True,
                                     specific_tags=["RequestAttributesSequence", "RequestedProcedurePriority",
                                                    "StudyPriorityID"])
                prio = worklist.priority_from_header(ds)
            except Exception as e:  # noqa: BLE001 - an unreadable header means "routine", logged
                logger.warning("priority of a study not readable (%s); routine", type(e).__name__)
                prio = ""
            self.db.execute("INSERT INTO study_priority (study_uid, priority, checked_at) VALUES (?, ?, ?) "
                            "ON CONFLICT (study_uid) DO NOTHING", (r["study_uid"], prio, time.time()))
        return {r["study_uid"]: r["priority"] for r in self.db.query("SELECT study_uid, priority FROM study_priority")}

    def study_paths(self, study_uid: str) -> list[Path]:
        paths = self.archive.study_paths(study_uid)
        if not paths:
            raise StoreError(f"study {study_uid} is not in the archive")
        return paths

    # ---------------------------------------------------------------- findings
    def analysis_results(self, study_uid: str) -> list[dict[str, Any]]:
        out = []
        for r in self.db.query("SELECT id, kind, model_name, model_version, data FROM findings WHERE study_uid = ? "
                               "ORDER BY id", (study_uid,)):
            try:
                data = json.loads(r["data"] or "{}")
            except json.JSONDecodeError:
                logger.warning("findings row %s is not JSON; ignored", r["id"])
                continue
            if "label" in data:  # a single finding per row
                data = {"findings": [data], "model": {"name": r["model_name"] or "", "version": r["model_version"] or ""}}
            data.setdefault("model", {"name": r["model_name"] or "", "version": r["model_version"] or ""})
            out.append(data)
        return out

    def review_state(self, study_uid: str, spacing_for: Any = None) -> ReviewState:
        """AI findings of the study merged with their stored review state (and hand-added findings).

        ``spacing_for(sop_uid)`` returns the pixel spacing of an image (for sizes in mm).
        """
        items: list[ReviewItem] = []
        masks_seg: dict[str, Any] = {}
        masks_heat: dict[str, Any] = {}
        planes_by_item: dict[str, dict[str, Any]] = {}
        n = 0
        for res in self.analysis_results(study_uid):
            src = (res.get("source") or {}).get("sop_instance_uid", "")
            for f in res.get("findings", []):
                n += 1
                f = dict(f)
                f.setdefault("id", f.get("tracking_uid") or f"{study_uid}-{n}")
                img = f.get("image") or {}
                f["sop_uid"] = img.get("sop_instance_uid") or src
                spacing = spacing_for(f["sop_uid"]) if spacing_for else None
                mask = f.pop("mask", None)
                item = item_from_finding(f, n, spacing, res.get("model"))
                if mask is not None:
                    try:
                        arr = decode_mask(mask)
                    except FindingFormatError as e:
                        logger.warning("finding %s: mask ignored (%s)", item.ref, e)
                    else:
                        refs = f.get("mask_images") or []
                        if arr.ndim == 3 and len(refs) == arr.shape[0]:
                            # a CT finding: one plane per referenced slice, aligned to the series later
                            planes_by_item[item.id] = {str(r.get("sop_instance_uid", "")): arr[i]
                                                       for i, r in enumerate(refs)}
                        elif arr.dtype == bool:
                            masks_seg[item.id] = arr
                            item.seg_key = item.id
                        else:
                            masks_heat[item.id] = arr
                            item.heatmap_key = item.id
                items.append(item)
        by_id = {it.id: it for it in items}
        for r in self.db.query("SELECT * FROM finding_reviews WHERE study_uid = ? ORDER BY updated_at",
                               (study_uid,)):
            data = json.loads(r["data"])
            it = by_id.get(r["tracking_uid"])
            if it is None:
                if r["source"] != "manual":
                    continue
                n += 1
                it = ReviewItem(id=r["tracking_uid"], label=data["label"], source="manual", number=n)
                items.append(it)
                by_id[it.id] = it
            it.status = r["status"]
            for k in ("box", "contour", "laterality", "size_mm", "label", "sop_uid", "frame"):
                if k in data and data[k] is not None:
                    setattr(it, k, data[k])
        state = ReviewState(items)
        state.heatmaps, state.segs, state.seg_planes = masks_heat, masks_seg, planes_by_item
        return state

    def save_decision(self, study_uid: str, d: Decision, item: ReviewItem) -> None:
        """Persist the finding's new state and audit the decision (one transaction)."""
        data = {"label": item.label, "box": item.box, "contour": item.contour, "laterality": item.laterality,
                "size_mm": item.size_mm, "sop_uid": item.sop_uid, "frame": item.frame}
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO finding_reviews (study_uid, tracking_uid, status, source, data, reviewer, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (study_uid, tracking_uid) DO UPDATE SET "
                "status = excluded.status, data = excluded.data, reviewer = excluded.reviewer, "
                "updated_at = excluded.updated_at",
                (study_uid, item.id, item.status, item.source, json.dumps(data), d.user, time.time()))
            self.audit.record(f"finding.{d.action}", d.user, conn=conn, study_uid=study_uid, finding=item.id,
                              label=item.label, at_client=d.at, ai=d.ai, before=d.before, after=d.after)

    # ---------------------------------------------------------------- reports
    def report(self, study_uid: str) -> ReportRecord:
        """The signed report if any, else the latest draft, else an empty record."""
        rows = self.db.query("SELECT * FROM reports WHERE study_uid = ? ORDER BY id DESC", (study_uid,))
        chosen = next((r for r in rows if r["state"] == "signed"), None) or (rows[0] if rows else None)
        if chosen is None:
            return ReportRecord("", "en", "none", None)
        text, lang = _decode_body(chosen["body"])
        return ReportRecord(text, lang, chosen["state"], chosen["id"], chosen["author"] or "", chosen["signed_at"])

    def save_draft_text(self, study_uid: str, text: str, user: str, language: str = "en") -> int:
        """Save the edited draft (creating the draft row if the pipeline wrote none); audited."""
        now = time.time()
        rows = self.db.query("SELECT id, state FROM reports WHERE study_uid = ? ORDER BY id DESC", (study_uid,))
        if any(r["state"] == "signed" for r in rows):
            raise StoreError("the report is signed; write an addendum instead")
        body = json.dumps({"text": text, "language": language})
        with self.db.transaction() as conn:
            if rows:
                rid = rows[0]["id"]
                conn.execute("UPDATE reports SET body = ?, author = ?, updated_at = ? WHERE id = ?",
                             (body, user, now, rid))
            else:
                cur = conn.execute("INSERT INTO reports (study_uid, state, body, author, created_at, updated_at) "
                                   "VALUES (?, 'draft', ?, ?, ?, ?) RETURNING id", (study_uid, body, user, now, now))
                rid = returned_id(cur)
            self.audit.record("report.edit", user, conn=conn, study_uid=study_uid, report_id=rid, chars=len(text))
        return int(rid)

    # ---------------------------------------------------------------- writing AI results (tests, demos)
    def put_analysis_result(self, study_uid: str, result: dict[str, Any], kind: str = "cxr",
                            job_id: int | None = None) -> int:
        """Store one analysis result (``AnalysisResult.to_json()`` form) in ``findings``.

        The analysis pipeline writes these rows; the workstation uses this for tests and demos.
        """
        model = result.get("model") or {}
        cur = self.db.execute(
            "INSERT INTO findings (study_uid, job_id, kind, model_name, model_version, data, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (study_uid, job_id, kind, model.get("name"), model.get("version"), json.dumps(result), time.time()))
        return returned_id(cur)

    def put_draft_report(self, study_uid: str, text: str, language: str = "en", author: str = "medws-ai") -> int:
        """Store a pipeline draft report (``reports`` row, state ``draft``)."""
        now = time.time()
        cur = self.db.execute("INSERT INTO reports (study_uid, state, body, author, created_at, updated_at) "
                              "VALUES (?, 'draft', ?, ?, ?, ?) RETURNING id",
                              (study_uid, json.dumps({"text": text, "language": language}, ensure_ascii=False),
                               author, now, now))
        return returned_id(cur)


def _decode_body(body: str | None) -> tuple[str, str]:
    if not body:
        return "", "en"
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return body, "en"
    if isinstance(obj, dict):
        text = obj.get("text") or obj.get("body") or ""
        if not text and ("findings" in obj or "impression" in obj):
            parts = []
            for key in ("findings", "impression"):
                v = obj.get(key)
                if isinstance(v, list):
                    v = "\n".join(str(x) for x in v)
                if v:
                    parts.append(f"{key.capitalize()}:\n{v}")
            text = "\n\n".join(parts)
        return str(text), str(obj.get("language", "en"))
    return str(obj), "en"
