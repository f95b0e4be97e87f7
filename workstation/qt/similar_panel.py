"""The similar-cases panel: confirmed past cases like the open study, with thumbnails,
findings and the excerpt of their signed reports.

The panel only shows what :class:`workstation.core.similar.SimilarCases` returns; the
query runs in a pool thread (:mod:`workstation.qt.workers`) and the list is filled from
its ``done`` signal.  Double-clicking a case asks the window to open it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QSpinBox, QVBoxLayout, QWidget)

from workstation.qt.workers import Worker, start

logger = logging.getLogger(__name__)

FINDINGS = ("any finding", "nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion",
            "pneumothorax", "lung_nodule", "liver_lesion")


def case_text(case: Any) -> str:
    """Two lines per case: similarity, date, modality, findings; the signed report's excerpt."""
    labels = ", ".join(sorted({f["label"] for f in case.findings})) or "no AI findings"
    date = case.study_date or "-"
    head = f"{case.similarity:.2f}  {date}  {case.modality}  [{labels}]"
    body = case.report_excerpt if case.report_excerpt else f"(report: {case.report_state})"
    return f"{head}\n{body}"


class SimilarCasesPanel(QWidget):
    """Similar cases of the current study (or of a drawn region)."""

    results_ready = Signal(int)
    query_failed = Signal(str)
    open_requested = Signal(str)

    def __init__(self, root: str | Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.root = root
        self.study_uid: str | None = None
        self._api: Any = None
        self._workers: set[Worker] = set()
        self.find_button = QPushButton("Find similar cases")
        self.k = QSpinBox(minimum=1, maximum=50, value=10)
        self.signed_only = QCheckBox("signed only")
        self.signed_only.setChecked(True)
        self.finding = QComboBox()
        self.finding.addItems(FINDINGS)
        self.status = QLabel("open a study")
        self.list = QListWidget()
        self.list.setIconSize(QSize(96, 96))
        self.list.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.find_button)
        row.addWidget(QLabel("k"))
        row.addWidget(self.k)
        row2 = QHBoxLayout()
        row2.addWidget(self.signed_only)
        row2.addWidget(self.finding)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addLayout(row2)
        lay.addWidget(self.status)
        lay.addWidget(self.list, 1)
        self.find_button.clicked.connect(self.query_study)
        self.list.itemDoubleClicked.connect(lambda it: self.open_requested.emit(it.data(Qt.ItemDataRole.UserRole)))

    # ------------------------------------------------------------ model access
    def api(self) -> Any:
        if self._api is None:
            from workstation.core.similar import SimilarCases

            self._api = SimilarCases(self.root)
        return self._api

    def filters(self) -> Any:
        from dicom_node.similarity import Filters

        f = self.finding.currentText()
        return Filters(signed_only=self.signed_only.isChecked(), finding=None if f == FINDINGS[0] else f)

    def set_study(self, study_uid: str) -> None:
        """The window opened a study: forget the old results."""
        self.study_uid = study_uid
        self.list.clear()
        self.status.setText("press 'Find similar cases'")

    # ------------------------------------------------------------ queries (off the GUI thread)
    def query_study(self) -> Worker | None:
        if not self.study_uid:
            return None
        uid, k, flt = self.study_uid, self.k.value(), self.filters()
        return self._run(lambda _p: self.api().by_study(uid, k, flt))

    def query_region(self, sop_instance_uid: str, box: list[float]) -> Worker | None:
        if not self.study_uid:
            return None
        uid, k, flt = self.study_uid, self.k.value(), self.filters()
        return self._run(lambda _p: self.api().by_region(uid, sop_instance_uid, tuple(box), k, flt))

    def _run(self, fn) -> Worker:
        self.status.setText("searching…")
        w = Worker("similar cases", fn)
        w.signals.done.connect(self.show_cases)
        w.signals.failed.connect(self._failed)
        w.signals.finished.connect(lambda: self._workers.discard(w))
        self._workers.add(w)
        return start(w)

    def _failed(self, msg: str) -> None:
        self.status.setText(msg)
        self.query_failed.emit(msg)

    def show_cases(self, cases: list[Any]) -> None:
        self.list.clear()
        for c in cases:
            item = QListWidgetItem(case_text(c))
            item.setData(Qt.ItemDataRole.UserRole, c.study_uid)
            if c.thumbnail_png:
                pm = QPixmap()
                pm.loadFromData(c.thumbnail_png, "PNG")
                item.setIcon(QIcon(pm))
            self.list.addItem(item)
        self.status.setText(f"{len(cases)} similar case(s)" if cases else "no similar cases with these filters")
        self.results_ready.emit(len(cases))

    def close_api(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
