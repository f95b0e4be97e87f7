"""Which validation nodules the served nodule CAD scores low (VALIDATION cases only, never
the held-out sets): fresh training-region cases (seeds 7000+, as reconstructed and at 3 mm,
two nodules each) through ``run_case``; per inserted nodule its type, diameter and the best
logit among the findings the task reports on it.  Answers where the low-scoring nodules
are (by size and type) before choosing a training change.  Writes
``benchmarks/results/ct_nodule_validation_scores.{json,md}``.

    python benchmarks/ct_nodule_validation_scores.py [--cases 20] [--below 5.7]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ct.nodules import NodulePipeline  # noqa: E402
from training.ct.data import nodule_volumes  # noqa: E402
from training.ct.evaluate_nodules import run_case, validation_volumes  # noqa: E402

SIZES = ((4.0, 8.0), (8.0, 15.0), (15.0, 30.1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--seed0", type=int, default=7000)
    ap.add_argument("--below", type=float, default=5.7,
                    help="logit counted as low (default: the held-out region's top repeated false finding with 1.6.0, "
                         "ct_nodule_fp_structures.md)")
    a = ap.parse_args(argv)
    pipe = NodulePipeline(threads=1)
    _ = pipe.model
    rows = []
    for name, lv in validation_volumes(nodule_volumes()["train"]).items():
        for s in range(a.seed0, a.seed0 + a.cases):
            r = run_case(pipe, lv, s, n_nodules=2, lobes=False)
            for k, spec in enumerate(r.specs, start=1):
                rep = [float(r.z[j]) for j in r.kept if r.hits[j] == k]
                rows.append({"set": name, "seed": s, "type": spec["type"], "diameter_mm": spec["diameter_mm"],
                             "best_reported_logit": max(rep) if rep else None})
    low = [r for r in rows if r["best_reported_logit"] is None or r["best_reported_logit"] < a.below]
    lines = ["# Lung-nodule CAD: validation nodules by size and type", "",
             f"Written by benchmarks/ct_nodule_validation_scores.py: served ct-nodule-fpr {pipe.version}, "
             f"{len(rows)} nodules of {2 * a.cases} validation cases (training region, seeds {a.seed0}+, as "
             "reconstructed and at 3 mm; not the held-out sets). Low: best reported logit below "
             f"{a.below:g}, or never reported.", "",
             "| nodules | n | low | median best logit |", "|---|---|---|---|"]
    groups = [(f"{lo:g}-{hi:g} mm", lambda r, lo=lo, hi=hi: lo <= r["diameter_mm"] < hi) for lo, hi in SIZES]
    groups += [(t, lambda r, t=t: r["type"] == t) for t in ("solid", "part-solid", "ground-glass")]
    summary = {}
    for label, sel in groups:
        g = [r for r in rows if sel(r)]
        best = [r["best_reported_logit"] if r["best_reported_logit"] is not None else -np.inf for r in g]
        summary[label] = {"n": len(g), "low": sum(r in low for r in g),
                          "median_best_logit": float(np.median(best)) if g else None}
        med = summary[label]["median_best_logit"]
        lines.append(f"| {label} | {len(g)} | {summary[label]['low']} | {med:.1f} |" if g else f"| {label} | 0 | 0 | — |")
    res = REPO / "benchmarks" / "results"
    (res / "ct_nodule_validation_scores.json").write_text(json.dumps(
        {"model": ["ct-nodule-fpr", pipe.version], "below": a.below, "summary": summary, "nodules": rows},
        indent=1, default=float))
    (res / "ct_nodule_validation_scores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
