"""Time to build and encode the AI result objects of one study, on CPU.

For a chest radiograph study (a 2048 x 2048 16-bit CR, three findings with
outlines) and a CT study (60 slices of 512 x 512, two nodules with 3-D masks):
seconds to build the TID 1500 SR, the SEG and the GSPS with highdicom and
write each to bytes (what the outbox would send), plus the draft report.
This is the result-object share of issue 4's ≤ 3 s end-to-end budget.

Results: ``benchmarks/results/bench_results.json`` and ``.md``.

    python benchmarks/bench_results.py [--n 10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _encode(ds) -> int:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.tell()


def _cr_case():
    from dicom_node.findings import AnalysisResult, Finding, ImageRef, ModelInfo
    from tests.results.sources import make_cr

    ds = make_cr(2048, 2048)
    ref = ImageRef.from_dataset(ds)
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ring = lambda cx, cy, r: tuple((float(cx + r * np.cos(a)), float(cy + r * 1.3 * np.sin(a))) for a in t)  # noqa: E731
    findings = (
        Finding("pneumothorax", 0.93, contour=ring(1450, 500, 180), laterality="left", zone="upper", image=ref),
        Finding("pleural_effusion", 0.71, box=(200, 1500, 800, 1850), laterality="right", zone="lower", image=ref),
        Finding("nodule_mass", 0.66, contour=ring(700, 900, 40), laterality="right", zone="middle", image=ref),
    )
    return AnalysisResult("cxr", ModelInfo("cxr-lesion", "bench"), findings), [ds]


def _ct_case():
    from dicom_node.findings import AnalysisResult, Finding, ImageRef, ModelInfo
    from tests.results.sources import make_ct_series

    series = make_ct_series(60, 512)
    refs = tuple(ImageRef.from_dataset(ds) for ds in series)
    zz, yy, xx = np.mgrid[0:6, 0:512, 0:512]
    findings = []
    for k, (z0, cy, cx, r) in enumerate([(20, 200, 150, 9), (40, 300, 380, 6)]):
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) <= (r * (1 - abs(zz - 2.5) / 4)) ** 2
        findings.append(Finding("nodule", 0.9 - 0.1 * k, long_axis_mm=2.0 * r, short_axis_mm=1.6 * r,
                                volume_mm3=float(m.sum()), type="solid", lobe="RUL" if k == 0 else "LLL",
                                mask=m, mask_images=refs[z0:z0 + 6]))
    return AnalysisResult("ct_nodule", ModelInfo("ct-nodule", "bench"), tuple(findings)), series


def measure(case, n: int) -> dict[str, dict[str, float]]:
    from dicom_node.gsps import build_presentation_state
    from dicom_node.report import draft_report
    from dicom_node.seg import build_segmentation
    from dicom_node.sr import build_measurement_report

    result, sources = case
    steps = {
        "SR (TID 1500)": lambda: _encode(build_measurement_report(result, sources)),
        "SEG": lambda: _encode(build_segmentation(result, sources)),
        "GSPS": lambda: _encode(build_presentation_state(result, sources)),
        "draft report (EN+KO)": lambda: len(draft_report(result, language="en").text)
        + len(draft_report(result, language="ko").text),
    }
    out: dict[str, dict[str, float]] = {}
    totals = []
    for _ in range(n):
        total = 0.0
        for name, fn in steps.items():
            t0 = time.perf_counter()
            size = fn()
            dt_s = time.perf_counter() - t0
            total += dt_s
            out.setdefault(name, {"times": [], "bytes": size})["times"].append(dt_s)  # type: ignore[union-attr]
        totals.append(total)
    summary = {name: {"median_s": statistics.median(v["times"]), "max_s": max(v["times"]), "bytes": v["bytes"]}
               for name, v in out.items()}
    summary["total"] = {"median_s": statistics.median(totals), "max_s": max(totals), "bytes": 0}
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    cases = {"CR 2048x2048, 3 findings": _cr_case(), "CT 60 x 512x512, 2 nodules (3-D masks)": _ct_case()}
    measure(cases["CR 2048x2048, 3 findings"], 1)  # warm-up: imports, code dictionaries
    results = {name: measure(case, args.n) for name, case in cases.items()}
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "python": platform.python_version(), "n": args.n}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = ["# Result objects benchmark (build + encode, CPU)", "",
             f"{meta['date']}, {meta['platform']}, Python {meta['python']}, n = {args.n} per case.", ""]
    for case, rows in results.items():
        lines += [f"## {case}", "", "| object | median s | max s | encoded bytes |", "|---|---|---|---|"]
        for name, r in rows.items():
            size = f"{r['bytes']:,}" if r["bytes"] else ""
            lines.append(f"| {name} | {r['median_s']:.3f} | {r['max_s']:.3f} | {size} |")
        lines.append("")
    (args.out / "bench_results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
