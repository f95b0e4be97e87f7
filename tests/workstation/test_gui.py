"""The reading workstation end to end, offscreen with pytest-qt.

Worklist → open a chest study → toggle an overlay → accept one finding, reject another →
edit the report → the planted left/right error is flagged and blocks signing → fix →
sign → the VERIFIED SR is in the archive, referencing the draft, and queued to the PACS.
"""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from workstation.core import signing
from workstation.core.store import ReadingStore
from workstation.core.users import UserStore
from workstation.qt.main_window import MainWindow
from workstation.qt.panels import SignDialog

PASSWORD = "reading-room-7"


def qimage_to_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_Grayscale8)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=img.bytesPerLine() * img.height())
    return arr.reshape(img.height(), img.bytesPerLine())[:, : img.width()].copy()


@pytest.fixture
def window(qtbot, demo_root):
    root, studies = demo_root
    store = ReadingStore.open(root)
    users = UserStore.for_root(root)
    users.add("drkim", "radiologist", PASSWORD, "Kim^Jisoo")
    store.archive  # noqa: B018
    from dicom_node.peers import PeerRegistry
    PeerRegistry(store.db, store.audit).add("pacs", "ORTHANC", "127.0.0.1", 4242)
    win = MainWindow(store, users, user="drkim")
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win, store, studies
    win.close()
    store.close()


def move(widget, pos, buttons=Qt.MouseButton.NoButton):
    """A mouse-move event delivered to ``widget`` at ``pos`` (QTest's move is unreliable offscreen)."""
    from PySide6.QtCore import QCoreApplication, QEvent, QPointF
    from PySide6.QtGui import QMouseEvent
    p = QPointF(pos)
    ev = QMouseEvent(QEvent.Type.MouseMove, p, widget.mapToGlobal(p), Qt.MouseButton.NoButton, buttons,
                     Qt.KeyboardModifier.NoModifier)
    QCoreApplication.sendEvent(widget, ev)


def open_first(qtbot, win):
    with qtbot.waitSignal(win.worklist_loaded, timeout=10000):
        win.refresh_worklist()
    win.worklist.table.selectRow(0)
    with qtbot.waitSignal(win.study_opened, timeout=20000):
        qtbot.keyClick(win.worklist.table, Qt.Key.Key_Return)
    return win.session


def test_read_correct_and_sign_chest_study(qtbot, window, monkeypatch):
    win, store, studies = window
    with qtbot.waitSignal(win.worklist_loaded, timeout=10000):
        win.refresh_worklist()
    rows = win.worklist.rows
    assert rows[0].study_uid == studies.chest_uid and rows[0].ai_critical and rows[0].status == "draft"
    # search filters the worklist
    win.worklist.search.setText("KIM")
    qtbot.waitUntil(lambda: len(win.worklist.rows) == 1, timeout=5000)
    win.worklist.search.setText("")
    qtbot.waitUntil(lambda: len(win.worklist.rows) == 4, timeout=5000)
    assert win.worklist.current_uid() == studies.extra[0]  # the selection survives a refresh

    s = open_first(qtbot, win)
    assert s.study.study_uid == studies.chest_uid and win.pages.currentIndex() == 1
    by_label = {it.label: it for it in s.review.items}
    assert set(by_label) == {"pleural_effusion", "pneumothorax", "nodule_mass", "consolidation"}
    assert by_label["nodule_mass"].heatmap_key and by_label["consolidation"].seg_key
    # the study's DICOM SEG (pleural effusion segment) is the effusion's SEG overlay, on the source image
    eff_seg = s.seg_masks[by_label["pleural_effusion"].seg_key]
    assert eff_seg.shape == s.series.shape and eff_seg.any()
    x1, y1, x2, y2 = by_label["pleural_effusion"].box
    ys, xs = np.nonzero(eff_seg)
    assert x1 - 2 <= xs.min() and xs.max() <= x2 + 2 and y1 - 2 <= ys.min() and ys.max() <= y2 + 2

    # toggle the nodule's heat-map overlay off from the findings panel: the rendering changes
    nod = by_label["nodule_mass"]
    before = qimage_to_array(win.viewer.grab().toImage())
    row = [i for i, it in enumerate(s.review.items) if it.id == nod.id][0]
    win.findings.table.item(row, 0).setCheckState(Qt.CheckState.Unchecked)
    assert not s.overlay(nod.id).visible
    after = qimage_to_array(win.viewer.grab().toImage())
    assert np.abs(before.astype(int) - after.astype(int)).sum() > 0
    win.findings.table.item(row, 0).setCheckState(Qt.CheckState.Checked)
    assert s.overlay(nod.id).visible

    # accept the effusion (keyboard A), reject the pneumothorax (keyboard X)
    win.select_finding(by_label["pleural_effusion"].id)
    win.viewer.setFocus()
    qtbot.keyClick(win.viewer, Qt.Key.Key_A)
    win.select_finding(by_label["pneumothorax"].id)
    qtbot.keyClick(win.viewer, Qt.Key.Key_X)
    assert by_label["pleural_effusion"].status == "accepted"
    assert by_label["pneumothorax"].status == "rejected"
    win.select_finding(by_label["nodule_mass"].id)
    win.findings.accept_btn.click()
    win.select_finding(by_label["consolidation"].id)
    win.findings.reject_btn.click()
    # every decision is stored and audited with what the AI said
    events = store.audit.events("finding.accept")
    eff = [e for e in events if e["finding"] == by_label["pleural_effusion"].id][0]
    assert eff["actor"] == "drkim" and eff["ai"]["probability"] == pytest.approx(0.91)
    assert eff["ai"]["laterality"] == "left" and eff["before"]["status"] == "pending"
    assert store.audit.events("finding.reject")[0]["ai"]["label"] == "consolidation"

    # edit the report with a planted left/right error
    size = by_label["nodule_mass"].size_mm
    planted = (f"FINDINGS:\nRight pleural effusion.\nA {size:.0f} mm nodule in the right mid zone.\n"
               "No pneumothorax.\n")
    win.report.editor.setPlainText(planted)
    assert s.report_text == planted
    win.report.refresh_qa()
    msgs = win.report.messages
    lat = [m for m in msgs if m.check == "laterality"]
    assert len(lat) == 1 and lat[0].blocking and lat[0].line == 2 and "#1" in lat[0].message
    assert any("laterality" in win.report.qa_list.item(i).text() or "left" in win.report.qa_list.item(i).text()
               for i in range(win.report.qa_list.count()))
    dlg = SignDialog("drkim", msgs)
    assert not dlg.buttons.button(dlg.buttons.StandardButton.Ok).isEnabled()
    with qtbot.waitSignal(win.sign_failed, timeout=20000) as blocker:
        win.sign_with_password("drkim", PASSWORD)
    assert "laterality" in blocker.args[0] or "left" in blocker.args[0]
    assert signing.latest_sr(store, s.study.study_uid, "VERIFIED") is None

    # wrong password is refused
    fixed = planted.replace("Right pleural", "Left pleural")
    win.report.editor.setPlainText(fixed)
    with qtbot.waitSignal(win.sign_failed, timeout=20000) as blocker:
        win.sign_with_password("drkim", "not-the-password")
    assert "password" in blocker.args[0]

    def fill_and_accept(dlg):  # the modal sign dialog, answered as the radiologist would
        assert dlg.user.text() == "drkim" and dlg.warnings.count() >= 1
        dlg.password.setText(PASSWORD)
        return SignDialog.DialogCode.Accepted

    monkeypatch.setattr(SignDialog, "exec", fill_and_accept)
    with qtbot.waitSignal(win.signed, timeout=30000) as blocker:
        qtbot.keyClick(win.report.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    result = blocker.args[0]
    assert s.report_frozen and win.report.editor.isReadOnly()
    sr = pydicom.dcmread(result.sr_path)
    assert sr.VerificationFlag == "VERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Kim^Jisoo"
    assert sr.StudyInstanceUID == s.study.study_uid
    pred = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    draft = signing.latest_sr(store, s.study.study_uid, "UNVERIFIED")
    assert pred.ReferencedSOPInstanceUID == draft.SOPInstanceUID
    stored = signing.latest_sr(store, s.study.study_uid, "VERIFIED")
    assert stored.SOPInstanceUID == sr.SOPInstanceUID
    # the signed SR lists the accepted findings only
    import highdicom as hd
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr)
    groups = hd.sr.utils.find_content_items(doc, name=hd.sr.CodedConcept("125007", "DCM", "Measurement Group"),
                                             recursive=True)
    assert len(groups) == 2
    q = store.db.query("SELECT peer, state, sop_instance_uid FROM outbox")
    assert [(r["peer"], r["state"], r["sop_instance_uid"]) for r in q] == [("pacs", "pending", sr.SOPInstanceUID)]
    ev = store.audit.events("report.sign")[0]
    assert ev["actor"] == "drkim" and ev["sr_sop_instance_uid"] == sr.SOPInstanceUID
    assert store.report(s.study.study_uid).text == fixed
    with qtbot.waitSignal(win.worklist_loaded, timeout=10000):
        win.show_worklist()
    assert [r.status for r in win.worklist.rows if r.study_uid == s.study.study_uid] == ["signed"]

    # an addendum is a new VERIFIED SR referencing the signed one
    with qtbot.waitSignal(win.signed, timeout=30000) as blocker:
        win.add_addendum("drkim", PASSWORD, "Addendum: compare with prior when available.")
    add = pydicom.dcmread(blocker.args[0].sr_path)
    ref = add.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert add.VerificationFlag == "VERIFIED" and ref.ReferencedSOPInstanceUID == sr.SOPInstanceUID


def test_review_state_survives_reopen(qtbot, window):
    win, store, studies = window
    s = open_first(qtbot, win)
    first = s.review.items[0]
    win.select_finding(first.id)
    win.decide("reject")
    s.add_finding("pneumothorax", [100.0, 100.0, 200.0, 220.0])
    # edit a finding's box by drawing (E), then its outline by clicking points (L, Enter closes)
    from PySide6.QtCore import QPoint
    second = s.review.items[1]
    win.select_finding(second.id)
    win.viewer.setFocus()
    qtbot.keyClick(win.viewer, Qt.Key.Key_E)
    t = s.transform
    a = QPoint(*[int(v) for v in t.image_to_view(400, 300)])
    b = QPoint(*[int(v) for v in t.image_to_view(480, 420)])
    qtbot.mousePress(win.viewer, Qt.MouseButton.LeftButton, pos=a)
    move(win.viewer, b, Qt.MouseButton.LeftButton)
    qtbot.mouseRelease(win.viewer, Qt.MouseButton.LeftButton, pos=b)
    assert second.status == "accepted" and second.box == pytest.approx([400, 300, 480, 420], abs=1.5)
    assert win.viewer.mode == "wl"
    qtbot.keyClick(win.viewer, Qt.Key.Key_L)
    assert win.viewer.mode == "outline"
    for x, y in ((410, 310), (470, 310), (440, 400)):
        qtbot.mouseClick(win.viewer, Qt.MouseButton.LeftButton, pos=QPoint(*[int(v) for v in t.image_to_view(x, y)]))
    qtbot.keyClick(win.viewer, Qt.Key.Key_Return)
    assert len(second.contour) == 3 and second.box == pytest.approx([410, 310, 470, 400], abs=1.5)
    assert [e["finding"] for e in store.audit.events("finding.edit")][:2] == [second.id, second.id]
    side = second.laterality
    qtbot.keyClick(win.findings.table, Qt.Key.Key_S)  # keys work from the findings table too
    assert second.laterality != side and store.audit.events("finding.edit")[0]["after"]["laterality"] == second.laterality
    win.report.editor.setPlainText("edited draft text")
    win.save_draft()
    with qtbot.waitSignal(win.study_opened, timeout=20000):
        win.open_study(studies.chest_uid)
    s2 = win.session
    assert s2 is not s
    assert s2.review.get(first.id).status == "rejected"
    assert len(s2.review.get(second.id).contour) == 3
    assert s2.review.get(second.id).laterality == second.laterality
    manual = [it for it in s2.review.items if it.source == "manual"]
    assert len(manual) == 1 and manual[0].label == "pneumothorax" and manual[0].box == [100.0, 100.0, 200.0, 220.0]
    assert manual[0].laterality == "right"  # image left of a PA chest is the patient's right
    assert s2.report_text == "edited draft text"


def test_viewer_tools_on_ct(qtbot, window):
    win, store, studies = window
    with qtbot.waitSignal(win.study_opened, timeout=20000):
        win.open_study(studies.ct_uid)
    s = win.session
    assert s.series.modality == "CT" and s.series.n == 8
    pos = s.series.positions
    assert pos == sorted(pos)
    assert s.series.edge_labels == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    # selecting the finding scrolls to its slice and centres it
    nod = s.review.items[0]
    assert nod.label == "nodule" and nod.sop_uid
    s.set_slice(0)
    win.select_finding(nod.id)
    assert s.slice_index == s.series.index_of(nod.sop_uid) and s.slice_index != 0
    cx, cy = nod.centre()
    assert s.transform.image_to_view(cx, cy) == pytest.approx((win.viewer.width() / 2, win.viewer.height() / 2))
    assert nod in s.visible_items()
    s.scroll(1)
    assert nod not in s.visible_items()  # drawn on its own slice only
    start = s.slice_index
    win.viewer.setFocus()
    qtbot.keyClick(win.viewer, Qt.Key.Key_Down)
    assert s.slice_index == start + 1 and "slice" in s.slice_label() and "mm" in s.slice_label()
    qtbot.keyClick(win.viewer, Qt.Key.Key_2)  # lung preset
    assert s.preset == "lung" and s.window.center == -600
    qtbot.keyClick(win.viewer, Qt.Key.Key_5)
    assert s.preset == "liver"
    # W/L drag (throttled) changes the window
    w0 = s.window
    c = win.viewer.rect().center()
    qtbot.mousePress(win.viewer, Qt.MouseButton.LeftButton, pos=c)
    from PySide6.QtCore import QPoint
    move(win.viewer, c + QPoint(40, 20), Qt.MouseButton.LeftButton)
    qtbot.wait(40)  # the throttled W/L update
    qtbot.mouseRelease(win.viewer, Qt.MouseButton.LeftButton, pos=c + QPoint(40, 20))
    assert s.window != w0 and s.preset == "custom"
    # HU readout under the cursor equals the array value
    vx, vy = s.transform.image_to_view(256, 300)
    move(win.viewer, QPoint(int(round(vx)), int(round(vy))))
    ix, iy = s.transform.view_to_image(int(round(vx)), int(round(vy)))
    col, row = int(np.floor(ix + 0.5)), int(np.floor(iy + 0.5))
    assert win.viewer.last_readout.endswith(f"HU {s.current_values()[row, col]:.0f}")
    # distance tool in mm
    qtbot.keyClick(win.viewer, Qt.Key.Key_M)
    a = s.transform.image_to_view(100, 100)
    b = s.transform.image_to_view(200, 100)
    with qtbot.waitSignal(win.viewer.measured, timeout=2000) as blocker:
        qtbot.mousePress(win.viewer, Qt.MouseButton.LeftButton, pos=QPoint(int(a[0]), int(a[1])))
        move(win.viewer, QPoint(int(b[0]), int(b[1])), Qt.MouseButton.LeftButton)
        qtbot.mouseRelease(win.viewer, Qt.MouseButton.LeftButton, pos=QPoint(int(b[0]), int(b[1])))
    p1, p2 = s.measurements[-1]
    assert blocker.args[0] == pytest.approx(abs(p2[0] - p1[0]) * s.series.spacing[1], rel=1e-6)
    assert blocker.args[0] == pytest.approx(100 * s.series.spacing[1], rel=0.05)
    # zoom / fit
    z = s.transform.zoom
    qtbot.keyClick(win.viewer, Qt.Key.Key_Plus)
    assert s.transform.zoom > z
    qtbot.keyClick(win.viewer, Qt.Key.Key_F)
    assert s.transform.zoom == pytest.approx(z)
    # help panel lists the shortcuts
    qtbot.keyClick(win, Qt.Key.Key_F1)
    assert win.help.isVisible() and "distance tool" in win.help.widget().toPlainText()
