"""The PySide6 labeling app (pytest-qt, offscreen): label a box and a mask, undo/redo,
review, export; autosave is visible to another connection at once."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from labeling_tool.core.export import export_dataset  # noqa: E402
from labeling_tool.core.schema import load_schema  # noqa: E402
from labeling_tool.core.session import LabelingSession, window_to_uint8  # noqa: E402
from labeling_tool.core.sources import FolderSource  # noqa: E402
from labeling_tool.core.store import LabelStore  # noqa: E402
from labeling_tool.qt.app import LabelingWindow  # noqa: E402
from training.datasets.medws_export import load_medws_export  # noqa: E402


def _mouse(widget, kind, pos, button=Qt.LeftButton):
    pos = QPointF(*pos)
    buttons = Qt.NoButton if kind == QEvent.MouseButtonRelease else button
    ev = QMouseEvent(kind, pos, QPointF(widget.mapToGlobal(pos.toPoint())), button, buttons, Qt.NoModifier)
    QApplication.sendEvent(widget, ev)


def _drag(canvas, points, button=Qt.LeftButton):
    pts = [canvas.to_widget(x, y) for x, y in points]
    _mouse(canvas, QEvent.MouseButtonPress, (pts[0].x(), pts[0].y()), button)
    for p in pts[1:]:
        _mouse(canvas, QEvent.MouseMove, (p.x(), p.y()), button)
    _mouse(canvas, QEvent.MouseButtonRelease, (pts[-1].x(), pts[-1].y()), button)


def test_window_level_lut():
    out = window_to_uint8(np.array([0.0, 50.0, 100.0, 200.0]), 100, 100)
    assert out[0] == 0 and out[-1] == 255 and 120 < out[2] < 135
    assert window_to_uint8(np.array([0.0]), 100, 100, invert=True)[0] == 255


@pytest.fixture
def window(qtbot, deid_folder):
    source = FolderSource(deid_folder)
    store = LabelStore.open_for(source)
    session = LabelingSession(store, source.images(), load_schema("cxr"), annotator="alice")
    win = LabelingWindow(session)
    qtbot.addWidget(win)
    win.resize(900, 700)
    win.show()
    qtbot.waitUntil(lambda: win.canvas.has_image, timeout=10000)
    return win


def test_label_box_mask_review_export(qtbot, window, deid_folder, tmp_path):
    s, canvas = window.session, window.canvas
    iid = s.image_id
    # a box of nodule/mass
    window.tool_buttons["box"].click()
    window.class_buttons["nodule_mass"].click()
    assert s.tool == "box" and s.label == "nodule_mass"
    _drag(canvas, [(5, 6), (15, 20), (25, 40)])
    boxes = [a for a in s.store.annotations(iid) if a.kind == "box"]
    assert len(boxes) == 1 and boxes[0].label == "nodule_mass"
    assert boxes[0].box() == pytest.approx((5, 6, 25, 40), abs=0.6)
    # autosaved: another connection sees it while the app is open
    other = LabelStore(deid_folder / "medws-labels.sqlite")
    assert [a.kind for a in other.annotations(iid)] == ["box"]
    other.close()
    # a brush mask of consolidation, then the eraser
    window.tool_buttons["brush"].click()
    window.class_buttons["consolidation"].click()
    window.brush_spin.setValue(3)
    _drag(canvas, [(10, 30), (30, 30)])
    mask = [a for a in s.store.annotations(iid) if a.kind == "mask"][0].mask()
    assert mask[30, 20] and mask[30, 10] and not mask[5, 5]
    window.tool_buttons["eraser"].click()
    _drag(canvas, [(20, 30)])
    assert not [a for a in s.store.annotations(iid) if a.kind == "mask"][0].mask()[30, 20]
    # undo/redo via the keyboard shortcuts
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier)
    assert [a for a in s.store.annotations(iid) if a.kind == "mask"][0].mask()[30, 20]
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert not [a for a in s.store.annotations(iid) if a.kind == "mask"][0].mask()[30, 20]
    # a polygon
    window.tool_buttons["polygon"].click()
    window.class_buttons["pleural_effusion"].click()
    for x, y in [(2, 50), (40, 50), (40, 60)]:
        p = canvas.to_widget(x, y)
        _mouse(canvas, QEvent.MouseButtonPress, (p.x(), p.y()))
        _mouse(canvas, QEvent.MouseButtonRelease, (p.x(), p.y()))
    canvas.finish_polygon()
    assert [a.label for a in s.store.annotations(iid) if a.kind == "polygon"] == ["pleural_effusion"]
    # list shows status
    assert window.image_list.item(s.index).data(Qt.UserRole) == "in_progress"
    window.done_button.click()
    assert s.store.status(iid) == "labelled"
    # review: return with a comment, fix, approve
    window.reviewer_check.click()
    assert s.reviewer and window.approve_button.isEnabled()
    window.comment_edit.setText("extend the effusion outline")
    window.return_button.click()
    assert s.store.status(iid) == "in_progress"
    assert "extend the effusion" in window.review_label.text()
    window.done_button.click()
    window.approve_button.click()
    assert s.store.status(iid) == "reviewed"
    assert window.image_list.item(s.index).data(Qt.UserRole) == "reviewed"
    # a second image labelled normal via the image-label checkbox and the keyboard
    qtbot.keyClick(window, Qt.Key_N)
    qtbot.waitUntil(lambda: canvas.has_image and s.index == 1, timeout=10000)
    window.label_checks["normal"].click()
    assert s.store.image_labels(s.image_id, "alice") == {"normal"}
    window.done_button.click()
    window.approve_button.click()
    # export: the reviewed images, de-identified, loadable by training
    manifest = export_dataset(s.store, tmp_path / "ds")
    assert len(manifest["images"]) == 2
    recs = {r.image_id: r for r in load_medws_export(tmp_path / "ds")}
    assert recs[iid].labels == {"nodule_mass", "consolidation", "pleural_effusion"}
    assert recs[iid].masks["consolidation"][30, 10]
    assert recs[s.image_id].is_normal


def test_window_level_drag_and_tool_shortcuts(qtbot, window):
    s, canvas = window.session, window.canvas
    w0 = s.view.width
    _drag(canvas, [(10, 10), (20, 10), (40, 10)], button=Qt.RightButton)
    assert s.view.width != w0
    assert not s.store.annotations(s.image_id)  # a W/L drag draws nothing
    qtbot.keyClick(window, Qt.Key_P)
    assert s.tool == "polygon" and window.tool_buttons["polygon"].isChecked()
    qtbot.keyClick(window, Qt.Key_4)
    assert s.label == "pleural_effusion" and window.class_buttons["pleural_effusion"].isChecked()


def test_ai_proposals_in_the_app(qtbot, deid_folder):
    source = FolderSource(deid_folder)
    store = LabelStore.open_for(source)
    session = LabelingSession(store, source.images(), load_schema("cxr"), annotator="alice")

    def predictor(pixels):
        return [{"label": "consolidation", "probability": 0.9, "box": [2, 3, 20, 30]}]

    win = LabelingWindow(session, predictor, "fake@0.0.1")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.canvas.has_image, timeout=10000)
    win.preannotate_button.click()
    qtbot.waitUntil(lambda: win.proposal_list.count() == 1, timeout=10000)
    win.proposal_list.setCurrentRow(0)
    win.accept_button.click()
    a = [x for x in store.annotations(session.image_id) if x.source == "ai"][0]
    assert a.ai_state == "accepted" and a.annotator == "alice"


def test_preannotation_with_the_installed_cxr_model(qtbot, shared_data, tmp_path):
    """The registry's chest X-ray model proposes findings on a real NIH radiograph."""
    from labeling_tool.qt.app import cxr_predictor

    predictor, name = cxr_predictor()
    if predictor is None:
        pytest.skip("no cxr-lung/cxr-lesions model installed in the registry")
    folder = tmp_path / "png"
    folder.mkdir()
    src = sorted((shared_data / "cxr" / "nih" / "images").glob("*.png"))[0]
    (folder / src.name).write_bytes(src.read_bytes())
    source = FolderSource(folder)
    store = LabelStore.open_for(source)
    session = LabelingSession(store, source.images(), load_schema("cxr"), annotator="alice")
    win = LabelingWindow(session, predictor, name)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.canvas.has_image, timeout=10000)
    win.preannotate_button.click()
    qtbot.waitUntil(lambda: not win._jobs, timeout=60000)
    qtbot.wait(50)
    proposals = [a for a in store.annotations(session.image_id) if a.source == "ai"]
    assert all(a.ai_state == "proposed" and a.model == name for a in proposals)
    assert all(a.label in load_schema("cxr").names for a in proposals)
