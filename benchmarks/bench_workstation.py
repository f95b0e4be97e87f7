"""Reading workstation responsiveness, offscreen on CPU.

1. Time to first image for a chest radiograph study: from ``MainWindow.open_study(uid)``
   (worklist action) through the worker thread (index query, file read and decode,
   modality/VOI LUT, findings and report from the index) to the first completed paint of
   the viewer with its overlays.  The study is the real SIIM-ACR CR from
   ``../shared/data`` (1024 x 1024, JPEG baseline) when present, else the node's generated
   DX; plus a 2048 x 2048 16-bit DX to show the size dependence.  Target ≤ 1 s.
2. CT scrolling rate: a 512 x 512 CT series, one slice per step (session scroll + window
   to 8 bits + synchronous repaint of a 1000 x 900 viewer with text overlays).
   Target ≥ 30 slices/s.

Results: ``benchmarks/results/bench_workstation.json`` and ``.md``.

    python benchmarks/bench_workstation.py [--n 10] [--ct-slices 60] [--scroll-steps 300]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

TARGET_OPEN_S = 1.0
TARGET_SCROLL = 30.0
SHARED_CR = "cxr/samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _store_ds(store, ds) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.dcm"
        ds.save_as(p, enforce_file_format=True)
        store.archive.store_file(p)


def build(root: Path, ct_slices: int, shared: Path | None) -> dict[str, str]:
    import pydicom

    from dicom_node import samples
    from workstation.core import demo
    from workstation.core.store import ReadingStore

    studies: dict[str, str] = {}
    store = ReadingStore.open(root)
    try:
        if shared is not None and (shared / SHARED_CR).is_file():
            ds = pydicom.dcmread(shared / SHARED_CR)
            store.archive.store_file(shared / SHARED_CR)
            studies["CR 1024x1024 JPEG (real, SIIM-ACR)"] = demo.put_result(store, ds, demo.chest_findings(ds))
        ds = samples.dx_chest(size=1024, seed=5, patient_id="BENCH-1024")
        _store_ds(store, ds)
        studies["DX 1024x1024 16-bit"] = demo.put_result(store, ds, demo.chest_findings(ds))
        ds = samples.dx_chest(size=2048, seed=6, patient_id="BENCH-2048")
        _store_ds(store, ds)
        studies["DX 2048x2048 16-bit"] = demo.put_result(store, ds, demo.chest_findings(ds))
        series = samples.ct_series(n_slices=ct_slices, size=512, seed=7, patient_id="BENCH-CT")
        for s in series:
            _store_ds(store, s)
        studies["CT"] = str(series[0].StudyInstanceUID)
    finally:
        store.close()
    return studies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="opens per study (median and p95 reported)")
    ap.add_argument("--ct-slices", type=int, default=60)
    ap.add_argument("--scroll-steps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--name", default="bench_workstation")
    args = ap.parse_args()
    shared = Path(os.environ.get("MEDWS_SHARED_DATA", REPO.parent / "shared" / "data"))
    shared = shared if shared.is_dir() else None

    from PySide6.QtCore import QThreadPool
    from PySide6.QtWidgets import QApplication

    from workstation.core.store import ReadingStore
    from workstation.core.users import UserStore
    from workstation.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        studies = build(root, args.ct_slices, shared)
        store = ReadingStore.open(root)
        win = MainWindow(store, UserStore.for_root(root), user="bench")
        win.resize(1600, 1000)
        win.show()
        app.processEvents()
        opened: list[str] = []
        win.study_opened.connect(opened.append)

        def open_and_paint(uid: str) -> float:
            opened.clear()
            t0 = time.perf_counter()
            win.open_study(uid)
            while not opened:
                app.processEvents()
                time.sleep(0.0005)
            win.viewer.repaint()  # synchronous paint of the image and overlays
            t = time.perf_counter() - t0
            QThreadPool.globalInstance().waitForDone()
            app.processEvents()
            return t

        open_results = {}
        for name, uid in studies.items():
            if name == "CT":
                continue
            open_and_paint(uid)  # warm-up (imports, caches)
            times = [open_and_paint(uid) for _ in range(args.n)]
            open_results[name] = {"median_s": float(np.median(times)), "p95_s": float(np.percentile(times, 95)),
                                  "max_s": float(np.max(times)), "n": len(times)}

        # CT scrolling
        ct_open = open_and_paint(studies["CT"])
        win.viewer.resize(1000, 900)
        win.viewer.fit()
        s = win.session
        assert s is not None and s.series.modality == "CT"
        s.set_slice(0)
        direction = 1
        t0 = time.perf_counter()
        for _ in range(args.scroll_steps):
            if not 0 <= s.slice_index + direction < s.series.n:
                direction = -direction
            s.scroll(direction)
            win.viewer.repaint()
        dt_s = time.perf_counter() - t0
        rate = args.scroll_steps / dt_s
        win.close()
        store.close()

    chest_key = next(iter(open_results))
    result = {
        "benchmark": args.name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "qt_platform": os.environ.get("QT_QPA_PLATFORM")},
        "time_to_first_image": open_results,
        "time_to_first_image_target_s": TARGET_OPEN_S,
        "time_to_first_image_reference_study": chest_key,
        "time_to_first_image_meets_target": open_results[chest_key]["median_s"] <= TARGET_OPEN_S,
        "ct": {"slices": args.ct_slices, "matrix": "512x512", "viewer": "1000x900", "open_s": ct_open,
               "scroll_steps": args.scroll_steps, "slices_per_s": rate},
        "ct_scroll_target": TARGET_SCROLL,
        "ct_scroll_meets_target": rate >= TARGET_SCROLL,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Reading workstation benchmark", "",
             f"{result['date']}, {result['machine']['platform']}, {result['machine']['cpus']} CPUs, "
             f"Qt platform `{result['machine']['qt_platform']}`.", "",
             "| time to first image (open → first paint) | median s | p95 s | n |", "|---|---|---|---|"]
    for name, r in open_results.items():
        lines.append(f"| {name} | {r['median_s']:.3f} | {r['p95_s']:.3f} | {r['n']} |")
    lines += ["", f"Target ≤ {TARGET_OPEN_S:.1f} s (reference: {chest_key}): "
                  f"{'met' if result['time_to_first_image_meets_target'] else 'NOT met'}.", "",
              "| CT scrolling | slices/s |", "|---|---|",
              f"| 512 x 512, {args.ct_slices} slices, viewer 1000 x 900, {args.scroll_steps} steps | {rate:.1f} |", "",
              f"Target ≥ {TARGET_SCROLL:.0f} slices/s: {'met' if rate >= TARGET_SCROLL else 'NOT met'}.", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
