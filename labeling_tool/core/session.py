"""The labelling session: the state the Qt widgets read and write (no Qt here).

Widgets hold no state of their own: the current image, tool, class, brush size,
window/level, annotator and reviewer mode live here; every annotation lives in the
:class:`~labeling_tool.core.store.LabelStore`.  Listeners are told what changed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from labeling_tool.core.errors import LabelingError
from labeling_tool.core.schema import LabelSchema
from labeling_tool.core.sources import ImageRef, LoadedImage
from labeling_tool.core.store import LabelStore

logger = logging.getLogger(__name__)

TOOLS = ("box", "polygon", "brush", "eraser", "window")


def window_to_uint8(pixels: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Linear window/level (PS3.3 C.11.2.1.2, 'LINEAR') to 8-bit display values."""
    width = max(float(width), 1.0)
    lo = center - 0.5 - (width - 1) / 2
    out = np.clip((np.asarray(pixels, dtype=np.float32) - lo) / (width - 1), 0.0, 1.0)
    if invert:
        out = 1.0 - out
    return np.ascontiguousarray((out * 255.0 + 0.5).astype(np.uint8))


@dataclass
class View:
    """What is shown: the image's pixels and the current window."""

    image: LoadedImage | None = None
    center: float = 127.5
    width: float = 255.0


class LabelingSession:
    """State of one labelling session over a store and its images."""

    def __init__(self, store: LabelStore, refs: list[ImageRef], schema: LabelSchema, annotator: str = "",
                 reviewer: bool = False) -> None:
        self.store = store
        self.refs = list(refs)
        self._by_id = {r.image_id: r for r in self.refs}
        self.schema = schema
        self.annotator = annotator
        self.reviewer = reviewer
        self.index = 0 if self.refs else -1
        self.tool = "box"
        self.label = schema.classes[0].name
        self.brush_radius = 8.0
        self.view = View()
        self._listeners: list[Callable[[str], None]] = []
        store.subscribe(lambda event, image_id: self._emit(event) if image_id == self.image_id else None)

    # -- events ------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str], None]) -> None:
        """``callback(what)``: image, view, tool, label, annotations, status, review, mode."""
        self._listeners.append(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # -- navigation ------------------------------------------------------------------------
    @property
    def image_id(self) -> str | None:
        return self.refs[self.index].image_id if 0 <= self.index < len(self.refs) else None

    @property
    def ref(self) -> ImageRef | None:
        return self.refs[self.index] if 0 <= self.index < len(self.refs) else None

    def select(self, index: int) -> None:
        if not self.refs:
            return
        index = max(0, min(len(self.refs) - 1, int(index)))
        if index != self.index or self.view.image is None:
            self.index = index
            self.view = View()
            self._emit("image")

    def step(self, delta: int) -> None:
        self.select(self.index + delta)

    def set_loaded(self, image_id: str, image: LoadedImage) -> None:
        """Called (on the GUI thread) when the background loader has the pixels."""
        if image_id != self.image_id:
            return  # the user moved on meanwhile
        self.view = View(image, image.window_center, image.window_width)
        self._emit("view")

    # -- tools -------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise LabelingError(f"unknown tool {tool!r}; use one of {TOOLS}")
        self.tool = tool
        self._emit("tool")

    def set_label(self, name: str) -> None:
        self.schema.get(name)
        self.label = name
        self._emit("label")

    def set_brush_radius(self, radius: float) -> None:
        self.brush_radius = max(0.5, float(radius))
        self._emit("tool")

    def set_window(self, center: float, width: float) -> None:
        self.view.center, self.view.width = float(center), max(1.0, float(width))
        self._emit("view")

    def adjust_window(self, d_center: float, d_width: float) -> None:
        self.set_window(self.view.center + d_center, self.view.width + d_width)

    def display(self) -> np.ndarray | None:
        img = self.view.image
        if img is None:
            return None
        return window_to_uint8(img.pixels, self.view.center, self.view.width, img.invert)

    # -- annotation actions (all autosaved by the store) ---------------------------------------
    def _need_annotator(self) -> str:
        if not self.annotator:
            raise LabelingError("enter your annotator name first")
        if self.image_id is None:
            raise LabelingError("no image selected")
        return self.annotator

    def add_box(self, x1: float, y1: float, x2: float, y2: float) -> Any:
        who = self._need_annotator()
        self.schema.check(self.label, "box")
        return self.store.add(self.image_id, who, "box", self.label, {"x1": x1, "y1": y1, "x2": x2, "y2": y2})

    def add_polygon(self, points: list[tuple[float, float]]) -> Any:
        who = self._need_annotator()
        self.schema.check(self.label, "polygon")
        return self.store.add(self.image_id, who, "polygon", self.label, {"points": [list(p) for p in points]})

    def stroke(self, points: list[tuple[float, float]]) -> None:
        who = self._need_annotator()
        if self.view.image is None:
            return
        erase = self.tool == "eraser"
        if not erase:
            self.schema.check(self.label, "mask")
        self.store.paint(self.image_id, who, self.label, self.view.image.pixels.shape, points, self.brush_radius,
                         erase=erase)

    def toggle_image_label(self, name: str, present: bool) -> None:
        who = self._need_annotator()
        self.schema.check(name, "label")
        excl = set(self.schema.exclusive)
        if present and name in excl:  # e.g. "normal" clears the findings' image labels
            for other in self.store.image_labels(self.image_id, who) - {name}:
                self.store.set_image_label(self.image_id, who, other, False)
        elif present:
            for other in excl & self.store.image_labels(self.image_id, who):
                self.store.set_image_label(self.image_id, who, other, False)
        self.store.set_image_label(self.image_id, who, name, present)

    def delete_annotation(self, ann_id: str) -> None:
        self.store.delete(ann_id)

    def undo(self) -> bool:
        return self.store.undo()

    def redo(self) -> bool:
        return self.store.redo()

    def mark_labelled(self) -> None:
        self.store.mark_labelled(self.image_id, self._need_annotator())

    def approve(self) -> None:
        if not self.reviewer:
            raise LabelingError("switch to reviewer mode to approve")
        self.store.review(self.image_id, self._need_annotator(), "approve")

    def return_for_changes(self, comment: str) -> None:
        if not self.reviewer:
            raise LabelingError("switch to reviewer mode to return an image")
        self.store.review(self.image_id, self._need_annotator(), "return", comment)

    def set_reviewer(self, on: bool) -> None:
        self.reviewer = bool(on)
        self._emit("mode")

    def set_annotator(self, name: str) -> None:
        self.annotator = name.strip()
        self._emit("mode")

    def visible_annotations(self) -> list:
        """Annotations drawn on the canvas: every annotator's (reviewer) or own + AI proposals."""
        if self.image_id is None:
            return []
        anns = self.store.annotations(self.image_id, include_rejected=False)
        if self.reviewer:
            return anns
        return [a for a in anns if a.annotator == self.annotator or a.ai_state == "proposed"]
