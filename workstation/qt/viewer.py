"""Image viewer widget: paints the session's current slice, overlays and annotations.

The widget holds no reading state: image, window, transform, overlays, selection and
measurements all live in :class:`workstation.core.session.ReadingSession`.  Only the
transient state of a mouse gesture in progress is kept here.  Window/level drags are
throttled to one update per ``_DRAG_INTERVAL_MS``.
"""
from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPen, QPolygonF, QWheelEvent
from PySide6.QtWidgets import QWidget

from workstation.core import display
from workstation.core.session import ReadingSession

logger = logging.getLogger(__name__)

_DRAG_INTERVAL_MS = 16
COLORS: dict[str, tuple[int, int, int]] = {
    "nodule_mass": (255, 210, 0),
    "consolidation": (0, 200, 255),
    "interstitial_opacity": (180, 120, 255),
    "pleural_effusion": (0, 255, 120),
    "pneumothorax": (255, 60, 60),
}


def color_for(label: str) -> tuple[int, int, int]:
    return COLORS.get(label, (255, 140, 0))


def gray_qimage(img8: np.ndarray) -> QImage:
    """A QImage sharing nothing with the caller (copied), row 0 at the top: no flip."""
    img8 = np.ascontiguousarray(img8)
    h, w = img8.shape
    return QImage(img8.data, w, h, img8.strides[0], QImage.Format.Format_Grayscale8).copy()


def rgba_qimage(rgba: np.ndarray) -> QImage:
    rgba = np.ascontiguousarray(rgba)
    h, w, _ = rgba.shape
    return QImage(rgba.data, w, h, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()


class ImageViewer(QWidget):
    """Paints a :class:`ReadingSession`.  Modes: ``"wl"`` (default), ``"measure"``, ``"box"``, ``"outline"``."""

    cursor_text = Signal(str)
    box_drawn = Signal(list)  # [x1, y1, x2, y2] image pixels, in "box" mode
    outline_drawn = Signal(list)  # [[x, y], ...] image pixels, in "outline" mode (double-click closes)
    measured = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: ReadingSession | None = None
        self.mode = "wl"
        self.setMinimumSize(320, 320)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAutoFillBackground(False)
        self._qimage: QImage | None = None
        self._qimage_key: tuple | None = None
        self._cimage: QImage | None = None  # derived (denoised) slice of the side-by-side view
        self._cimage_key: tuple | None = None
        self._drag_start: QPointF | None = None
        self._drag_button = Qt.MouseButton.NoButton
        self._drag_window: display.Window | None = None
        self._drag_transform: display.ViewTransform | None = None
        self._pending_window: display.Window | None = None
        self._rubber: tuple[QPointF, QPointF] | None = None
        self._outline: list[tuple[float, float]] = []  # outline being drawn (image pixels)
        self._fitted_for: tuple | None = None
        self._wl_timer = QTimer(self)
        self._wl_timer.setSingleShot(True)
        self._wl_timer.setInterval(_DRAG_INTERVAL_MS)
        self._wl_timer.timeout.connect(self._flush_window)
        self.last_readout = ""

    # ------------------------------------------------------------------ model
    def set_session(self, session: ReadingSession | None) -> None:
        self.session = session
        self._qimage_key = None
        self._fitted_for = None
        if session is not None:
            session.subscribe(self._on_session)
            self.fit()
        self.update()

    def _on_session(self, kind: str) -> None:
        if kind == "compare" and self.session is not None:
            self.fit()  # one pane or two: fit to the pane width
        if kind in ("image",) and self.session is not None:
            key = (self.session.series_index, self.session.series.shape)
            if self._fitted_for is not None and self._fitted_for[0] != key[0]:
                self.fit()
        self.update()

    def fit(self) -> None:
        if self.session is None:
            return
        self.session.fit(max(self.width(), 1), max(self.height(), 1))
        self._fitted_for = (self.session.series_index, self.session.series.shape)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.session is not None:
            self.fit()
        super().resizeEvent(event)

    # ------------------------------------------------------------------ painting
    def _image(self) -> QImage:
        s = self.session
        assert s is not None and s.window is not None
        key = (s.series_index, s.slice_index, s.window, s.series.invert)
        if key != self._qimage_key or self._qimage is None:
            self._qimage = gray_qimage(s.current_image8())
            self._qimage_key = key
        return self._qimage

    def _compare_image(self) -> QImage | None:
        s = self.session
        assert s is not None and s.window is not None
        key = (s.series_index, s.slice_index, s.window, s.compare_active)
        if key != self._cimage_key:
            img8 = s.compare_image8()
            self._cimage = gray_qimage(img8) if img8 is not None else None
            self._cimage_key = key
        return self._cimage

    def pane_width(self) -> float:
        """Width of one image pane (half the widget when side by side)."""
        return self.session.pane_width(self.width()) if self.session is not None else float(self.width())

    def render_current(self) -> QImage:
        """The current slice as displayed (8-bit, windowed) — used by tests and screenshots."""
        return self._image()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        s = self.session
        if s is None:
            p.setPen(QColor(160, 160, 160))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No study open")
            p.end()
            return
        t = s.transform
        rows, cols = s.series.shape
        target = QRectF(t.offset_x, t.offset_y, cols * t.zoom, rows * t.zoom_y)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, t.zoom < 1.0)
        if s.compare_active:
            self._paint_side_by_side(p, target)
        else:
            p.drawImage(target, self._image())
            self._paint_overlays(p, target)
            self._paint_measurements(p)
        self._paint_text(p)
        p.end()

    def _paint_side_by_side(self, p: QPainter, target: QRectF) -> None:
        """Original in the left pane, derived in the right: one transform, window and slice for both."""
        s = self.session
        assert s is not None
        half, h = self.pane_width(), float(self.height())
        for x0, img in ((0.0, self._image()), (half, self._compare_image())):
            p.save()
            p.translate(x0, 0.0)
            p.setClipRect(QRectF(0.0, 0.0, half, h))
            if img is not None:
                p.drawImage(target, img)
            else:
                p.setPen(QColor(200, 120, 120))
                p.drawText(QRectF(0.0, 0.0, half, h), Qt.AlignmentFlag.AlignCenter, "no derived slice here")
            self._paint_overlays(p, target)
            self._paint_measurements(p)
            p.restore()
        p.setPen(QPen(QColor(90, 90, 90), 2))
        p.drawLine(QPointF(half, 0.0), QPointF(half, h))
        p.setPen(QColor(120, 220, 255))
        p.setFont(QFont("Sans", 10))
        p.drawText(QRectF(half + 8, h - 44, half - 16, 18), Qt.AlignmentFlag.AlignLeft, s.compare_label())
        p.drawText(QRectF(8, h - 44, half - 16, 18), Qt.AlignmentFlag.AlignLeft, "original")

    def _to_view(self, x: float, y: float) -> QPointF:
        assert self.session is not None
        vx, vy = self.session.transform.image_to_view(x, y)
        return QPointF(vx, vy)

    def _paint_overlays(self, p: QPainter, target: QRectF) -> None:
        s = self.session
        assert s is not None
        for it in s.visible_items():
            ov = s.overlay(it.id)
            r, g, b = color_for(it.label)
            alpha = int(round(255 * ov.opacity))
            if it.heatmap_key and it.heatmap_key in s.heatmaps:
                p.drawImage(target, rgba_qimage(display.heatmap_rgba(s.heatmaps[it.heatmap_key], ov.opacity, (r, g, b))))
            if it.seg_key and it.seg_key in s.seg_masks:
                m = s.seg_masks[it.seg_key]
                plane = m[s.slice_index] if m.ndim == 3 else m
                p.drawImage(target, rgba_qimage(display.mask_rgba(plane, ov.opacity * 0.5, (r, g, b))))
            width = 3.0 if it.id == s.selected else 1.6
            pen = QPen(QColor(r, g, b, max(alpha, 40)), width)
            if it.source == "manual":
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            if it.contour and len(it.contour) >= 3:
                p.drawPolygon(QPolygonF([self._to_view(x, y) for x, y in it.contour]))
            elif it.box:
                a, b2 = self._to_view(it.box[0], it.box[1]), self._to_view(it.box[2], it.box[3])
                p.drawRect(QRectF(a, b2))
            anchor = it.box or (it.contour[0] + it.contour[0] if it.contour else None)
            if anchor:
                pt = self._to_view(anchor[0], anchor[1])
                prob = f" {display.percent_text(it.probability)}" if it.probability is not None else ""
                p.setFont(QFont("Sans", 9))
                p.drawText(pt + QPointF(2, -4), f"{it.ref} {it.label}{prob}")
        if self._outline:
            p.setPen(QPen(QColor(255, 255, 0), 1.5, Qt.PenStyle.DashLine))
            p.drawPolyline(QPolygonF([self._to_view(x, y) for x, y in self._outline]))
        if self._rubber is not None:
            a, b2 = self._rubber
            p.setPen(QPen(QColor(255, 255, 0), 1.5, Qt.PenStyle.DashLine))
            if self.mode == "measure":
                p.drawLine(a, b2)
            else:
                p.drawRect(QRectF(a, b2).normalized())

    def _paint_measurements(self, p: QPainter) -> None:
        s = self.session
        assert s is not None
        p.setPen(QPen(QColor(255, 255, 0), 1.5))
        p.setFont(QFont("Sans", 9))
        for p1, p2 in s.measurements:
            a, b = self._to_view(*p1), self._to_view(*p2)
            p.drawLine(a, b)
            mm = display.distance_mm(p1, p2, s.series.spacing)
            txt = f"{mm:.1f} mm" if mm is not None else f"{np.hypot(p2[0]-p1[0], p2[1]-p1[1]):.1f} px"
            p.drawText(b + QPointF(4, 4), txt)

    def _paint_text(self, p: QPainter) -> None:
        s = self.session
        assert s is not None and s.window is not None
        p.setFont(QFont("Sans", 10))
        p.setPen(QColor(230, 230, 120))
        w, h = self.width(), self.height()
        lab = s.series.edge_labels
        if lab:
            p.drawText(QRectF(4, 0, 40, h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, lab["left"])
            p.drawText(QRectF(w - 44, 0, 40, h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, lab["right"])
            p.drawText(QRectF(0, 2, w, 20), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, lab["top"])
            p.drawText(QRectF(0, h - 22, w, 20), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, lab["bottom"])
        p.setPen(QColor(220, 220, 220))
        info = [f"{s.series.modality} {s.series.description}".strip(),
                f"W {s.window.width:.0f} L {s.window.center:.0f} ({s.preset})",
                f"zoom {s.transform.zoom:.2f}"]
        sl = s.slice_label()
        if sl:
            info.append(sl)
        for i, line in enumerate(info):
            p.drawText(QPointF(8, 18 + 16 * i), line)
        if self.last_readout:
            p.drawText(QPointF(8, h - 8), self.last_readout)
        if s.busy:
            p.drawText(QPointF(w - 220, 18), s.busy)

    # ------------------------------------------------------------------ mouse
    def _in_right_pane(self, pos: QPointF) -> bool:
        return self.session is not None and self.session.compare_active and pos.x() >= self.pane_width()

    def _image_point(self, pos: QPointF) -> tuple[float, float]:
        """Image pixel under a widget point (either pane of the side-by-side view maps the same way)."""
        assert self.session is not None
        x = pos.x() - self.pane_width() if self._in_right_pane(pos) else pos.x()
        return self.session.transform.view_to_image(x, pos.y())

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._outline = []
        self._rubber = None
        self.update()

    def finish_outline(self) -> None:
        """Close the outline being drawn (double-click or Enter)."""
        pts = [list(p) for p in self._outline]
        self._outline = []
        if len(pts) >= 3:
            self.outline_drawn.emit(pts)
        self.update()

    def mouseDoubleClickEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self.mode == "outline":
            self.finish_outline()

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self.session is None:
            return
        if self.mode == "outline" and e.button() == Qt.MouseButton.LeftButton:
            self._outline.append(self._image_point(e.position()))
            self.update()
            return
        self._drag_start = e.position()
        self._drag_button = e.button()
        self._drag_window = self.session.window
        self._drag_transform = self.session.transform
        if self.mode in ("measure", "box") and e.button() == Qt.MouseButton.LeftButton:
            self._rubber = (e.position(), e.position())
        self.setFocus()

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        s = self.session
        if s is None:
            return
        x, y = self._image_point(e.position())
        values = s.compare_values() if self._in_right_pane(e.position()) else None
        readout = display.pixel_readout(values if values is not None else s.current_values(), x, y,
                                        s.series.modality)
        if readout and values is not None:
            readout = f"{readout} (denoised)"
        self.last_readout = readout or ""
        if readout:
            self.cursor_text.emit(readout)
        if self._drag_start is None:
            self.update()
            return
        d = e.position() - self._drag_start
        left = self._drag_button == Qt.MouseButton.LeftButton
        if self._rubber is not None:
            self._rubber = (self._rubber[0], e.position())
            self.update()
        elif (left and e.modifiers() & Qt.KeyboardModifier.ShiftModifier) or self._drag_button == Qt.MouseButton.MiddleButton:
            assert self._drag_transform is not None
            s.set_transform(self._drag_transform.panned(d.x(), d.y()))
        elif self._drag_button == Qt.MouseButton.RightButton:
            assert self._drag_transform is not None
            factor = float(np.exp(-d.y() / 200.0))
            ax = self._drag_start.x() - (self.pane_width() if self._in_right_pane(self._drag_start) else 0.0)
            s.set_transform(self._drag_transform.zoomed(factor, ax, self._drag_start.y()))
        elif left and self._drag_window is not None:
            sens = display.drag_sensitivity(self._drag_window)
            self._pending_window = display.drag_window(self._drag_window, d.x(), d.y(), sens)
            if not self._wl_timer.isActive():
                self._wl_timer.start()

    def _flush_window(self) -> None:
        if self._pending_window is not None and self.session is not None:
            self.session.set_window(self._pending_window)
            self._pending_window = None

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        s = self.session
        if s is None:
            return
        self._flush_window()
        if self._rubber is not None:
            a = self._image_point(self._rubber[0])
            b = self._image_point(e.position())
            self._rubber = None
            if self.mode == "measure":
                mm = s.add_measurement(a, b)
                if mm is not None:
                    self.measured.emit(mm)
            elif self.mode == "box" and abs(a[0] - b[0]) > 2 and abs(a[1] - b[1]) > 2:
                self.box_drawn.emit([min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])])
        self._drag_start = None
        self.update()

    def wheelEvent(self, e: QWheelEvent) -> None:  # noqa: N802
        s = self.session
        if s is None:
            return
        steps = e.angleDelta().y() / 120.0
        if e.modifiers() & Qt.KeyboardModifier.ControlModifier or s.series.n <= 1:
            pos = e.position()
            ax = pos.x() - (self.pane_width() if self._in_right_pane(pos) else 0.0)
            s.set_transform(s.transform.zoomed(1.15 ** steps, ax, pos.y()))
        else:
            s.scroll(-int(np.sign(steps)) if abs(steps) < 1 else -int(steps))
