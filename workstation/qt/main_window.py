"""Main window: worklist page and reading page (viewer, findings, report), progress, shortcuts.

Slots are thin: they call :mod:`workstation.core` and let the session notify the widgets.
Loading, worklist queries and signing run in :mod:`workstation.qt.workers`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QWidget,
)

from dicom_node.privacy import phi

from workstation.core import display, qa
from workstation.core.compare import place_ct_findings
from workstation.core.session import ReadingSession
from workstation.core.signing import SignResult, SigningError, addendum, sign
from workstation.core.store import ReadingStore
from workstation.core.study import align_plane_masks, load_study_files, read_seg_overlays, seg_stack
from workstation.core.users import UserStore
from workstation.qt.panels import FindingsPanel, HelpPanel, ReportPanel, SignDialog, WorklistPanel
from workstation.qt.viewer import ImageViewer
from workstation.qt.similar_panel import SimilarCasesPanel
from workstation.qt.workers import Worker, start

logger = logging.getLogger(__name__)


def load_for_reading(store: ReadingStore, study_uid: str, progress=lambda p, t="": None) -> dict[str, Any]:
    """Everything needed to open a study (runs in a worker thread)."""
    progress(5, "reading files")
    loaded = load_study_files(store.study_paths(study_uid), study_uid)
    progress(70, "loading findings")

    def spacing_for(sop: str):
        hit = loaded.series_for(sop)
        return hit[0].spacing if hit else (loaded.series[0].spacing if len(loaded.series) == 1 else None)

    state = store.review_state(study_uid, spacing_for)
    for it in state.items:
        if it.sop_uid:
            hit = loaded.series_for(it.sop_uid)
            if hit is not None:
                it.frame = hit[1]
    state.spacing = loaded.series[0].spacing
    place_ct_findings(loaded, state.items)  # models.ct findings: slice and box from their centre
    progress(85, "reading SEG overlays")
    align_plane_masks(loaded, state)  # the findings' own per-slice masks first (CT)
    attach_seg_objects(loaded, state)
    report = store.report(study_uid)
    progress(100, "ready")
    return {"study": loaded, "review": state, "report": report}


def attach_seg_objects(loaded, state) -> None:
    """Masks from the study's DICOM SEG objects become the SEG overlays of the findings of that label."""
    for modality, _uid, path in loaded.other:
        if modality != "SEG":
            continue
        try:
            segs = read_seg_overlays(path)
        except Exception as e:  # noqa: BLE001 - an unreadable SEG must not stop the reading
            logger.warning("SEG %s not shown: %s", phi(path.name), e)
            continue
        for it in state.items:
            planes = segs.get(it.label)
            if not planes or it.seg_key:
                continue
            hit = loaded.series_for(it.sop_uid) if it.sop_uid else None
            series = hit[0] if hit else loaded.series[0]
            stack = seg_stack(planes, series)
            if stack is not None:
                key = f"seg:{it.label}:{series.series_uid}"
                state.segs[key] = stack if series.n > 1 else stack[0]
                it.seg_key = key


class MainWindow(QMainWindow):
    """The reading workstation."""

    worklist_loaded = Signal(int)
    study_opened = Signal(str)
    load_failed = Signal(str)
    signed = Signal(object)
    sign_failed = Signal(str)

    def __init__(self, store: ReadingStore, users: UserStore, user: str = "",
                 qa_config: qa.QAConfig | None = None, refresh_s: float = 20.0) -> None:
        super().__init__()
        self.store = store
        self.users = users
        self.user = user
        self.qa_config = qa_config or qa.QAConfig()
        self.session: ReadingSession | None = None
        self._workers: set[Worker] = set()
        self.setWindowTitle("medws — reading workstation")
        self.resize(1600, 1000)

        self.worklist = WorklistPanel()
        self.viewer = ImageViewer()
        self.findings = FindingsPanel()
        self.findings.select_requested = self.select_finding  # type: ignore[method-assign]
        self.report = ReportPanel()
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.findings)
        right.addWidget(self.report)
        right.setSizes([380, 620])
        self.reading = QSplitter(Qt.Orientation.Horizontal)
        self.reading.addWidget(self.viewer)
        self.reading.addWidget(right)
        self.reading.setSizes([1050, 550])
        self.pages = QStackedWidget()
        self.pages.addWidget(self.worklist)
        self.pages.addWidget(self.reading)
        self.setCentralWidget(self.pages)

        self.help = QDockWidget("Help (F1)")
        self.help.setWidget(HelpPanel())
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.help)
        self.help.hide()
        self.similar = SimilarCasesPanel(store.root)  # similar cases (docs/similar.md)
        self.similar_dock = QDockWidget("Similar cases")
        self.similar_dock.setWidget(self.similar)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.similar_dock)
        self.study_opened.connect(self.similar.set_study)
        self.similar.open_requested.connect(self.open_study)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.status_text = QLabel("")
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.progress)

        self.worklist.open_requested.connect(self.open_study)
        self.worklist.filter_changed.connect(self.refresh_worklist)
        self.viewer.cursor_text.connect(self.status_text.setText)
        self.viewer.measured.connect(lambda mm: self.status_text.setText(f"distance {mm:.1f} mm"))
        self.viewer.box_drawn.connect(self._box_drawn)
        self.viewer.outline_drawn.connect(self._outline_drawn)
        self.findings.accept_clicked.connect(lambda: self.decide("accept"))
        self.findings.reject_clicked.connect(lambda: self.decide("reject"))
        self.findings.edit_clicked.connect(lambda: self.set_mode("edit"))
        self.findings.outline_clicked.connect(lambda: self.set_mode("outline"))
        self.findings.add_clicked.connect(lambda: self.set_mode("box"))
        self.report.sign_clicked.connect(self.sign_interactive)
        self._save_timer = QTimer(self, singleShot=True, interval=800)
        self._save_timer.timeout.connect(self.save_draft)
        self._edit_target: str | None = None
        self._install_shortcuts()
        # new studies and AI results appear without user action while the worklist is shown
        self._poll = QTimer(self, interval=int(refresh_s * 1000))
        self._poll.timeout.connect(self._poll_worklist)
        if refresh_s > 0:
            self._poll.start()

    # ------------------------------------------------------------------ shortcuts
    def _install_shortcuts(self) -> None:
        def win(key: str, fn) -> None:
            QShortcut(QKeySequence(key), self, fn, context=Qt.ShortcutContext.WindowShortcut)

        win("F1", self.toggle_help)
        win("Ctrl+F", self._focus_search)
        win("Ctrl+Return", self.sign_interactive)
        # single keys act on the image side only (never while typing in the report)
        self.findings.table.installEventFilter(self)

    def _image_keys(self) -> dict[int, Any]:
        K = Qt.Key
        keys: dict[int, Any] = {
            K.Key_Up: lambda: self._scroll(-1), K.Key_Down: lambda: self._scroll(1),
            K.Key_PageUp: lambda: self._scroll(-10), K.Key_PageDown: lambda: self._scroll(10),
            K.Key_F: self.viewer.fit, K.Key_D: self.toggle_compare, K.Key_Plus: lambda: self._zoom(1.25), K.Key_Equal: lambda: self._zoom(1.25),
            K.Key_Minus: lambda: self._zoom(0.8), K.Key_M: lambda: self.set_mode("measure"),
            K.Key_C: lambda: self.session and self.session.clear_measurements(), K.Key_O: self._toggle_all,
            K.Key_T: lambda: self.session and self.session.selected and self.session.toggle_overlay(self.session.selected),
            K.Key_BracketLeft: lambda: self._opacity(-0.1), K.Key_BracketRight: lambda: self._opacity(0.1),
            K.Key_N: lambda: self._step_finding(1), K.Key_P: lambda: self._step_finding(-1),
            K.Key_A: lambda: self.decide("accept"), K.Key_X: lambda: self.decide("reject"),
            K.Key_E: lambda: self.set_mode("edit"), K.Key_B: lambda: self.set_mode("box"),
            K.Key_L: lambda: self.set_mode("outline"), K.Key_S: self.cycle_side,
            K.Key_Return: self.viewer.finish_outline, K.Key_Enter: self.viewer.finish_outline,
        }
        for i, name in enumerate(display.PRESET_ORDER, 1):
            keys[int(K.Key_0) + i] = lambda n=name: self.session and self.session.apply_preset(n)
        return keys

    def handle_key(self, e: QKeyEvent) -> bool:
        """Keyboard actions (listed in the help panel); True when the key was used."""
        key, mods = e.key(), e.modifiers()
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        if key == Qt.Key.Key_F1:
            self.toggle_help()
            return True
        if ctrl and key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.sign_interactive()
            return True
        if ctrl and key == Qt.Key.Key_F:
            self._focus_search()
            return True
        if key == Qt.Key.Key_Escape:
            self._escape()
            return True
        if self.pages.currentIndex() != 1 or ctrl or (mods & Qt.KeyboardModifier.AltModifier):
            return False
        fn = self._image_keys().get(key)
        if fn is None:
            return False
        fn()
        return True

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802 - keys the viewer did not use arrive here
        if not self.handle_key(e):
            super().keyPressEvent(e)

    def eventFilter(self, obj, e) -> bool:  # noqa: N802
        if obj is self.findings.table and e.type() == QEvent.Type.KeyPress and self.handle_key(e):
            return True
        return super().eventFilter(obj, e)

    def toggle_compare(self) -> None:
        """Original | denoised side by side (D); says so when the series has no derived series."""
        s = self.session
        if s is None:
            return
        if s.toggle_compare():
            self.status_text.setText(f"side by side: original | {s.compare_label()}")
        else:
            self.status_text.setText("side by side off" if s.pair is not None else
                                     "no derived (denoised) series for this series")

    def toggle_help(self) -> None:
        self.help.setVisible(not self.help.isVisible())

    def _focus_search(self) -> None:
        self.show_worklist()
        self.worklist.search.setFocus()

    def _escape(self) -> None:
        if self.viewer.mode != "wl":
            self.set_mode("wl")
            self._edit_target = None
        elif self.pages.currentIndex() == 1:
            self.show_worklist()

    def _scroll(self, d: int) -> None:
        if self.session:
            self.session.scroll(d)

    def _zoom(self, f: float) -> None:
        if self.session:
            self.session.set_transform(self.session.transform.zoomed(f, self.viewer.width() / 2, self.viewer.height() / 2))

    def _toggle_all(self) -> None:
        if self.session:
            anyvis = any(self.session.overlay(i.id).visible for i in self.session.review.items)
            self.session.set_all_overlays(not anyvis)

    def _opacity(self, d: float) -> None:
        s = self.session
        if s and s.selected:
            s.set_opacity(s.selected, s.overlay(s.selected).opacity + d)

    def _step_finding(self, d: int) -> None:
        s = self.session
        if not s or not s.review.items:
            return
        ids = [i.id for i in s.review.items]
        cur = ids.index(s.selected) if s.selected in ids else -1
        self.select_finding(ids[(cur + d) % len(ids)])

    # ------------------------------------------------------------------ background work
    def _run(self, name: str, fn, *args, on_done=None, on_fail=None) -> Worker:
        w = Worker(name, fn, *args)
        self._workers.add(w)
        self.progress.setValue(0)
        self.progress.show()
        self.progress.setFormat(f"{name} %p%")
        if self.session is not None:
            self.session.busy = name
        w.signals.progress.connect(lambda p, t: (self.progress.setValue(p), self.status_text.setText(t) if t else None))
        if on_done:
            w.signals.done.connect(on_done)
        w.signals.failed.connect(on_fail or (lambda msg: self.status_text.setText(msg)))
        w.signals.finished.connect(lambda: self._finished(w))
        return start(w, QThreadPool.globalInstance())

    def _finished(self, w: Worker) -> None:
        self._workers.discard(w)
        if not self._workers:
            self.progress.hide()
            if self.session is not None:
                self.session.busy = ""
                self.viewer.update()

    # ------------------------------------------------------------------ worklist
    def show_worklist(self) -> None:
        self.save_draft()
        self.pages.setCurrentIndex(0)
        self.refresh_worklist()
        self.worklist.table.setFocus()

    def _poll_worklist(self) -> None:
        if self.pages.currentIndex() == 0 and not self._workers:
            self.refresh_worklist()

    def refresh_worklist(self) -> None:
        text, status = self.worklist.query()
        self._run("worklist", lambda _p: self.store.worklist(text, status), on_done=self._worklist_done)

    def _worklist_done(self, rows) -> None:
        keep = self.worklist.current_uid()
        self.worklist.set_rows(rows)
        for i, r in enumerate(rows):
            if r.study_uid == keep:
                self.worklist.table.selectRow(i)
        self.status_text.setText(f"{len(rows)} studies")
        self.worklist_loaded.emit(len(rows))

    # ------------------------------------------------------------------ open a study
    def open_study(self, study_uid: str) -> None:
        self.save_draft()
        self.status_text.setText("opening study…")
        self._run("loading study", lambda p: load_for_reading(self.store, study_uid, p),
                  on_done=lambda r: self._study_loaded(study_uid, r),
                  on_fail=lambda msg: (self.status_text.setText(msg), self.load_failed.emit(msg)))

    def _study_loaded(self, study_uid: str, r: dict[str, Any]) -> None:
        rep = r["report"]
        session = ReadingSession(study=r["study"], review=r["review"], user=self.user, report_text=rep.text,
                                 report_language=rep.language, report_frozen=rep.state == "signed",
                                 qa_config=self.qa_config)
        session.review.subscribe(lambda d: self.store.save_decision(study_uid, d, session.review.get(d.finding_id)))
        session.subscribe(self._session_changed)
        self.session = session
        self.pages.setCurrentIndex(1)
        self.viewer.set_session(session)
        self.findings.set_session(session)
        self.report.set_session(session)
        self.viewer.setFocus()
        self.setWindowTitle(f"medws — {session.study.series[0].modality} study")
        self.study_opened.emit(study_uid)

    def _session_changed(self, kind: str) -> None:
        if kind == "report":
            self._save_timer.start()

    def save_draft(self) -> None:
        s = self.session
        self._save_timer.stop()
        if s is None or s.report_frozen:
            return
        stored = self.store.report(s.study.study_uid)
        if stored.text != s.report_text:
            self.store.save_draft_text(s.study.study_uid, s.report_text, self.user or "unknown", s.report_language)

    # ------------------------------------------------------------------ findings
    def select_finding(self, fid: str) -> None:
        if self.session is not None:
            self.session.select(fid, self.viewer.width(), self.viewer.height())

    def decide(self, action: str) -> None:
        s = self.session
        if s is None or s.selected is None or s.report_frozen:
            return
        if action == "accept":
            s.review.accept(s.selected, self.user)
        elif action == "reject":
            s.review.reject(s.selected, self.user)

    def cycle_side(self) -> None:
        """Change the selected finding's side: left → right → bilateral → left (an edit, audited)."""
        s = self.session
        if s is None or s.selected is None or s.report_frozen:
            return
        order = ("left", "right", "bilateral")
        cur = s.review.get(s.selected).laterality
        nxt = order[(order.index(cur) + 1) % 3] if cur in order else "left"
        s.review.edit(s.selected, self.user, laterality=nxt)

    def set_mode(self, mode: str) -> None:
        """Viewer tool: ``wl``, ``measure``, ``box`` (add by hand), ``edit`` (new box), ``outline`` (new outline)."""
        s = self.session
        if mode in ("edit", "outline"):
            if s is None or s.selected is None:
                self.status_text.setText("select a finding first")
                return
            self._edit_target = s.selected
            self.viewer.set_mode("box" if mode == "edit" else "outline")
            self.status_text.setText("draw the new box (Esc cancels)" if mode == "edit" else
                                     "click the outline's points; double-click or Enter closes it (Esc cancels)")
            return
        self._edit_target = None
        self.viewer.set_mode(mode)
        tips = {"measure": "distance tool: drag between two points", "box": "draw a box to add a finding"}
        self.status_text.setText(tips.get(mode, ""))

    def _outline_drawn(self, pts: list) -> None:
        s = self.session
        if s is not None and not s.report_frozen and self._edit_target is not None:
            s.review.edit(self._edit_target, self.user, contour=pts)
        self._edit_target = None
        self.viewer.set_mode("wl")

    def _box_drawn(self, box: list) -> None:
        s = self.session
        if s is None or s.report_frozen:
            return
        if self._edit_target is not None:
            s.review.edit(self._edit_target, self.user, box=box)
        else:
            it = s.add_finding(self.findings.add_label.currentText(), box)
            s.select(it.id)
        self._edit_target = None
        self.viewer.set_mode("wl")

    # ------------------------------------------------------------------ signing
    def sign_interactive(self) -> None:
        s = self.session
        if s is None or s.report_frozen:
            return
        dlg = SignDialog(self.user, s.qa_messages(), self)
        if dlg.exec() == SignDialog.DialogCode.Accepted:
            self.sign_with_password(dlg.user.text(), dlg.password.text())

    def sign_with_password(self, user: str, password: str) -> None:
        """Sign in a worker; emits ``signed(SignResult)`` or ``sign_failed(message)``."""
        s = self.session
        if s is None:
            return
        self.save_draft()
        uid, text, items = s.study.study_uid, s.report_text, list(s.review.items)
        self._run("signing", lambda _p: sign(self.store, self.users, uid, user, password, text, items,
                                              self.qa_config, language=s.report_language),
                  on_done=self._signed, on_fail=self._sign_failed)

    def add_addendum(self, user: str, password: str, text: str) -> None:
        s = self.session
        if s is None:
            return
        self._run("addendum", lambda _p: addendum(self.store, self.users, s.study.study_uid, user, password, text,
                                                   list(s.review.items)),
                  on_done=self._signed, on_fail=self._sign_failed)

    def _signed(self, result: SignResult) -> None:
        if self.session is not None:
            self.session.report_frozen = True
            self.report.refresh()
        self.status_text.setText(f"signed; VERIFIED SR stored and queued to {result.outbox_rows} peer(s)")
        self.signed.emit(result)

    def _sign_failed(self, msg: str) -> None:
        self.status_text.setText(msg)
        self.sign_failed.emit(msg)
        if self.isVisible() and QGuiApplication.platformName() not in ("offscreen", "minimal"):
            QMessageBox.warning(self, "Not signed", msg)

    def closeEvent(self, e) -> None:  # noqa: N802
        self.save_draft()
        QThreadPool.globalInstance().waitForDone(5000)
        super().closeEvent(e)


def screenshot(window: QWidget, path: Path | str) -> Path:
    """Save the window as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path)):
        raise OSError(f"could not write screenshot {path}")
    return path


__all__ = ["MainWindow", "load_for_reading", "attach_seg_objects", "screenshot", "SigningError"]
