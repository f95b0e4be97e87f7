"""Nodule segmentation and measurement quality on VALIDATION cases (never the held-out sets).

The served pipeline at its card's threshold on the validation cases of
``training/ct/evaluate_nodules.py`` (training region as reconstructed and at 3 mm, seeds
5000+, two inserted nodules each): per found nodule the Dice of the finding that covers it,
its mean-diameter error and volume error, and how often a finding is more than 1.5 times
the nodule's diameter (a leak into the wall or mediastinum).  For choosing segmentation
changes before the held-out evaluation.  Writes ``benchmarks/results/ct_nodule_segmentation.{json,md}``
(``--tag`` names the run's row; rows of earlier runs are kept).

    python benchmarks/ct_nodule_segmentation.py --tag "1.1.0, segmentation as served"
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ct.nodules import NodulePipeline, sigmoid  # noqa: E402
from training.ct.data import nodule_volumes  # noqa: E402
from training.ct.evaluate_nodules import case_measures, measure_summary, run_case, validation_volumes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    pipe = NodulePipeline(threads=a.threads)
    _ = pipe.model
    tr = nodule_volumes()["train"]
    sets = validation_volumes(tr)
    rows: list[dict] = []
    t0 = time.time()
    for name, lv in sets.items():
        for i in range(a.cases):
            r = run_case(pipe, lv, 5000 + i, n_nodules=2, lobes=False)
            prob = sigmoid(r.z)
            res = pipe.post_process(prob, r.x)
            reported = [(float(r.z[j]), r.hits[j], bool(prob[j] >= pipe.threshold)) for j in r.kept]
            rows += case_measures(r, res, reported, name)
    meas = [m for m in rows if "dice" in m]
    summary = {**measure_summary(rows), "found_measured": len(meas), "nodules": len(rows),
               "leaks_over_1_5x_diameter": sum(m["pred_mean_diameter_mm"] > 1.5 * m["diameter_mm"] for m in meas),
               "dice_below_0_5": sum(m["dice"] < 0.5 for m in meas), "wall_s": round(time.time() - t0, 1)}
    res_dir = REPO / "benchmarks" / "results"
    path = res_dir / "ct_nodule_segmentation.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[a.tag] = {"model": [pipe.name, pipe.version], "threshold": pipe.threshold, "summary": summary,
                   "nodules": rows}
    path.write_text(json.dumps(runs, indent=1, default=float))
    lines = ["# Lung-nodule CAD: segmentation on validation cases", "",
             "Written by benchmarks/ct_nodule_segmentation.py: the served pipeline at its threshold on the "
             "validation cases (training region as reconstructed and at 3 mm, seeds 5000+, 2 nodules each; not "
             "the held-out sets). Leak: a finding more than 1.5 × the nodule's diameter.", "",
             "| run | model | found / nodules | mean Dice (found) | Dice < 0.5 | diameter MAE mm | volume error median "
             "| leaks |", "|---|---|---|---|---|---|---|---|"]
    for tag, r in runs.items():
        s = r["summary"]
        lines.append(f"| {tag} | {' '.join(r['model'])} | {s['found_measured']} / {s['nodules']} "
                     f"| {s['mean_dice_found']:.3f} | {s['dice_below_0_5']} | {s['diameter_mae_mm']:.2f} "
                     f"| {s['volume_rel_error_median']:.3f} | {s['leaks_over_1_5x_diameter']} |")
    (res_dir / "ct_nodule_segmentation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
