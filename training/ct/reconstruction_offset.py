"""Fit the nodule score's reconstruction offset (:class:`models.ct.reconstruction.ReconstructionOffset`)
on validation cases of the training region only.

Cases: seeds 7000+ (two inserted nodules each) of the training region as reconstructed and
degraded to 3 mm (``evaluate_nodules.validation_volumes``); the operating threshold of
``evaluate_nodules`` uses other seeds (5000+). ``g_sharp``/``g_soft`` are the median
:func:`edge_gradient` of the two classes; ``delta`` is the grid value (0, 0.5, ..., 10) that
maximises the pooled CPM over what the task reports (ties: the smaller).  Writes
``OUT.json`` (the offset for ``evaluate_nodules --reconstruction-offset``) and
``benchmarks/results/ct_nodule_reconstruction_offset.{json,md}``.

    python -m training.ct.reconstruction_offset --out /tmp/ct_runs/recon_offset.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models.ct.nodules import NodulePipeline
from models.ct.reconstruction import ReconstructionOffset, edge_gradient
from training.ct.data import nodule_volumes
from training.ct.evaluate_nodules import run_case, validation_volumes
from training.ct.froc import froc

REPO = Path(__file__).resolve().parents[2]
GRID = tuple(np.round(np.arange(0.0, 10.01, 0.5), 2))


def pooled_cpm(cases: list[dict], offset: ReconstructionOffset | None) -> dict:
    """Output-level FROC of ``cases`` (each: ``g`` and the (logit, hit) of every reported
    candidate) with each case's logits shifted by ``offset(g)``."""
    n_les = sum(c["n_nodules"] for c in cases)
    shifted = [[(z + (offset(c["g"]) if offset else 0.0), h) for z, h in c["reported"]] for c in cases]
    return froc(shifted, n_les, len(cases))


def choose_delta(cases: list[dict], grid=GRID) -> tuple[ReconstructionOffset | None, dict]:
    """(offset, per-delta pooled CPMs): ``g_sharp``/``g_soft`` from the case classes, ``delta``
    maximising the pooled CPM (ties: the smaller); None when the classes do not separate."""
    g_sharp = float(np.nanmedian([c["g"] for c in cases if c["class"] == "full"]))
    g_soft = float(np.nanmedian([c["g"] for c in cases if c["class"] == "3mm"]))
    if not g_sharp > g_soft:
        return None, {}
    cpms = {float(d): pooled_cpm(cases, ReconstructionOffset(g_sharp, g_soft, float(d)))["cpm"] for d in grid}
    best = max(cpms.values())
    delta = min(d for d, v in cpms.items() if v >= best - 1e-12)
    return ReconstructionOffset(g_sharp, g_soft, delta), cpms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed0", type=int, default=7000)
    ap.add_argument("--cases", type=int, default=20, help="cases per class")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    pipe = NodulePipeline(threads=a.threads)
    _ = pipe.model
    vv = validation_volumes(nodule_volumes()["train"])
    classes = {"full": vv["validation_full"], "3mm": vv["validation_3mm"]}
    cases: list[dict] = []
    t0 = time.time()
    for cls, lv in classes.items():
        for i in range(a.cases):
            r = run_case(pipe, lv, a.seed0 + i, n_nodules=2, lobes=False)
            g = edge_gradient(r.x.work.hu, r.x.lungs, r.x.work.spacing)
            cases.append({"class": cls, "seed": a.seed0 + i, "g": g, "n_nodules": len(r.specs),
                          "reported": [(float(r.z[j]), r.hits[j]) for j in r.kept]})
            print(cls, i, f"g={g:.1f}", f"{time.time() - t0:.0f}s", flush=True)
    off, cpms = choose_delta(cases)
    base = pooled_cpm(cases, None)
    chosen = pooled_cpm(cases, off) if off else base
    per_class = {cls: {"edge_gradient_median": float(np.nanmedian([c["g"] for c in cases if c["class"] == cls])),
                       "edge_gradient_range": [float(np.nanmin([c["g"] for c in cases if c["class"] == cls])),
                                               float(np.nanmax([c["g"] for c in cases if c["class"] == cls]))],
                       "cpm_alone": pooled_cpm([c for c in cases if c["class"] == cls], None)["cpm"]}
                 for cls in classes}
    rec = {"model": {"name": pipe.name, "version": pipe.version}, "seeds": [a.seed0, a.seed0 + a.cases - 1],
           "cases_per_class": a.cases, "classes": per_class, "pooled_cpm_by_delta": cpms,
           "pooled_cpm_without": base["cpm"], "pooled_cpm_chosen": chosen["cpm"],
           "sensitivity_without": base["sensitivity_at_fp_per_scan"],
           "sensitivity_chosen": chosen["sensitivity_at_fp_per_scan"],
           "reconstruction_offset": off.to_dict() if off else None,
           "fitted_by": "training/ct/reconstruction_offset.py"}
    Path(a.out).write_text(json.dumps(rec, indent=1))
    res = REPO / "benchmarks" / "results"
    (res / "ct_nodule_reconstruction_offset.json").write_text(json.dumps(rec, indent=1))
    lines = ["# Lung-nodule CAD: reconstruction offset, fitted on validation", "",
             f"Written by training/ct/reconstruction_offset.py ({pipe.name} {pipe.version}; training region, "
             f"seeds {a.seed0}-{a.seed0 + a.cases - 1}, two nodules per case, as reconstructed and degraded to 3 mm; "
             "output-level FROC, hit at the candidate centre).", "",
             "| class | cases | edge gradient median (range), HU/mm | CPM alone |", "|---|---|---|---|"]
    lines += [f"| {cls} | {a.cases} | {v['edge_gradient_median']:.1f} ({v['edge_gradient_range'][0]:.1f}–"
              f"{v['edge_gradient_range'][1]:.1f}) | {v['cpm_alone']:.3f} |" for cls, v in per_class.items()]
    lines += ["", "| delta | " + " | ".join(f"{d:g}" for d in cpms) + " |",
              "|---|" + "---|" * len(cpms),
              "| pooled CPM | " + " | ".join(f"{v:.3f}" for v in cpms.values()) + " |", "",
              f"Chosen: **delta = {off.delta if off else 0:g}**; pooled CPM {base['cpm']:.3f} → {chosen['cpm']:.3f} "
              f"(sensitivity at 1/8 … 8 FP/scan "
              f"{' '.join(f'{v:.2f}' for v in base['sensitivity_at_fp_per_scan'].values())} → "
              f"{' '.join(f'{v:.2f}' for v in chosen['sensitivity_at_fp_per_scan'].values())})."]
    (res / "ct_nodule_reconstruction_offset.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
