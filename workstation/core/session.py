"""The reading session: all state of one open study (the model the Qt widgets render).

Widgets hold no state of their own: they read from a :class:`ReadingSession`, write
user input to it, and repaint when it notifies them (``subscribe``).  Everything here is
Qt-free and tested directly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workstation.core import compare as pairing
from workstation.core import display, qa
from workstation.core.review import ReviewItem, ReviewState, laterality_from_position
from workstation.core.study import DisplaySeries, LoadedStudy

logger = logging.getLogger(__name__)

#: Change kinds sent to listeners.
EVENTS = ("image", "window", "view", "overlays", "findings", "report", "selection", "compare")


@dataclass
class Overlay:
    visible: bool = True
    opacity: float = 0.6


@dataclass
class ReadingSession:
    """State of one study on screen."""

    study: LoadedStudy
    review: ReviewState
    user: str = ""
    report_text: str = ""
    report_language: str = "en"
    report_frozen: bool = False
    qa_config: qa.QAConfig = field(default_factory=qa.QAConfig)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # key → probability map of the source image
    seg_masks: dict[str, np.ndarray] = field(default_factory=dict)  # key → (n, rows, cols) mask of the series
    series_index: int = 0
    slice_index: int = 0
    preset: str = "default"
    window: display.Window | None = None
    transform: display.ViewTransform = field(default_factory=display.ViewTransform)
    overlays: dict[str, Overlay] = field(default_factory=dict)
    selected: str | None = None
    measurements: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    busy: str = ""  # text of the background task in progress, "" when idle
    compare: bool = False  # original and derived (denoised) series side by side, when the series has one
    pairs: dict[int, pairing.SeriesPair] = field(default_factory=dict)
    _listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.window is None:
            self.window = self.series.window
        if self.series.modality == "CT" and self.slice_index == 0:
            self.slice_index = self.series.n // 2  # a CT opens at its middle slice, as set_series does
        for it in self.review.items:
            self.overlays.setdefault(it.id, Overlay())
        self.heatmaps = {**self.review.heatmaps, **self.heatmaps}  # type: ignore[dict-item]
        self.seg_masks = {**self.review.segs, **self.seg_masks}  # type: ignore[dict-item]
        self.review.subscribe(lambda _d: self._emit("findings"))
        if not self.pairs:
            self.pairs = pairing.find_pairs(self.study)

    # ---------------------------------------------------------------- events
    def subscribe(self, fn: Callable[[str], None]) -> None:
        self._listeners.append(fn)

    def _emit(self, kind: str) -> None:
        for fn in list(self._listeners):
            fn(kind)

    # ---------------------------------------------------------------- image
    @property
    def series(self) -> DisplaySeries:
        return self.study.series[self.series_index]

    def current_values(self) -> np.ndarray:
        return self.series.frames[self.slice_index]

    def current_image8(self) -> np.ndarray:
        """The current slice windowed to 8 bits (MONOCHROME1 inverted)."""
        assert self.window is not None
        return display.window_to_uint8(self.current_values(), self.window, self.series.invert)

    # ---------------------------------------------------------------- side by side (original | denoised)
    @property
    def pair(self) -> pairing.SeriesPair | None:
        """The derived series paired with the current one, if any."""
        return self.pairs.get(self.series_index)

    @property
    def compare_active(self) -> bool:
        return self.compare and self.pair is not None

    def toggle_compare(self) -> bool:
        """Show or hide the derived series beside the current one; False (and off) when it has none."""
        self.compare = not self.compare if self.pair is not None else False
        self._emit("compare")
        return self.compare_active

    @property
    def compare_series(self) -> DisplaySeries | None:
        pr = self.pair
        return self.study.series[pr.derived] if pr is not None else None

    def compare_values(self) -> np.ndarray | None:
        """The derived slice matching the current original slice (same position), None if there is none."""
        pr = self.pair
        if not self.compare_active or pr is None:
            return None
        j = pr.derived_index(self.slice_index)
        return None if j is None else self.study.series[pr.derived].frames[j]

    def compare_image8(self) -> np.ndarray | None:
        """The derived slice in the same window as the original (MONOCHROME1 of the derived series honoured)."""
        v = self.compare_values()
        cs = self.compare_series
        if v is None or cs is None:
            return None
        assert self.window is not None
        return display.window_to_uint8(v, self.window, cs.invert)

    def compare_label(self) -> str:
        cs = self.compare_series
        return (cs.derivation or cs.description or "derived") if cs is not None else ""

    def pane_width(self, view_w: float) -> float:
        """Width of one image pane: half the viewer when side by side."""
        return view_w / 2.0 if self.compare_active else view_w

    def set_series(self, index: int) -> None:
        if not 0 <= index < len(self.study.series):
            return
        self.series_index = index
        self.slice_index = self.series.n // 2 if self.series.modality == "CT" else 0
        self.window = display.resolve_preset(self.preset, self.series.window) if self.preset != "default" \
            else self.series.window
        self._emit("image")

    def set_slice(self, index: int) -> None:
        index = int(np.clip(index, 0, self.series.n - 1))
        if index != self.slice_index:
            self.slice_index = index
            self._emit("image")

    def scroll(self, delta: int) -> None:
        self.set_slice(self.slice_index + delta)

    def slice_label(self) -> str:
        s = self.series
        if s.n <= 1:
            return ""
        pos = s.positions[self.slice_index]
        where = f"  pos {pos:.1f} mm" if pos is not None else ""
        return f"slice {self.slice_index + 1}/{s.n}{where}"

    # ---------------------------------------------------------------- window
    def set_window(self, window: display.Window) -> None:
        self.window = window
        self.preset = "custom"
        self._emit("window")

    def apply_preset(self, name: str) -> None:
        self.window = display.resolve_preset(name, self.series.window)
        self.preset = name
        self._emit("window")

    # ---------------------------------------------------------------- view
    def fit(self, view_w: float, view_h: float) -> None:
        rows, cols = self.series.shape
        self.transform = display.fit_transform(rows, cols, self.pane_width(view_w), view_h,
                                               display.pixel_aspect(self.series.spacing))
        self._emit("view")

    def set_transform(self, t: display.ViewTransform) -> None:
        self.transform = t
        self._emit("view")

    # ---------------------------------------------------------------- measurements
    def add_measurement(self, p1: tuple[float, float], p2: tuple[float, float]) -> float | None:
        """Store a distance line (image pixels); returns its length in mm (None without spacing)."""
        self.measurements.append((p1, p2))
        self._emit("view")
        return display.distance_mm(p1, p2, self.series.spacing)

    def clear_measurements(self) -> None:
        self.measurements.clear()
        self._emit("view")

    # ---------------------------------------------------------------- overlays
    def overlay(self, finding_id: str) -> Overlay:
        return self.overlays.setdefault(finding_id, Overlay())

    def toggle_overlay(self, finding_id: str) -> bool:
        ov = self.overlay(finding_id)
        ov.visible = not ov.visible
        self._emit("overlays")
        return ov.visible

    def set_all_overlays(self, visible: bool) -> None:
        for it in self.review.items:
            self.overlay(it.id).visible = visible
        self._emit("overlays")

    def set_opacity(self, finding_id: str, opacity: float) -> None:
        self.overlay(finding_id).opacity = float(np.clip(opacity, 0.0, 1.0))
        self._emit("overlays")

    def visible_items(self) -> list[ReviewItem]:
        """Findings drawn on the current slice (rejected ones are not drawn)."""
        s = self.series
        out = []
        for it in self.review.items:
            if it.status == "rejected" or not self.overlay(it.id).visible:
                continue
            if it.sop_uid:
                idx = s.index_of(it.sop_uid)
                if idx is None or idx != self.slice_index:
                    continue
            elif s.n > 1 and it.frame != self.slice_index:
                continue
            out.append(it)
        return out

    # ---------------------------------------------------------------- selection
    def select(self, finding_id: str | None, view_w: float | None = None, view_h: float | None = None) -> None:
        """Select a finding; show its series and slice and centre it in the view."""
        self.selected = finding_id
        if finding_id is not None:
            it = self.review.get(finding_id)
            if it.sop_uid:
                hit = self.study.series_for(it.sop_uid)
                if hit is not None:
                    si, idx = self.study.series.index(hit[0]), hit[1]
                    if si != self.series_index:
                        self.set_series(si)
                    self.set_slice(idx)
            elif self.series.n > 1:
                self.set_slice(it.frame)
            c = it.centre()
            if c is not None and view_w and view_h:
                self.transform = self.transform.centred_on(c[0], c[1], self.pane_width(view_w), view_h)
                self._emit("view")
        self._emit("selection")

    # ---------------------------------------------------------------- findings
    def add_finding(self, label: str, box: list[float]) -> ReviewItem:
        s = self.series
        cx = (box[0] + box[2]) / 2.0
        side = laterality_from_position(cx, s.shape[1], s.edge_labels)
        d = self.review.add(self.user, label, box=box, laterality=side, sop_uid=s.sop_uids[self.slice_index],
                            frame=self.slice_index)
        it = self.review.get(d.finding_id)
        self.overlays[it.id] = Overlay()
        return it

    # ---------------------------------------------------------------- report
    def set_report_text(self, text: str) -> None:
        if self.report_frozen:
            raise PermissionError("the report is signed and frozen; write an addendum")
        if text != self.report_text:
            self.report_text = text
            self._emit("report")

    def qa_messages(self) -> list[qa.QAMessage]:
        return qa.run_checks(self.report_text, self.review.items, self.qa_config, self.report_language)
