"""The workstation on an archive filled by the real analysis pipeline (nothing planted).

A real NIH radiograph (wrapped as DX) and a low-dose CT go through
``dicom_node.analysis.analyze_study`` with the installed models; the workstation then shows
the findings with the registry's model name and version, the review is signed into a
VERIFIED SR, and the CT's derived (denoised) series is shown side by side.
"""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import Qt

from dicom_node import samples
from workstation.core import demo, display, signing
from workstation.core.store import ReadingStore
from workstation.core.users import UserStore
from workstation.qt.main_window import MainWindow
from workstation.qt.panels import SHORTCUTS, SignDialog

PASSWORD = "reading-room-7"
NIH_IMAGE = "images/00002846_013.png"  # NIH labels: consolidation, effusion, infiltration, pneumonia


_BUILT: dict[str, tuple] = {}  # the archive is built once per test session (about 10 s of real analysis)


@pytest.fixture
def analysed(tmp_path_factory, shared_data):
    from dicom_node.tasks import TaskCache
    from models.errors import ModelError
    from models.registry import Registry

    try:
        lesions = Registry().get("cxr-lesions").card
    except ModelError as e:
        pytest.skip(f"chest X-ray models not installed: {e}")
    if TaskCache().available("ct-denoise"):
        pytest.skip("ct-denoise model not installed")
    if "root" in _BUILT:
        return _BUILT["root"]
    nih = shared_data / "cxr" / "nih"
    rec = {r["file"]: r for r in json.loads((nih / "labels.json").read_text())}[NIH_IMAGE]
    chest = demo.nih_as_dicom(nih / NIH_IMAGE, rec, patient_id="NIH-PIPE-1")
    chest.PatientName = "NIH^PIPELINE"
    ct = samples.ct_series(n_slices=20, size=96, seed=3, patient_id="LDCT-0001")
    for ds in ct:
        ds.CTDIvol = 1.4  # low dose: routed to ct-denoise as well as ct-nodule
        ds.PatientName = "LOW^DOSE"
    root = tmp_path_factory.mktemp("pipeline") / "root"
    chest_uid, ct_uid = demo.build_analyzed(root, [[chest], ct])
    _BUILT["root"] = (root, chest_uid, ct_uid, lesions)
    return _BUILT["root"]


@pytest.fixture
def window(qtbot, analysed):
    root, chest_uid, ct_uid, lesions = analysed
    store = ReadingStore.open(root)
    users = UserStore.for_root(root)
    if users.get("drkim") is None:
        users.add("drkim", "radiologist", PASSWORD, "Kim^Jisoo")
    win = MainWindow(store, users, user="drkim", refresh_s=0)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win, store, chest_uid, ct_uid, lesions
    win.close()
    store.close()


def _open(qtbot, win, uid):
    with qtbot.waitSignal(win.study_opened, timeout=30000):
        win.open_study(uid)
    return win.session


def test_real_ai_findings_reviewed_and_signed(qtbot, window, monkeypatch):
    win, store, chest_uid, _ct, lesions = window
    rows = store.db.query("SELECT model_name, model_version, data FROM findings WHERE study_uid = ?", (chest_uid,))
    assert [(r["model_name"], r["model_version"]) for r in rows] == [("cxr-lesions", lesions.version)]
    ai = json.loads(rows[0]["data"])["findings"]
    assert ai, "the shipped model finds nothing on this NIH image any more: pick another one"
    s = _open(qtbot, win, chest_uid)
    assert s.report_text.strip(), "the pipeline's draft is shown"
    assert len(s.review.items) == len(ai)
    assert {(it.model_name, it.model_version) for it in s.review.items} == {("cxr-lesions", lesions.version)}
    table = win.findings.table
    texts = [table.item(r, c).text() for r in range(table.rowCount()) for c in range(table.columnCount())
             if table.item(r, c)]
    assert any("cxr-lesions" in t and lesions.version in t for t in texts)
    # the overlays are drawn from the real findings' geometry
    first = s.review.items[0]
    win.select_finding(first.id)
    before = win.viewer.grab().toImage()
    s.toggle_overlay(first.id)
    assert win.viewer.grab().toImage() != before
    s.toggle_overlay(first.id)
    # accept one, reject the others (as the radiologist decides), through the keys
    win.viewer.setFocus()
    qtbot.keyClick(win.viewer, Qt.Key.Key_A)
    for it in s.review.items[1:]:
        win.select_finding(it.id)
        qtbot.keyClick(win.viewer, Qt.Key.Key_X)
    assert [it.status for it in s.review.items] == ["accepted"] + ["rejected"] * (len(ai) - 1)
    assert len(store.audit.events("finding.accept")) == 1
    side = first.laterality or ""
    text = (f"FINDINGS:\n- {side.capitalize()} {first.label.replace('_', ' ')}.\n- No pneumothorax.\n\n"
            f"IMPRESSION:\n1. {side.capitalize()} {first.label.replace('_', ' ')}.\n")
    s.set_report_text(text)
    assert not [m for m in s.qa_messages() if m.blocking]
    monkeypatch.setattr(SignDialog, "exec", lambda dlg: (dlg.password.setText(PASSWORD),
                                                         SignDialog.DialogCode.Accepted)[1])
    with qtbot.waitSignal(win.signed, timeout=30000) as blocker:
        win.sign_interactive()
    sr = pydicom.dcmread(blocker.args[0].sr_path)
    assert sr.VerificationFlag == "VERIFIED" and sr.StudyInstanceUID == chest_uid
    assert signing.latest_sr(store, chest_uid, "VERIFIED").SOPInstanceUID == sr.SOPInstanceUID
    draft = signing.latest_sr(store, chest_uid, "UNVERIFIED")  # the pipeline's SR is the predecessor
    pred = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == draft.SOPInstanceUID
    assert store.db.query("SELECT kind FROM ai_objects WHERE sop_instance_uid = ?", (draft.SOPInstanceUID,))


def test_ct_original_and_denoised_side_by_side(qtbot, window):
    win, store, _chest, ct_uid, _l = window
    s = _open(qtbot, win, ct_uid)
    assert any(k == "D" for k, _ in SHORTCUTS)
    assert not s.series.derived and s.pair is not None
    derived = s.compare_series
    assert derived.derived and "ct-denoise" in derived.derivation
    win.viewer.setFocus()
    qtbot.keyClick(win.viewer, Qt.Key.Key_D)
    assert s.compare_active
    w = win.viewer.width()
    assert win.viewer.pane_width() == pytest.approx(w / 2)
    img = win.viewer.grab().toImage().convertToFormat(win.viewer.grab().toImage().Format.Format_Grayscale8)
    arr = np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * img.height()).reshape(img.height(), -1)
    left, right = arr[:, : int(w / 2) - 2].astype(int), arr[:, int(w / 2) + 2: w].astype(int)
    n = min(left.shape[1], right.shape[1])
    assert left.std() > 5 and right.std() > 5 and np.abs(left[:, :n] - right[:, :n]).mean() > 0.1
    # same slice: scrolling moves both panes to the same position
    for key in (Qt.Key.Key_Down, Qt.Key.Key_Down, Qt.Key.Key_Up):
        qtbot.keyClick(win.viewer, key)
        j = s.pair.derived_index(s.slice_index)
        assert derived.positions[j] == pytest.approx(s.series.positions[s.slice_index])
        np.testing.assert_array_equal(s.compare_values(), derived.frames[j])
    # same window: a preset applies to both panes
    qtbot.keyClick(win.viewer, Qt.Key.Key_2)
    np.testing.assert_array_equal(s.compare_image8(),
                                  display.window_to_uint8(s.compare_values(), s.window, derived.invert))
    # same zoom/pan: one transform; a point maps to the same image pixel in both panes
    qtbot.keyClick(win.viewer, Qt.Key.Key_Plus)
    from PySide6.QtCore import QPointF
    pl, pr = QPointF(100, 200), QPointF(100 + win.viewer.pane_width(), 200)
    assert win.viewer._image_point(pl) == pytest.approx(win.viewer._image_point(pr))
    qtbot.keyClick(win.viewer, Qt.Key.Key_D)
    assert not s.compare_active and win.viewer.pane_width() == pytest.approx(w)


def test_ct_task_finding_is_drawn_on_its_slice_and_selected(qtbot, window):
    """A finding in the ``models.ct`` JSON form (centre in patient mm, no image reference): test
    data written with ``models.ct.findings.describe`` from a known mask, because the shipped
    nodule model finds nothing on the phantom."""
    from models.ct.findings import describe
    from models.ct.volume import CTVolume

    win, store, _chest, ct_uid, _l = window
    s = _open(qtbot, win, ct_uid)
    series = s.series
    mask = np.zeros((series.n, *series.shape), bool)
    mask[4, 30:38, 50:60] = True
    dz = series.positions[1] - series.positions[0]
    first_ipp = np.asarray(series.origin, float)
    vol = CTVolume(series.frames, (abs(dz), series.spacing[0], series.spacing[1]), first_ipp)
    finding = {"label": "nodule", "probability": 0.9, "type": "solid", **describe(mask, series.frames, vol)}
    store.put_analysis_result(ct_uid, {"task": "ct-nodule", "model": {"name": "ct-nodule-seg", "version": "test"},
                                       "findings": [finding]}, kind="ct_nodule")
    s = _open(qtbot, win, ct_uid)
    it = next(i for i in s.review.items if i.model_version == "test")
    assert it.frame == 4 and it.sop_uid == s.series.sop_uids[4] and it.box
    win.select_finding(it.id)
    assert s.slice_index == 4 and it in s.visible_items()
    s.set_slice(0)
    assert it not in s.visible_items()


def test_ct_finding_mask_on_some_slices_is_aligned_to_the_series(qtbot, window):
    """A CT task's finding carries its 3-D mask on the slices it lies on (``mask`` +
    ``mask_images``, as ``dicom_node.tasks.with_ct_masks`` writes it): the viewer gets a
    series-aligned stack, so scrolling paints the mask on the right slices only."""
    from dicom_node.findings import encode_mask

    win, store, _chest, ct_uid, _l = window
    s = _open(qtbot, win, ct_uid)
    series = s.series
    uids = series.sop_uids
    planes = np.zeros((2, *series.shape), bool)
    planes[:, 40:48, 20:30] = True
    finding = {"label": "liver_lesion", "probability": 0.8, "type": "hypoenhancing",
               "mask": encode_mask(planes),
               "mask_images": [{"sop_instance_uid": uids[k], "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"} for k in (7, 8)],
               "image": {"sop_instance_uid": uids[7], "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"}}
    store.put_analysis_result(ct_uid, {"task": "liver", "model": {"name": "ct-liver-lesion-seg", "version": "masks"},
                                       "findings": [finding]}, kind="ct_liver")
    s = _open(qtbot, win, ct_uid)
    it = next(i for i in s.review.items if i.model_version == "masks")
    stack = s.seg_masks[it.seg_key]
    assert stack.shape == (series.n, *series.shape)
    assert [k for k in range(series.n) if stack[k].any()] == [7, 8]
    for k in (0, 7, 8, series.n - 1):  # painting every slice works (the stack is indexed by slice)
        s.set_slice(k)
        win.viewer.grab()
