"""Dump every candidate of the nodule CAD's validation and held-out cases (score, lesion hit,
whether the task reports it, candidate pass/scale) for offline analysis of rankings.

Same cases as ``training/ct/evaluate_nodules.py`` (validation: seeds 5000+ of the training
region as reconstructed and at 3 mm, two nodules; held-out: seeds 10000+/20000+).

    python benchmarks/ct_nodule_scores.py OUT.json --sets validation heldout_volume [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ct.nodules import NodulePipeline  # noqa: E402
from training.ct.data import nodule_volumes  # noqa: E402
from training.ct.evaluate_nodules import run_case, validation_volumes  # noqa: E402

SETS = {"validation_full": (5000, 10), "validation_3mm": (5000, 10),
        "heldout_region": (10000, 30), "heldout_volume": (20000, 15)}


def case_record(name: str, r) -> dict:
    kept_rank = {j: k for k, j in enumerate(r.kept)}
    rep = dict(zip(r.kept, r.reported_hits))
    return {"set": name, "seed": r.seed, "specs": r.specs, "n_candidates": len(r.z),
            "candidates": [{"logit": float(z), "hit": h, "source": c.source, "radius_mm": float(c.radius_mm),
                            "response": float(c.response), "zyx": [round(float(v), 1) for v in c.zyx],
                            "reported_rank": kept_rank.get(j), "reported_hit": rep.get(j)}
                           for j, (z, h, c) in enumerate(zip(r.z, r.hits, r.x.candidates))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    pipe = NodulePipeline(threads=a.threads)
    _ = pipe.model
    vs = nodule_volumes()
    vols = {**validation_volumes(vs["train"]), "heldout_region": vs["heldout_region"],
            "heldout_volume": vs["heldout_volume"]}
    out = {"model": {"name": pipe.name, "version": pipe.version, "threshold": pipe.threshold}, "cases": []}
    t0 = time.time()
    for name in a.sets:
        seed0, n = SETS[name]
        val = name.startswith("validation")
        for i in range(n):
            r = run_case(pipe, vols[name], seed0 + i, n_nodules=2 if val else None, lobes=not val)
            out["cases"].append(case_record(name, r))
            print(name, i, f"{time.time() - t0:.0f}s", flush=True)
    Path(a.out).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
