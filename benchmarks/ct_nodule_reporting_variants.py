"""Segmentation and duplicate-suppression variants of the nodule task on VALIDATION cases
(never the held-out sets): the served classifier's scores on the cases of
``choose_threshold`` (training region as reconstructed and at 3 mm, seeds 5000+, two
nodules each) are computed once; each variant then re-runs only what the task reports
(``NodulePipeline.detections``/``post_process``) with its ``segment_blob`` options and
``touch_radius``, re-chooses the threshold as ``choose_threshold`` does (≤ 1 reported false
finding per scan) and measures the output-level validation FROC and the found nodules' Dice
and diameter error.  This is how the variants evaluated on held-out in session 8 were
chosen (docs/ct.md).  Writes ``benchmarks/results/ct_nodule_reporting_variants.{json,md}``.

    python benchmarks/ct_nodule_reporting_variants.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ct.blobs import INSCRIBED_OPENING  # noqa: E402
from models.ct.nodules import NodulePipeline, sigmoid  # noqa: E402
from training.ct.data import nodule_volumes  # noqa: E402
from training.ct.evaluate_nodules import (case_measures, measure_summary, run_case, threshold_at,  # noqa: E402
                                          validation_volumes)
from training.ct.froc import froc  # noqa: E402

SEGMENTATIONS = {
    "blob radius (served)": {},
    "blob radius, regrow 1": {"regrow": 1},
    "blob radius, regrow 0": {"regrow": 0},
    "inscribed 0.6": {"open_from": "inscribed", "open_scale": 0.6},
    "inscribed 0.6, regrow 1 (INSCRIBED_OPENING)": INSCRIBED_OPENING,
    "inscribed 0.6, regrow 0": {"open_from": "inscribed", "open_scale": 0.6, "regrow": 0},
    "inscribed 0.8, regrow 1": {"open_from": "inscribed", "open_scale": 0.8, "regrow": 1},
}
TOUCH = {"blob radius (served)": (0.0, 1.0, 1.5, 2.0), "inscribed 0.6, regrow 1 (INSCRIBED_OPENING)": (0.0, 1.0, 1.5, 2.0)}


def variant(pipe: NodulePipeline, runs: list, seg: dict, touch: float) -> dict:
    pipe.segmentation, pipe.touch_radius = dict(seg), touch
    # what the task reports at every threshold (a candidate is only suppressed by higher-scoring ones)
    kept = [[j for j, *_ in pipe.detections(r.z, r.x)] for r in runs]
    cases = [[(float(r.z[j]), r.hits[j]) for j in k] for r, k in zip(runs, kept)]
    fps = [float(r.z[j]) for r, k in zip(runs, kept) for j in k if r.hits[j] is None]
    n_les = sum(len(r.specs) for r in runs)
    thr = pipe.threshold = threshold_at(fps, len(runs))
    rows = []
    for r, k in zip(runs, kept):
        prob = sigmoid(r.z)
        res = pipe.post_process(prob, r.x)
        rows += case_measures(r, res, [(float(r.z[j]), r.hits[j], bool(prob[j] >= thr)) for j in k], "validation")
    s = measure_summary(rows)
    fr = froc(cases, n_les, len(runs))
    meas = [m for m in rows if "dice" in m]
    return {"validation_cpm_output_level": fr["cpm"], "sensitivity_at_fp_per_scan": fr["sensitivity_at_fp_per_scan"],
            "reported_false_findings_all_thresholds": len(fps), "threshold": thr,
            "sensitivity_at_threshold": s["sensitivity"], "mean_dice_found": s["mean_dice_found"],
            "diameter_mae_mm": s["diameter_mae_mm"],
            "diameter_bias_mm": float(sum(m["pred_mean_diameter_mm"] - m["diameter_mm"] for m in meas) / max(len(meas), 1)),
            "leaks_over_1_5x_diameter": sum(m["pred_mean_diameter_mm"] > 1.5 * m["diameter_mm"] for m in meas)}


def main() -> int:
    pipe = NodulePipeline(threads=1)
    _ = pipe.model
    served = pipe.version
    t0 = time.time()
    runs = [run_case(pipe, lv, 5000 + i, n_nodules=2, lobes=False)
            for lv in validation_volumes(nodule_volumes()["train"]).values() for i in range(10)]
    out = {}
    for name, seg in SEGMENTATIONS.items():
        for touch in TOUCH.get(name, (0.0,)):
            out[f"{name}; touch {touch:g}"] = variant(pipe, runs, seg, touch)
            print(name, touch, round(out[f"{name}; touch {touch:g}"]["validation_cpm_output_level"], 4), flush=True)
    res = REPO / "benchmarks" / "results"
    (res / "ct_nodule_reporting_variants.json").write_text(json.dumps(
        {"model": ["ct-nodule-fpr", served], "cases": len(runs), "wall_s": round(time.time() - t0, 1),
         "variants": out}, indent=1, default=float))
    lines = ["# Lung-nodule CAD: segmentation and duplicate-suppression variants (validation)", "",
             f"Written by benchmarks/ct_nodule_reporting_variants.py: served ct-nodule-fpr {served}, {len(runs)} "
             "validation cases of the training region (seeds 5000+, as reconstructed and at 3 mm; never the held-out "
             "sets); threshold re-chosen per variant (≤ 1 reported false finding per scan).", "",
             "| variant | validation CPM (what the task reports) | threshold | reported false findings (all thresholds) "
             "| mean Dice (found) | diameter error mm | diameter bias mm | leaks > 1.5 × |",
             "|---|---|---|---|---|---|---|---|"]
    for k, v in out.items():
        lines.append(f"| {k} | {v['validation_cpm_output_level']:.3f} | {v['threshold']:.3f} "
                     f"| {v['reported_false_findings_all_thresholds']} | {v['mean_dice_found']:.3f} "
                     f"| {v['diameter_mae_mm']:.2f} | {v['diameter_bias_mm']:+.2f} | {v['leaks_over_1_5x_diameter']} |")
    (res / "ct_nodule_reporting_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
