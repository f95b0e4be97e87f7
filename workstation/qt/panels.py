"""Side panels: worklist, findings, report with live QA, help, sign dialog.

Each panel renders a model (worklist rows, :class:`ReadingSession`) and writes user
input back to it; none keeps reading state of its own.
"""
from __future__ import annotations

import logging

from PySide6.QtCore import QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QKeyEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from dicom_node.report import probability_text
from workstation.core import qa
from workstation.core.session import ReadingSession
from workstation.core.worklist import STATUSES, WorklistRow

logger = logging.getLogger(__name__)

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Enter / double-click", "open the selected study (worklist)"),
    ("Ctrl+F", "search the worklist"),
    ("Esc", "cancel the tool / back to the worklist"),
    ("Up / Down, PgUp / PgDn, wheel", "previous / next slice (CT)"),
    ("Left drag", "window / level (throttled)"),
    ("Shift+left drag, middle drag", "pan"),
    ("Right drag, Ctrl+wheel, + / -", "zoom"),
    ("F", "fit image to window"),
    ("D", "original | denoised side by side (CT with a derived series; same slice, window, zoom, pan)"),
    ("1 … 5", "preset: default (image VOI), lung, mediastinum, bone, liver"),
    ("M", "distance tool (mm); C clears measurements"),
    ("O", "show / hide all overlays"),
    ("T", "show / hide the selected finding's overlay"),
    ("[ / ]", "overlay opacity down / up"),
    ("N / P", "next / previous finding (centres and scrolls to it)"),
    ("A", "accept the selected finding"),
    ("X", "reject the selected finding"),
    ("E", "edit: draw a new box for the selected finding"),
    ("L", "edit: draw a new outline (click points; double-click or Enter closes)"),
    ("S", "change the selected finding's side (left / right / bilateral)"),
    ("B", "add a finding by hand: draw its box"),
    ("Ctrl+Enter", "sign the report"),
    ("F1", "this help"),
)


class WorklistPanel(QWidget):
    """Table of studies with search and status filter; Enter or double-click opens."""

    open_requested = Signal(str)
    filter_changed = Signal()

    COLUMNS = ("Priority", "Status", "Patient ID", "Name", "Accession", "Date", "Modality", "AI findings")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit(placeholderText="Search patient ID, name or accession (Ctrl+F)")
        self.status = QComboBox()
        self.status.addItems(["all statuses", *STATUSES])
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(lambda _i: self._open_current())
        self.table.installEventFilter(self)
        top = QHBoxLayout()
        top.addWidget(self.search, 3)
        top.addWidget(self.status, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.table)
        self._debounce = QTimer(self, singleShot=True, interval=200)
        self._debounce.timeout.connect(self.filter_changed.emit)
        self.search.textChanged.connect(lambda _t: self._debounce.start())
        self.status.currentIndexChanged.connect(lambda _i: self.filter_changed.emit())
        self.rows: list[WorklistRow] = []

    def query(self) -> tuple[str, str | None]:
        st = self.status.currentText()
        return self.search.text(), (None if st == "all statuses" else st)

    def set_rows(self, rows: list[WorklistRow]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            vals = (r.priority, r.status, r.patient_id, r.patient_name.replace("^", " "), r.accession, r.study_date,
                    r.modalities, str(r.findings))
            for j, v in enumerate(vals):
                it = QTableWidgetItem(v)
                it.setData(Qt.ItemDataRole.UserRole, r.study_uid)
                if r.rank == 0 and j == 0:
                    it.setForeground(QColor(220, 40, 40))
                self.table.setItem(i, j, it)
        if rows:
            self.table.selectRow(0)

    def current_uid(self) -> str | None:
        i = self.table.currentRow()
        return self.rows[i].study_uid if 0 <= i < len(self.rows) else None

    def _open_current(self) -> None:
        uid = self.current_uid()
        if uid:
            self.open_requested.emit(uid)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.table and isinstance(event, QKeyEvent) and event.type() == QKeyEvent.Type.KeyPress \
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self._open_current()
            return True
        return super().eventFilter(obj, event)


class FindingsPanel(QWidget):
    """Findings with probability and model version; accept / reject / edit / add; overlay toggles."""

    accept_clicked = Signal()
    reject_clicked = Signal()
    edit_clicked = Signal()
    outline_clicked = Signal()
    add_clicked = Signal()

    COLUMNS = ("Show", "#", "Finding", "Side", "Prob.", "Size mm", "Model", "Status")
    LABELS = ("nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: ReadingSession | None = None
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemChanged.connect(self._item_changed)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.accept_btn = QPushButton("Accept (A)")
        self.reject_btn = QPushButton("Reject (X)")
        self.edit_btn = QPushButton("Edit box (E)")
        self.outline_btn = QPushButton("Edit outline (L)")
        self.add_btn = QPushButton("Add (B)")
        self.add_label = QComboBox()
        self.add_label.addItems(self.LABELS)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.valueChanged.connect(self._opacity_changed)
        for b, sig in ((self.accept_btn, self.accept_clicked), (self.reject_btn, self.reject_clicked),
                       (self.edit_btn, self.edit_clicked), (self.outline_btn, self.outline_clicked),
                       (self.add_btn, self.add_clicked)):
            b.clicked.connect(sig.emit)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        btns = QHBoxLayout()
        for b in (self.accept_btn, self.reject_btn, self.edit_btn, self.outline_btn):
            btns.addWidget(b)
        add = QHBoxLayout()
        add.addWidget(self.add_label, 1)
        add.addWidget(self.add_btn)
        op = QHBoxLayout()
        op.addWidget(QLabel("Overlay opacity"))
        op.addWidget(self.opacity, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("<b>AI findings</b>"))
        lay.addWidget(self.table)
        lay.addLayout(btns)
        lay.addLayout(add)
        lay.addLayout(op)

    def set_session(self, session: ReadingSession | None) -> None:
        self.session = session
        if session is not None:
            session.subscribe(self._on_session)
        self.refresh()

    def _on_session(self, kind: str) -> None:
        if kind in ("findings", "overlays", "selection"):
            self.refresh()

    def refresh(self) -> None:
        s = self.session
        with QSignalBlocker(self.table):
            items = s.review.items if s else []
            self.table.setRowCount(len(items))
            for i, it in enumerate(items):
                show = QTableWidgetItem()
                show.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                show.setCheckState(Qt.CheckState.Checked if s.overlay(it.id).visible else Qt.CheckState.Unchecked)
                vals = [it.ref, it.label, it.laterality or "", probability_text(it.probability) if it.probability is not None
                        else "—", f"{it.size_mm:.0f}" if it.size_mm else "",
                        f"{it.model_name} {it.model_version}".strip() if it.source == "ai" else "by hand",
                        it.status]
                self.table.setItem(i, 0, show)
                for j, v in enumerate(vals, 1):
                    cell = QTableWidgetItem(v)
                    if it.status == "rejected":
                        cell.setForeground(QColor(140, 140, 140))
                    elif it.status == "accepted":
                        cell.setForeground(QColor(30, 140, 60))
                    self.table.setItem(i, j, cell)
                for j in range(len(self.COLUMNS)):
                    self.table.item(i, j).setData(Qt.ItemDataRole.UserRole, it.id)
            if s and s.selected:
                for i, it in enumerate(items):
                    if it.id == s.selected:
                        self.table.selectRow(i)
                ov = s.overlay(s.selected)
                with QSignalBlocker(self.opacity):
                    self.opacity.setValue(int(round(ov.opacity * 100)))

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self.session is None or item.column() != 0:
            return
        fid = item.data(Qt.ItemDataRole.UserRole)
        want = item.checkState() == Qt.CheckState.Checked
        if self.session.overlay(fid).visible != want:
            self.session.toggle_overlay(fid)

    def _selection_changed(self) -> None:
        if self.session is None:
            return
        rows = self.table.selectionModel().selectedRows()
        if rows:
            fid = self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
            if fid != self.session.selected:
                self.select_requested(fid)

    def select_requested(self, fid: str) -> None:
        """Overridden by the main window to centre the viewer (default: select in the session)."""
        if self.session is not None:
            self.session.select(fid)

    def _opacity_changed(self, v: int) -> None:
        s = self.session
        if s is None:
            return
        targets = [s.selected] if s.selected else [it.id for it in s.review.items]
        for fid in targets:
            s.overlay(fid).opacity = v / 100.0
        s._emit("overlays")


class ReportPanel(QWidget):
    """Editable report text, structured items from accepted findings, and the live QA list."""

    sign_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: ReadingSession | None = None
        self.state = QLabel("")
        self.editor = QPlainTextEdit()
        self.editor.setPlaceholderText("Report text")
        self.items = QListWidget()
        self.items.setMaximumHeight(110)
        self.insert_btn = QPushButton("Insert selected item into text")
        self.insert_btn.clicked.connect(self._insert_item)
        self.qa_list = QListWidget()
        self.qa_list.setWordWrap(True)
        self.qa_list.itemActivated.connect(self._goto_message)
        self.qa_list.itemClicked.connect(self._goto_message)
        self.sign_btn = QPushButton("Sign… (Ctrl+Enter)")
        self.sign_btn.clicked.connect(self.sign_clicked.emit)
        lay = QVBoxLayout(self)
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Report</b>"))
        head.addStretch(1)
        head.addWidget(self.state)
        lay.addLayout(head)
        lay.addWidget(self.editor, 3)
        lay.addWidget(QLabel("Structured items (accepted findings)"))
        lay.addWidget(self.items)
        lay.addWidget(self.insert_btn)
        lay.addWidget(QLabel("QA checks"))
        lay.addWidget(self.qa_list, 2)
        lay.addWidget(self.sign_btn)
        self._qa_timer = QTimer(self, singleShot=True, interval=150)
        self._qa_timer.timeout.connect(self.refresh_qa)
        self.editor.textChanged.connect(self._text_changed)
        self.messages: list[qa.QAMessage] = []

    def set_session(self, session: ReadingSession | None) -> None:
        self.session = session
        if session is not None:
            session.subscribe(self._on_session)
            with QSignalBlocker(self.editor):
                self.editor.setPlainText(session.report_text)
        self.refresh()

    def _on_session(self, kind: str) -> None:
        if kind == "findings":
            self.refresh()
        elif kind == "report" and self.session and self.editor.toPlainText() != self.session.report_text:
            with QSignalBlocker(self.editor):
                self.editor.setPlainText(self.session.report_text)
            self._qa_timer.start()

    def _text_changed(self) -> None:
        if self.session is not None and not self.session.report_frozen:
            self.session.set_report_text(self.editor.toPlainText())
            self._qa_timer.start()

    def refresh(self) -> None:
        s = self.session
        self.items.clear()
        if s is None:
            return
        for it in s.review.accepted():
            side = f"{it.laterality} " if it.laterality else ""
            size = f", {it.size_mm:.0f} mm" if it.size_mm else ""
            self.items.addItem(f"{side}{it.label.replace('_', ' ')}{size}".capitalize())
        self.editor.setReadOnly(s.report_frozen)
        self.sign_btn.setEnabled(not s.report_frozen)
        self.state.setText("SIGNED (frozen)" if s.report_frozen else "draft")
        self.refresh_qa()

    def refresh_qa(self) -> None:
        s = self.session
        self.qa_list.clear()
        self.messages = s.qa_messages() if s else []
        for m in self.messages:
            it = QListWidgetItem(m.format())
            it.setForeground(QColor(200, 30, 30) if m.blocking else QColor(190, 120, 0))
            self.qa_list.addItem(it)
        if s is not None and not self.messages:
            self.qa_list.addItem(QListWidgetItem("No QA findings"))
        self._highlight()

    def _highlight(self) -> None:
        sels = []
        for m in self.messages:
            if m.start is None or m.end is None:
                continue
            sel = QTextEdit.ExtraSelection()
            fmt = QTextCharFormat()
            fmt.setBackground(QColor(255, 200, 200) if m.blocking else QColor(255, 235, 180))
            cur = QTextCursor(self.editor.document())
            cur.setPosition(m.start)
            cur.setPosition(m.end, QTextCursor.MoveMode.KeepAnchor)
            sel.cursor = cur
            sel.format = fmt
            sels.append(sel)
        self.editor.setExtraSelections(sels)

    def _goto_message(self, item: QListWidgetItem) -> None:
        i = self.qa_list.row(item)
        if 0 <= i < len(self.messages) and self.messages[i].start is not None:
            cur = self.editor.textCursor()
            cur.setPosition(self.messages[i].start)
            cur.setPosition(self.messages[i].end, QTextCursor.MoveMode.KeepAnchor)
            self.editor.setTextCursor(cur)
            self.editor.setFocus()

    def _insert_item(self) -> None:
        it = self.items.currentItem()
        if it is not None and self.session and not self.session.report_frozen:
            self.editor.appendPlainText(it.text() + ".")


class HelpPanel(QTextBrowser):
    """Keyboard shortcuts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
        self.setHtml(f"<h3>Keyboard shortcuts</h3><table cellspacing=4>{rows}</table>")


class SignDialog(QDialog):
    """Asks for the password and lists unresolved QA warnings; blocking ones disable signing."""

    def __init__(self, user: str, messages: list[qa.QAMessage], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign report")
        self.user = QLineEdit(user)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.warnings = QListWidget()
        self.warnings.setWordWrap(True)
        for m in messages:
            it = QListWidgetItem(m.format())
            it.setForeground(QColor(200, 30, 30) if m.blocking else QColor(190, 120, 0))
            self.warnings.addItem(it)
        if not messages:
            self.warnings.addItem("No unresolved QA warnings")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #c00")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Sign")
        blocked = any(m.blocking for m in messages)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not blocked)
        if blocked:
            self.error.setText("Blocking QA checks must be resolved before signing.")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(QLabel("Unresolved QA warnings (signing acknowledges them):"))
        lay.addWidget(self.warnings)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
