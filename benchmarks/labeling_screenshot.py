"""Screenshot of the labeling app on a real NIH radiograph (docs/images/labeling.png).

Run: ``QT_QPA_PLATFORM=offscreen python benchmarks/labeling_screenshot.py [--data ../shared/data]``.
The annotations drawn are illustrative (a box and a brush stroke placed by this script),
not clinical labels.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = ap.parse_args()
    from PySide6.QtWidgets import QApplication

    from labeling_tool.core.schema import load_schema
    from labeling_tool.core.session import LabelingSession
    from labeling_tool.core.sources import FolderSource
    from labeling_tool.core.store import LabelStore
    from labeling_tool.qt.app import LabelingWindow

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp())
    for name in ("00000013_005.png", "00000032_001.png", "00000040_003.png"):
        src = Path(args.data) / "cxr" / "nih" / "images" / name
        if src.exists():
            shutil.copy(src, tmp / name)
    if not any(tmp.iterdir()):
        for src in sorted((Path(args.data) / "cxr" / "nih" / "images").glob("*.png"))[:3]:
            shutil.copy(src, tmp / src.name)
    source = FolderSource(tmp)
    store = LabelStore.open_for(source)
    session = LabelingSession(store, source.images(), load_schema("cxr"), annotator="alice")
    win = LabelingWindow(session)
    win.resize(1300, 820)
    win.show()
    while session.view.image is None:
        app.processEvents()
    iid = session.image_id
    store.add(iid, "alice", "box", "nodule_mass", {"x1": 300, "y1": 180, "x2": 350, "y2": 230})
    store.paint(iid, "alice", "pleural_effusion", session.view.image.pixels.shape,
                [(90, 400), (130, 420), (170, 430)], 14)
    store.add(iid, "ai", "box", "consolidation", {"x1": 120, "y1": 220, "x2": 200, "y2": 320}, source="ai",
              ai_state="proposed", model="cxr-lesions@illustration")
    session.set_label("pleural_effusion")
    session.set_tool("brush")
    for _ in range(20):
        app.processEvents()
    out = REPO / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    win.grab().save(str(out / "labeling.png"))
    print(out / "labeling.png")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
