"""Start the workstation (interactive, or offscreen to render a screenshot and exit)."""
from __future__ import annotations

import logging
import os
import sys
import time

logger = logging.getLogger(__name__)


def run(root: str | None, open_uid: str | None = None, screenshot_path: str | None = None, user: str = "",
        timeout_s: float = 60.0, select_first: bool = True, side_by_side: bool = False) -> int:
    """Run the GUI; with ``screenshot_path`` render offscreen, save the PNG and return."""
    if screenshot_path:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QThreadPool  # noqa: PLC0415
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from workstation.core.store import ReadingStore  # noqa: PLC0415
    from workstation.core.users import UserStore  # noqa: PLC0415
    from workstation.qt.main_window import MainWindow, screenshot  # noqa: PLC0415

    app = QApplication.instance() or QApplication(sys.argv[:1])
    store = ReadingStore.open(root)
    users = UserStore.for_root(store.root)
    win = MainWindow(store, users, user=user or os.environ.get("USER", ""))
    win.show()
    state = {"opened": False, "failed": ""}
    win.study_opened.connect(lambda _u: state.update(opened=True))
    win.load_failed.connect(lambda m: state.update(failed=m))
    win.refresh_worklist()
    if open_uid:
        win.open_study(open_uid)
        if side_by_side and not screenshot_path:
            win.study_opened.connect(lambda _u: win.toggle_compare())
    if not screenshot_path:
        return app.exec()

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if state["failed"]:
            print(state["failed"], file=sys.stderr)
            return 1
        if (not open_uid or state["opened"]) and QThreadPool.globalInstance().activeThreadCount() == 0:
            break
        time.sleep(0.01)
    else:
        print(f"timed out after {timeout_s:.0f} s waiting for the study to open", file=sys.stderr)
        return 1
    if open_uid and side_by_side and win.session:
        win.toggle_compare()
    if open_uid and select_first and win.session and win.session.review.items:
        win.select_finding(win.session.review.items[0].id)
    if open_uid and win.session:
        win.viewer.fit()
    for _ in range(5):
        app.processEvents()
    out = screenshot(win, screenshot_path)
    print(out)
    win.close()
    store.close()
    return 0
