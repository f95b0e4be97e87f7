"""PySide6 labeling app: image list, canvas with box/polygon/brush/eraser tools, review.

Widgets hold no state of their own: they write to :class:`LabelingSession` (tool,
class, window/level, annotator, mode) and the label store (annotations, autosaved);
they redraw from them when told something changed.  Loading images and running the
AI pre-annotation happen in a thread pool and report back by signals.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, QRunnable, Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QColor, QImage, QKeySequence, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from labeling_tool.core.errors import LabelingError
from labeling_tool.core.preannotate import accept, preannotate, reject
from labeling_tool.core.schema import load_schema
from labeling_tool.core.session import TOOLS, LabelingSession
from labeling_tool.core.sources import load_image
from labeling_tool.core.store import LabelStore

logger = logging.getLogger(__name__)

STATUS_MARK = {"unlabelled": "○", "in_progress": "◐", "labelled": "●", "reviewed": "✔"}
TOOL_KEYS = {"box": "B", "polygon": "P", "brush": "R", "eraser": "E", "window": "W"}


class _Signals(QObject):
    done = Signal(str, object)
    failed = Signal(str, str)


class _Job(QRunnable):
    """Run ``fn()`` in the pool; report ``done(key, result)`` or ``failed(key, message)``."""

    def __init__(self, key: str, fn: Callable[[], object]) -> None:
        super().__init__()
        self.key, self.fn, self.signals = key, fn, _Signals()

    def run(self) -> None:  # noqa: D401 - QRunnable API
        try:
            result = self.fn()
        except Exception as e:  # noqa: BLE001 - reported to the GUI thread
            logger.exception("background job failed")
            self.signals.failed.emit(self.key, f"{type(e).__name__}: {e}")
            return
        self.signals.done.emit(self.key, result)


class Canvas(QWidget):
    """Shows the windowed image and annotations; turns mouse gestures into session calls."""

    def __init__(self, session: LabelingSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setMinimumSize(400, 400)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self._gesture: list[tuple[float, float]] = []  # points of the gesture in progress (image coords)
        self._pressed = False
        self._last = QPointF()
        self._qimage: QImage | None = None

    # -- geometry --------------------------------------------------------------------------
    def _frame(self) -> tuple[float, float, float]:
        """Scale and offset of the image in the widget (aspect kept, centred)."""
        img = self.session.view.image
        if img is None:
            return 1.0, 0.0, 0.0
        h, w = img.pixels.shape
        s = min(self.width() / w, self.height() / h)
        return s, (self.width() - w * s) / 2, (self.height() - h * s) / 2

    def to_image(self, p: QPointF) -> tuple[float, float]:
        s, ox, oy = self._frame()
        return (p.x() - ox) / s, (p.y() - oy) / s

    def to_widget(self, x: float, y: float) -> QPointF:
        s, ox, oy = self._frame()
        return QPointF(ox + x * s, oy + y * s)

    @property
    def has_image(self) -> bool:
        return self.session.view.image is not None

    def refresh_image(self) -> None:
        arr = self.session.display()
        if arr is None:
            self._qimage = None
        else:
            h, w = arr.shape
            self._qimage = QImage(arr.data, w, h, w, QImage.Format_Grayscale8).copy()
        self.update()

    # -- painting ------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.black)
        if self._qimage is None:
            p.setPen(Qt.gray)
            p.drawText(self.rect(), Qt.AlignCenter, "loading…" if self.session.ref else "no images")
            return
        s, ox, oy = self._frame()
        img = self.session.view.image
        h, w = img.pixels.shape
        p.drawImage(QRectF(ox, oy, w * s, h * s), self._qimage)
        for a in self.session.visible_annotations():
            try:
                color = QColor(self.session.schema.get(a.label).color)
            except LabelingError:
                color = QColor("#ff00ff")
            pen = QPen(color, 2, Qt.DashLine if a.ai_state == "proposed" else Qt.SolidLine)
            p.setPen(pen)
            if a.kind == "box":
                x1, y1, x2, y2 = a.box()
                p.drawRect(QRectF(self.to_widget(x1, y1), self.to_widget(x2, y2)))
            elif a.kind == "polygon":
                p.drawPolygon(QPolygonF([self.to_widget(x, y) for x, y in a.data["points"]]))
            elif a.kind == "mask":
                m = a.mask()
                rgba = np.zeros(m.shape + (4,), np.uint8)
                rgba[m] = (color.red(), color.green(), color.blue(), 110)
                qi = QImage(rgba.data, m.shape[1], m.shape[0], 4 * m.shape[1], QImage.Format_RGBA8888).copy()
                p.drawImage(QRectF(ox, oy, w * s, h * s), qi)
        if self._gesture:
            p.setPen(QPen(QColor("#00ffff"), 1, Qt.DotLine))
            pts = [self.to_widget(x, y) for x, y in self._gesture]
            if self.session.tool == "box" and len(pts) >= 2:
                p.drawRect(QRectF(pts[0], pts[-1]))
            else:
                for a, b in zip(pts, pts[1:]):
                    p.drawLine(a, b)

    # -- input ------------------------------------------------------------------------------------
    def mousePressEvent(self, e) -> None:  # noqa: N802
        if not self.has_image:
            return
        pos = e.position()
        tool = self.session.tool
        if e.button() == Qt.RightButton or tool == "window":
            self._pressed, self._last = True, pos
            self._gesture = []
            self._wl = True
            return
        self._wl = False
        if tool == "polygon":
            self._gesture.append(self.to_image(pos))
            self.update()
            return
        self._pressed = True
        self._gesture = [self.to_image(pos)]

    def mouseMoveEvent(self, e) -> None:  # noqa: N802
        if not self._pressed:
            return
        pos = e.position()
        if getattr(self, "_wl", False):
            d = pos - self._last
            self._last = pos
            scale = max(self.session.view.width, 1.0) / 200.0
            self.session.adjust_window(d.y() * scale, d.x() * scale)
            return
        pt = self.to_image(pos)
        if self.session.tool == "box":
            self._gesture = [self._gesture[0], pt]
        else:
            self._gesture.append(pt)
        self.update()

    def mouseReleaseEvent(self, e) -> None:  # noqa: N802
        if not self._pressed:
            return
        self._pressed = False
        if getattr(self, "_wl", False):
            self._wl = False
            return
        pts, self._gesture = self._gesture, []
        self._gesture.clear()
        try:
            if self.session.tool == "box" and len(pts) >= 2:
                (x1, y1), (x2, y2) = pts[0], pts[-1]
                if abs(x2 - x1) >= 1 and abs(y2 - y1) >= 1:
                    self.session.add_box(x1, y1, x2, y2)
            elif self.session.tool in ("brush", "eraser"):
                self.session.stroke(pts)
        except LabelingError as err:
            self.window().statusBar().showMessage(str(err), 5000)
        self.update()

    def mouseDoubleClickEvent(self, e) -> None:  # noqa: N802
        if self.session.tool == "polygon":
            self.finish_polygon()

    def finish_polygon(self) -> None:
        pts, self._gesture = self._gesture, []
        if len(pts) >= 3:
            try:
                self.session.add_polygon(pts)
            except LabelingError as err:
                self.window().statusBar().showMessage(str(err), 5000)
        self.update()

    def keyPressEvent(self, e) -> None:  # noqa: N802
        if e.key() in (Qt.Key_Return, Qt.Key_Enter) and self.session.tool == "polygon":
            self.finish_polygon()
        elif e.key() == Qt.Key_Escape:
            self._gesture = []
            self.update()
        else:
            super().keyPressEvent(e)


class LabelingWindow(QMainWindow):
    """Main window: image list | canvas | classes, tools, image labels, review, proposals."""

    def __init__(self, session: LabelingSession, predictor=None, model_name: str = "") -> None:
        super().__init__()
        self.session = session
        self.predictor, self.model_name = predictor, model_name
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._jobs: dict[str, _Job] = {}
        self.setWindowTitle(f"medws label — {session.schema.title}")
        self._build()
        session.subscribe(self._on_session)
        self._refresh_list()
        self._refresh_panel()
        QTimer.singleShot(0, self._load_current)

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        s = self.session
        root = QWidget()
        lay = QHBoxLayout(root)
        self.image_list = QListWidget()
        self.image_list.setMaximumWidth(300)
        self.image_list.currentRowChanged.connect(lambda row: row >= 0 and s.select(row))
        lay.addWidget(self.image_list)
        self.canvas = Canvas(s)
        lay.addWidget(self.canvas, 1)
        side = QVBoxLayout()
        lay.addLayout(side)

        side.addWidget(QLabel("Annotator"))
        self.annotator_edit = QLineEdit(s.annotator)
        self.annotator_edit.setPlaceholderText("your name")
        self.annotator_edit.editingFinished.connect(lambda: s.set_annotator(self.annotator_edit.text()))
        side.addWidget(self.annotator_edit)
        self.reviewer_check = QCheckBox("Reviewer mode")
        self.reviewer_check.toggled.connect(s.set_reviewer)
        side.addWidget(self.reviewer_check)

        side.addWidget(QLabel("Tool"))
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QRadioButton] = {}
        for t in TOOLS:
            b = QRadioButton(f"{t} ({TOOL_KEYS[t]})")
            b.toggled.connect(lambda on, t=t: on and s.set_tool(t))
            self.tool_group.addButton(b)
            self.tool_buttons[t] = b
            side.addWidget(b)
            self._shortcut(TOOL_KEYS[t], lambda t=t: s.set_tool(t))
        self.brush_spin = QDoubleSpinBox()
        self.brush_spin.setRange(0.5, 200)
        self.brush_spin.setPrefix("brush radius ")
        self.brush_spin.valueChanged.connect(s.set_brush_radius)
        side.addWidget(self.brush_spin)

        side.addWidget(QLabel("Class (drawing)"))
        self.class_group = QButtonGroup(self)
        self.class_buttons: dict[str, QRadioButton] = {}
        for c in s.schema.classes:
            if set(c.kinds) == {"label"}:
                continue
            b = QRadioButton(f"{c.display} ({c.shortcut})" if c.shortcut else c.display)
            b.toggled.connect(lambda on, n=c.name: on and s.set_label(n))
            self.class_group.addButton(b)
            self.class_buttons[c.name] = b
            side.addWidget(b)
            if c.shortcut:
                self._shortcut(c.shortcut, lambda n=c.name: s.set_label(n))

        side.addWidget(QLabel("Image labels"))
        self.label_checks: dict[str, QCheckBox] = {}
        for c in s.schema.classes:
            if "label" not in c.kinds:
                continue
            cb = QCheckBox(c.display)
            cb.clicked.connect(lambda on, n=c.name: self._guard(lambda: s.toggle_image_label(n, on)))
            self.label_checks[c.name] = cb
            side.addWidget(cb)

        self.done_button = QPushButton("Mark labelled (Ctrl+Return)")
        self.done_button.clicked.connect(lambda: self._guard(s.mark_labelled))
        side.addWidget(self.done_button)
        self._shortcut("Ctrl+Return", lambda: self._guard(s.mark_labelled))

        side.addWidget(QLabel("Review"))
        self.approve_button = QPushButton("Approve (Ctrl+A)")
        self.approve_button.clicked.connect(lambda: self._guard(s.approve))
        self._shortcut("Ctrl+A", lambda: self._guard(s.approve))
        side.addWidget(self.approve_button)
        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("comment for the annotator")
        side.addWidget(self.comment_edit)
        self.return_button = QPushButton("Return with comment")
        self.return_button.clicked.connect(lambda: self._guard(lambda: s.return_for_changes(self.comment_edit.text())))
        side.addWidget(self.return_button)
        self.review_label = QLabel("")
        self.review_label.setWordWrap(True)
        side.addWidget(self.review_label)

        side.addWidget(QLabel("AI proposals"))
        self.preannotate_button = QPushButton("Pre-annotate with the current model")
        self.preannotate_button.setEnabled(self.predictor is not None)
        if self.predictor is None:
            self.preannotate_button.setToolTip("no chest X-ray model available in the registry")
        self.preannotate_button.clicked.connect(self.run_preannotation)
        side.addWidget(self.preannotate_button)
        self.proposal_list = QListWidget()
        self.proposal_list.setMaximumHeight(120)
        side.addWidget(self.proposal_list)
        row = QHBoxLayout()
        self.accept_button = QPushButton("Accept")
        self.accept_button.clicked.connect(lambda: self._on_proposal(accept))
        self.reject_button = QPushButton("Reject")
        self.reject_button.clicked.connect(lambda: self._on_proposal(reject))
        row.addWidget(self.accept_button)
        row.addWidget(self.reject_button)
        side.addLayout(row)
        side.addStretch(1)
        self.setCentralWidget(root)

        for text, keys, fn in (
            ("Undo", ["Ctrl+Z"], lambda: self._guard(s.undo)),
            ("Redo", ["Ctrl+Y", "Ctrl+Shift+Z"], lambda: self._guard(s.redo)),
            ("Next image", ["N", "PgDown"], lambda: s.step(1)),
            ("Previous image", ["Shift+N", "PgUp"], lambda: s.step(-1)),
        ):
            act = QAction(text, self)
            act.setShortcuts([QKeySequence(k) for k in keys])
            act.triggered.connect(lambda *_, fn=fn: fn())
            self.addAction(act)
        self.statusBar()

    def _shortcut(self, key: str, fn) -> None:
        act = QAction(self)
        act.setShortcut(QKeySequence(key))
        act.setShortcutContext(Qt.WindowShortcut)
        act.triggered.connect(lambda *_: fn())
        self.addAction(act)

    def _guard(self, fn) -> None:
        try:
            fn()
        except LabelingError as e:
            self.statusBar().showMessage(str(e), 6000)

    # -- model -> widgets ----------------------------------------------------------------------
    def _on_session(self, what: str) -> None:
        if what == "image":
            self.canvas.refresh_image()
            self._load_current()
        elif what == "view":
            self.canvas.refresh_image()
        elif what in ("annotations", "status", "review"):
            self.canvas.update()
            self._refresh_list()
        self._refresh_panel()

    def _refresh_list(self) -> None:
        s = self.session
        statuses = {r["image_id"]: r["status"] for r in s.store.images()}
        self.image_list.blockSignals(True)
        self.image_list.clear()
        for ref in s.refs:
            st = statuses.get(ref.image_id, "unlabelled")
            item = QListWidgetItem(f"{STATUS_MARK[st]} {ref.path.name}")
            item.setToolTip(st.replace("_", " "))
            item.setData(Qt.UserRole, st)
            self.image_list.addItem(item)
        self.image_list.setCurrentRow(s.index)
        self.image_list.blockSignals(False)

    def _refresh_panel(self) -> None:
        s = self.session
        widgets = [*self.tool_buttons.values(), *self.class_buttons.values(), *self.label_checks.values(),
                   self.brush_spin, self.reviewer_check]
        for w in widgets:
            w.blockSignals(True)
        self.tool_buttons[s.tool].setChecked(True)
        if s.label in self.class_buttons:
            self.class_buttons[s.label].setChecked(True)
        self.brush_spin.setValue(s.brush_radius)
        self.reviewer_check.setChecked(s.reviewer)
        labels = s.store.image_labels(s.image_id, s.annotator) if s.image_id and s.annotator else set()
        for name, cb in self.label_checks.items():
            cb.setChecked(name in labels)
        for w in widgets:
            w.blockSignals(False)
        for w in (self.approve_button, self.return_button, self.comment_edit):
            w.setEnabled(s.reviewer)
        reviews = s.store.reviews(s.image_id) if s.image_id else []
        if reviews and reviews[-1]["decision"] == "return":
            self.review_label.setText(f"Returned by {reviews[-1]['reviewer']}: {reviews[-1]['comment']}")
        else:
            self.review_label.setText("")
        self.proposal_list.clear()
        if s.image_id:
            for a in s.store.annotations(s.image_id):
                if a.source == "ai":
                    item = QListWidgetItem(f"{a.ai_state}: {a.kind} {a.label}")
                    item.setData(Qt.UserRole, a.id)
                    self.proposal_list.addItem(item)
        st = s.store.status(s.image_id) if s.image_id else ""
        self.statusBar().showMessage(f"{st.replace('_', ' ')} · tool {s.tool} · class {s.label} · "
                                     f"W {s.view.width:.0f} L {s.view.center:.0f}")

    # -- background work --------------------------------------------------------------------------
    def _submit(self, key: str, fn, on_done) -> None:
        job = _Job(key, fn)
        job.setAutoDelete(False)
        job.signals.done.connect(lambda k, result: (self._jobs.pop(k, None), on_done(k, result)))
        job.signals.failed.connect(lambda k, msg: (self._jobs.pop(k, None), self.statusBar().showMessage(msg, 8000)))
        self._jobs[key] = job
        self.pool.start(job)

    def _load_current(self) -> None:
        ref = self.session.ref
        if ref is None:
            return
        self._submit(f"load:{ref.image_id}", lambda: load_image(ref), self._loaded)

    @Slot(str, object)
    def _loaded(self, key: str, image) -> None:
        self._jobs.pop(key, None)
        self.session.set_loaded(key.split(":", 1)[1], image)

    def run_preannotation(self) -> None:
        s = self.session
        if self.predictor is None or s.view.image is None or s.image_id is None:
            return
        image_id, pixels = s.image_id, s.view.image.pixels
        if s.view.image.invert:  # MONOCHROME1: the models expect bright bone
            pixels = pixels.max() - pixels
        store_path = s.store.path

        def work():
            store = LabelStore(store_path)  # the worker's own connection
            try:
                return [a.id for a in preannotate(store, image_id, pixels, self.predictor, self.model_name)]
            finally:
                store.close()

        self._submit(f"ai:{image_id}", work, lambda key, ids: self._on_session("annotations"))

    def _on_proposal(self, fn) -> None:
        item = self.proposal_list.currentItem()
        if item is None:
            return
        self._guard(lambda: fn(self.session.store, item.data(Qt.UserRole), self.session.annotator or "unknown"))

    def closeEvent(self, e) -> None:  # noqa: N802
        self.pool.waitForDone(5000)
        super().closeEvent(e)


def cxr_predictor(registry=None):
    """(predictor, "name@version") from the registry's active chest X-ray models, or (None, "")."""
    try:
        from models.cxr.pipeline import CxrPipeline

        pipe = CxrPipeline(registry, threads=2)
    except Exception as e:  # noqa: BLE001 - the app works without a model
        logger.info("no pre-annotation model: %s", e)
        return None, ""

    def predict(pixels: np.ndarray) -> list[dict]:
        prepared = pipe.prepare(pixels)
        raw = pipe.predict(prepared)
        return [f.to_dict() for f in pipe.post_process(prepared, raw).findings]

    info = pipe.model_info
    return predict, f"{info['name']}@{info['version']}"


def run_app(source, annotator: str = "", task: str = "cxr", reviewer: bool = False) -> int:
    """Open the labeling app over an image source; returns the exit code."""
    app = QApplication.instance() or QApplication([])
    try:
        store = LabelStore.open_for(source)
        schema = load_schema(task)
    except LabelingError as e:
        QMessageBox.critical(None, "medws label", str(e))
        return 2
    session = LabelingSession(store, source.images(), schema, annotator, reviewer)
    predictor, model_name = cxr_predictor()
    win = LabelingWindow(session, predictor, model_name)
    win.resize(1400, 900)
    win.show()
    return int(app.exec())
