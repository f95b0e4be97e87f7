"""Make the workstation screenshots in ``docs/images/`` with ``medws workstation --screenshot``.

Builds a demo archive (the real SIIM-ACR chest CR from ../shared/data when present, else the
node's generated DX; a generated CT), records a radiologist's review of the chest study
(accept the effusion, reject the pneumothorax) and a report edit with a left/right error,
then renders: the worklist, the chest reading screen (overlays, findings, report, live QA)
and the CT reading screen.

    python scripts/workstation_screenshots.py [--out docs/images]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_CR = "cxr/samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = ap.parse_args()
    import pydicom

    from workstation.core import demo
    from workstation.core.store import ReadingStore
    from workstation.core.study import load_study_files

    shared = Path(os.environ.get("MEDWS_SHARED_DATA", REPO.parent / "shared" / "data")) / SHARED_CR
    chest = pydicom.dcmread(shared) if shared.is_file() else None
    if chest is not None:
        chest.PatientName, chest.PatientID, chest.AccessionNumber = "ANON^SIIM", "SIIM-0001", "ACC0001"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        st = demo.build(root, chest=chest, ct_slices=40)
        store = ReadingStore.open(root)
        loaded = load_study_files(store.study_paths(st.chest_uid))
        state = store.review_state(st.chest_uid, lambda _s: loaded.series[0].spacing)
        state.subscribe(lambda d: store.save_decision(st.chest_uid, d, state.get(d.finding_id)))
        by = {it.label: it for it in state.items}
        state.accept(by["pleural_effusion"].id, "drkim")
        state.reject(by["pneumothorax"].id, "drkim")
        state.accept(by["nodule_mass"].id, "drkim")
        text = ("FINDINGS:\n- Right pleural effusion with blunting of the costophrenic angle.\n"
                f"- {by['nodule_mass'].size_mm * 2:.0f} mm nodule in the right mid zone.\n"
                "- No pneumothorax.\n\nIMPRESSION:\n1. Pleural effusion.\n2. Right lung nodule; CT recommended.\n")
        store.save_draft_text(st.chest_uid, text, "drkim")
        store.close()
        args.out.mkdir(parents=True, exist_ok=True)
        shots = [("workstation_worklist.png", []), ("workstation_chest.png", ["--open", st.chest_uid]),
                 ("workstation_ct.png", ["--open", st.ct_uid])]
        for name, extra in shots:
            cmd = [sys.executable, "-m", "medws", "workstation", "--root", str(root), *extra,
                   "--screenshot", str(args.out / name)]
            subprocess.run(cmd, check=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
