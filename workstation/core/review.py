"""Findings review state: accept, reject, edit outline/box, add by hand.

Pure state over plain data.  Every change returns a :class:`Decision` that records who,
when, what was done and what the AI originally said; the caller persists and audits it
(:mod:`workstation.core.store`).  Radiologists' decisions flow back as labels.
"""
from __future__ import annotations

import copy
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

logger = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("pending", "accepted", "rejected")
ACTIONS: tuple[str, ...] = ("accept", "reject", "edit", "add", "reset")


class ReviewError(ValueError):
    """An invalid review action (unknown finding, empty outline, ...)."""


@dataclass
class ReviewItem:
    """One finding as reviewed.  ``ai`` is a frozen copy of what the AI reported (empty if added by hand)."""

    id: str
    label: str
    probability: float | None = None
    box: list[float] | None = None  # [x1, y1, x2, y2] image pixels
    contour: list[list[float]] | None = None  # [[x, y], ...] image pixels
    laterality: str | None = None
    zone: str | None = None
    size_mm: float | None = None
    model_name: str = ""
    model_version: str = ""
    source: str = "ai"  # "ai" | "manual"
    status: str = "pending"
    sop_uid: str = ""
    frame: int = 0  # slice index within the series (CT)
    heatmap_key: str = ""  # name of a probability map held by the study, if any
    seg_key: str = ""  # name of a SEG mask held by the study, if any
    ai: dict[str, Any] = field(default_factory=dict)
    number: int = 0

    @property
    def ref(self) -> str:
        return f"#{self.number}"

    def geometry(self) -> dict[str, Any]:
        return {"box": self.box, "contour": self.contour, "laterality": self.laterality, "size_mm": self.size_mm}

    def centre(self) -> tuple[float, float] | None:
        if self.box:
            return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0
        if self.contour:
            xs = [p[0] for p in self.contour]
            ys = [p[1] for p in self.contour]
            return (min(xs) + max(xs)) / 2.0, (min(ys) + max(ys)) / 2.0
        return None


@dataclass(frozen=True)
class Decision:
    """A stored and audited review decision."""

    finding_id: str
    action: str
    user: str
    at: str
    ai: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def size_from_geometry(box: Sequence[float] | None, contour: Sequence[Sequence[float]] | None,
                       spacing: tuple[float, float] | None) -> float | None:
    """Largest extent in mm of a box or outline (bounding box of the outline), PixelSpacing order (row, col)."""
    if spacing is None:
        return None
    if contour:
        xs = [p[0] for p in contour]
        ys = [p[1] for p in contour]
        box = [min(xs), min(ys), max(xs), max(ys)]
    if not box:
        return None
    w = abs(box[2] - box[0]) * float(spacing[1])
    h = abs(box[3] - box[1]) * float(spacing[0])
    return round(max(w, h), 1)


def laterality_from_position(x: float, cols: int, edge_labels: dict[str, str] | None) -> str | None:
    """Patient side of an image column from the edge labels (PA chest: image right is patient left)."""
    if not edge_labels:
        return None
    half = "right" if x >= cols / 2.0 else "left"
    edge = edge_labels.get(half, "")
    if edge.startswith("L"):
        return "left"
    if edge.startswith("R"):
        return "right"
    return None


def item_from_finding(f: dict[str, Any], number: int, spacing: tuple[float, float] | None = None,
                      model: dict[str, Any] | None = None) -> ReviewItem:
    """A pending review item from one ``findings[]`` entry of the ``medws infer cxr --json`` contract.

    The finding's own ``model`` (e.g. ``cxr-nodule`` for a nodule/mass read on the fine grid)
    wins over the result's ``model``, so the panel and the signed SR name the model that
    produced each finding."""
    model = f.get("model") or model or {}
    box = [float(v) for v in f["box"]] if f.get("box") else None
    contour = [[float(p[0]), float(p[1])] for p in f["contour"]] if f.get("contour") else None
    size = f.get("size_mm") or f.get("long_axis_mm")
    if size is None:
        size = size_from_geometry(box, contour, spacing)
    item = ReviewItem(
        id=str(f.get("id") or uuid.uuid4().hex), label=str(f["label"]),
        probability=float(f["probability"]) if f.get("probability") is not None else None,
        box=box, contour=contour, laterality=f.get("laterality"), zone=f.get("zone"), size_mm=size,
        model_name=str(model.get("name", "")), model_version=str(model.get("version", "")),
        source=str(f.get("source", "ai")), status=str(f.get("status", "pending")),
        sop_uid=str(f.get("sop_uid", "")), frame=int(f.get("frame", 0)),
        heatmap_key=str(f.get("heatmap_key", "")), seg_key=str(f.get("seg_key", "")), number=number)
    item.ai = {k: copy.deepcopy(v) for k, v in f.items() if k not in ("status",)} if item.source == "ai" else {}
    if item.source == "ai":
        item.ai.setdefault("model", dict(model))
    return item


class ReviewState:
    """The findings of one study under review, with change listeners."""

    def __init__(self, items: Sequence[ReviewItem], spacing: tuple[float, float] | None = None) -> None:
        self.items: list[ReviewItem] = list(items)
        for i, it in enumerate(self.items, 1):
            if not it.number:
                it.number = i
        self.spacing = spacing
        self.decisions: list[Decision] = []
        self.heatmaps: dict[str, object] = {}  # finding id → probability map (numpy, any resolution)
        self.segs: dict[str, object] = {}  # finding id → binary mask (numpy, 2-D or per-slice 3-D)
        # finding id → SOP Instance UID → 2-D mask: a CT finding's mask on the slices it lies on,
        # aligned to its series once the images are loaded (workstation.core.study.align_plane_masks)
        self.seg_planes: dict[str, dict[str, object]] = {}
        self._listeners: list[Callable[[Decision], None]] = []

    def subscribe(self, fn: Callable[[Decision], None]) -> None:
        self._listeners.append(fn)

    def get(self, finding_id: str) -> ReviewItem:
        for it in self.items:
            if it.id == finding_id:
                return it
        raise ReviewError(f"no finding with id {finding_id!r} in this study")

    def _record(self, item: ReviewItem, action: str, user: str, before: dict[str, Any]) -> Decision:
        after = {"status": item.status, **item.geometry(), "label": item.label}
        d = Decision(item.id, action, user, _now(), copy.deepcopy(item.ai), before, after)
        self.decisions.append(d)
        for fn in list(self._listeners):
            fn(d)
        return d

    def _before(self, item: ReviewItem) -> dict[str, Any]:
        return {"status": item.status, **copy.deepcopy(item.geometry()), "label": item.label}

    def accept(self, finding_id: str, user: str) -> Decision:
        it = self.get(finding_id)
        before = self._before(it)
        it.status = "accepted"
        return self._record(it, "accept", user, before)

    def reject(self, finding_id: str, user: str) -> Decision:
        it = self.get(finding_id)
        before = self._before(it)
        it.status = "rejected"
        return self._record(it, "reject", user, before)

    def reset(self, finding_id: str, user: str) -> Decision:
        it = self.get(finding_id)
        before = self._before(it)
        it.status = "pending"
        return self._record(it, "reset", user, before)

    def edit(self, finding_id: str, user: str, *, box: Sequence[float] | None = None,
             contour: Sequence[Sequence[float]] | None = None, laterality: str | None = None,
             label: str | None = None) -> Decision:
        """Change outline/box (or side/label); an edited finding counts as accepted."""
        it = self.get(finding_id)
        before = self._before(it)
        if box is not None:
            b = [float(v) for v in box]
            if len(b) != 4 or not all(math.isfinite(v) for v in b) or b[2] <= b[0] or b[3] <= b[1]:
                raise ReviewError(f"box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {list(box)}")
            it.box = b
            if contour is None:
                it.contour = None
        if contour is not None:
            c = [[float(p[0]), float(p[1])] for p in contour]
            if len(c) < 3:
                raise ReviewError("an outline needs at least 3 points")
            it.contour = c
            xs, ys = [p[0] for p in c], [p[1] for p in c]
            it.box = [min(xs), min(ys), max(xs), max(ys)]
        if laterality is not None:
            it.laterality = laterality
        if label is not None:
            it.label = label
        it.size_mm = size_from_geometry(it.box, it.contour, self.spacing)
        it.status = "accepted"
        return self._record(it, "edit", user, before)

    def add(self, user: str, label: str, *, box: Sequence[float] | None = None,
            contour: Sequence[Sequence[float]] | None = None, laterality: str | None = None,
            sop_uid: str = "", frame: int = 0, finding_id: str | None = None) -> Decision:
        """A finding added by hand (accepted, no AI record)."""
        if box is None and not contour:
            raise ReviewError("a finding added by hand needs a box or an outline")
        it = ReviewItem(id=finding_id or uuid.uuid4().hex, label=label, source="manual", status="accepted",
                        laterality=laterality, sop_uid=sop_uid, frame=frame,
                        number=max((i.number for i in self.items), default=0) + 1)
        self.items.append(it)
        before: dict[str, Any] = {}
        try:
            if contour:
                it.contour = [[float(p[0]), float(p[1])] for p in contour]
                xs, ys = [p[0] for p in it.contour], [p[1] for p in it.contour]
                it.box = [min(xs), min(ys), max(xs), max(ys)]
            else:
                it.box = [float(v) for v in box]  # type: ignore[union-attr]
            it.size_mm = size_from_geometry(it.box, it.contour, self.spacing)
        except Exception:
            self.items.remove(it)
            raise
        return self._record(it, "add", user, before)

    def accepted(self) -> list[ReviewItem]:
        return [i for i in self.items if i.status == "accepted"]
