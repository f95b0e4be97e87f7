"""The similar-cases panel, offscreen with pytest-qt: query off the GUI thread, list with
thumbnails and report excerpts, double-click asks to open the case; and the main window
carries it."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from tests.similar.conftest import sign_report  # noqa: E402
from tests.similar.test_query import effusion, index_all  # noqa: E402

pytestmark = pytest.mark.usefixtures("cxr_embed_model")


def test_panel_lists_similar_cases(qtbot, small_archive):
    from workstation.qt.similar_panel import SimilarCasesPanel

    sa = small_archive
    index_all(sa)
    q, other = effusion(sa)[0], effusion(sa)[2]
    sign_report(sa.db, other, "Right pleural effusion, unchanged. No pneumothorax.")
    panel = SimilarCasesPanel(sa.root)
    qtbot.addWidget(panel)
    panel.set_study(q)
    assert panel.signed_only.isChecked()  # confirmed cases by default
    with qtbot.waitSignal(panel.results_ready, timeout=60_000) as sig:
        panel.query_study()
    assert sig.args == [1]
    item = panel.list.item(0)
    assert "Right pleural effusion, unchanged" in item.text() and "pleural_effusion" in item.text()
    assert not item.icon().isNull()  # thumbnail
    with qtbot.waitSignal(panel.open_requested) as opened:
        panel.list.itemDoubleClicked.emit(item)
    assert opened.args == [other]
    # all cases, filtered to a finding type
    panel.signed_only.setChecked(False)
    panel.finding.setCurrentText("pleural_effusion")
    with qtbot.waitSignal(panel.results_ready, timeout=60_000) as sig:
        panel.query_study()
    assert sig.args == [3] and panel.list.count() == 3
    # a drawn box on the image
    with qtbot.waitSignal(panel.results_ready, timeout=60_000):
        panel.query_region(sa.studies[q]["sop"], [300, 300, 460, 470])
    assert panel.list.count() == 3
    # errors are shown, not raised
    panel.set_study("1.2.3.404")
    with qtbot.waitSignal(panel.query_failed, timeout=60_000) as failed:
        panel.query_study()
    assert "no study 1.2.3.404" in failed.args[0] and "no study" in panel.status.text()
    panel.close_api()


def test_main_window_has_the_panel(qtbot, small_archive):
    from workstation.core.store import ReadingStore
    from workstation.core.users import UserStore
    from workstation.qt.main_window import MainWindow

    sa = small_archive
    store = ReadingStore.open(sa.root)
    win = MainWindow(store, UserStore.for_root(sa.root), user="dr", refresh_s=0)
    qtbot.addWidget(win)
    assert win.similar_dock.widget() is win.similar
    win.study_opened.emit(effusion(sa)[0])
    assert win.similar.study_uid == effusion(sa)[0]
    win.similar.close_api()
    store.close()
