"""AI pre-annotation and radiologists' decisions flowing back as labels.

A model's findings become editable *proposals* (``source='ai'``) tracked through
proposed -> accepted / edited / rejected.  Accept/reject/edit decisions made by
radiologists in the workstation are imported as labels (``source='reader'``).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labeling_tool.core.errors import StoreError
from labeling_tool.core.store import Annotation, LabelStore

logger = logging.getLogger(__name__)

AI_ANNOTATOR = "ai"

#: a predictor maps display pixels to findings in the ``medws infer cxr`` dict format:
#: ``{"label", "probability", "box": [x1, y1, x2, y2], "contour": [[x, y], ...]}``
Predictor = Callable[[np.ndarray], list[Mapping[str, Any]]]


def findings_to_proposals(findings: Iterable[Mapping[str, Any]], min_probability: float = 0.0) -> list[dict]:
    """Proposals (kind, label, data, score) from model findings: a box and, when the
    finding has a contour, a polygon."""
    out = []
    for f in findings:
        p = float(f.get("probability", 1.0))
        if p < min_probability:
            continue
        if f.get("box"):
            x1, y1, x2, y2 = (float(v) for v in f["box"])
            out.append({"kind": "box", "label": f["label"], "data": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "score": p})
        if f.get("contour") and len(f["contour"]) >= 3:
            out.append({"kind": "polygon", "label": f["label"], "data": {"points": f["contour"]}, "score": p})
    return out


def propose(store: LabelStore, image_id: str, proposals: Iterable[Mapping[str, Any]], model: str) -> list[Annotation]:
    """Store proposals of ``model`` (``name@version``) on an image, replacing its open ones."""
    for a in store.annotations(image_id, AI_ANNOTATOR):
        if a.ai_state == "proposed" and a.model == model:
            store.delete(a.id)
    return [store.add(image_id, AI_ANNOTATOR, p["kind"], p["label"], p["data"], source="ai", ai_state="proposed",
                      model=model) for p in proposals]


def preannotate(store: LabelStore, image_id: str, pixels: np.ndarray, predictor: Predictor, model: str,
                min_probability: float = 0.5) -> list[Annotation]:
    """Run ``predictor`` on an image and store its findings as proposals."""
    return propose(store, image_id, findings_to_proposals(predictor(pixels), min_probability), model)


def accept(store: LabelStore, ann_id: str, annotator: str) -> Annotation:
    """The annotator takes the proposal as it is."""
    _proposal(store, ann_id)
    return store.update(ann_id, annotator=annotator, ai_state="accepted")


def reject(store: LabelStore, ann_id: str, annotator: str) -> Annotation:
    """The annotator rejects the proposal (kept for statistics, never exported)."""
    _proposal(store, ann_id)
    return store.update(ann_id, annotator=annotator, ai_state="rejected")


def edit(store: LabelStore, ann_id: str, annotator: str, data: Mapping[str, Any] | None = None,
         label: str | None = None) -> Annotation:
    """The annotator changes the proposal's geometry or class (state ``edited``)."""
    _proposal(store, ann_id)
    return store.update(ann_id, annotator=annotator, data=dict(data) if data is not None else None, label=label,
                        ai_state="edited")


def _proposal(store: LabelStore, ann_id: str) -> Annotation:
    a = store.annotation(ann_id)
    if a.source != "ai":
        raise StoreError(f"annotation {ann_id} is not an AI proposal")
    return a


def proposal_stats(store: LabelStore, model: str | None = None) -> dict[str, int]:
    """How many proposals are proposed / accepted / edited / rejected."""
    counts = Counter(a.ai_state for a in store.annotations() if a.source == "ai" and (model is None or a.model == model))
    return {s: counts.get(s, 0) for s in ("proposed", "accepted", "edited", "rejected")}


def import_reader_decisions(store: LabelStore, records: Iterable[Mapping[str, Any]] | str | os.PathLike) -> int:
    """Import radiologists' decisions from the workstation as labels.

    ``records`` (or a JSON / JSON-lines file of them): ``{"sop_instance_uid", "label",
    "decision": accepted|rejected|edited, "reader", "box": [x1, y1, x2, y2]?,
    "model": "name@version"?}``.  Accepted and edited findings become the reader's
    labels (a box when given, else an image label); rejected ones are kept as rejected
    proposals, so they count as negatives in statistics and are never exported.
    Records for images not in this store are skipped.  Returns how many were imported.
    """
    if isinstance(records, (str, os.PathLike)):
        text = Path(records).read_text()
        stripped = text.lstrip()
        records = json.loads(text) if stripped.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    n = 0
    known = {r["image_id"] for r in store.images()}
    for r in records:
        image_id = str(r.get("sop_instance_uid") or r.get("image_id") or "")
        if image_id not in known:
            continue
        decision = str(r.get("decision", "")).lower()
        if decision not in ("accepted", "rejected", "edited"):
            raise StoreError(f"decision must be accepted, rejected or edited, not {decision!r}")
        reader = "reader:" + str(r.get("reader") or "unknown")
        box, contour = r.get("box"), r.get("contour")
        shapes = []
        if box:
            shapes.append(("box", dict(zip(("x1", "y1", "x2", "y2"), (float(v) for v in box)))))
        if contour and len(contour) >= 3:
            shapes.append(("polygon", {"points": [[float(x), float(y)] for x, y in contour]}))
        for kind, data in shapes or [("label", {})]:
            store.add(image_id, reader, kind, str(r["label"]), data, source="reader", ai_state=decision,
                      model=str(r.get("model", "")))
        n += 1
    return n


def workstation_decisions(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Radiologists' decisions recorded by the workstation in the archive's index.

    Reads ``finding_reviews`` (the workstation's review state per finding) and the audit
    trail (``finding.edit`` events) of the archive at ``root`` and returns records for
    :func:`import_reader_decisions`: accepted, edited (accepted after an edit) or rejected.
    Pending findings are left out.
    """
    from dicom_node.audit import Audit
    from dicom_node.config import load_config
    from dicom_node.db import Database

    from labeling_tool.core.errors import LabelingError

    config = load_config(root)
    db = Database(config.database_url, root=config.root)
    try:
        if not db.columns("finding_reviews"):
            raise LabelingError(f"the archive at {root} holds no workstation review decisions yet")
        rows = db.query("SELECT * FROM finding_reviews WHERE status IN ('accepted', 'rejected') ORDER BY updated_at")
        edited = {str(e.get("finding")) for e in Audit(db).events("finding.edit", limit=1_000_000)}
        out = []
        for r in rows:
            data = json.loads(r["data"])
            if r["status"] == "rejected":
                decision = "rejected"
            else:
                decision = "edited" if r["tracking_uid"] in edited else "accepted"
            out.append({"sop_instance_uid": data.get("sop_uid") or "", "label": data.get("label", ""),
                        "decision": decision, "reader": r["reviewer"] or "", "box": data.get("box"),
                        "contour": data.get("contour"), "source": r["source"]})
        return out
    finally:
        db.close()
