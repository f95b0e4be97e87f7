"""Fresh held-out check of nodule CAD versions: the held-out sets of
``training/ct/evaluate_nodules.py`` (same region and lung-base volume) with NEW seeds
(region 50000+, volume 60000+) that no evaluation or decision has seen, each version at its
card's threshold.  Answers whether a version chosen after several looks at the usual
held-out seeds holds up.  Writes ``benchmarks/results/ct_nodule_fresh_heldout.{json,md}``.

    python benchmarks/ct_nodule_fresh_heldout.py --versions 1.1.0 1.6.0
    python benchmarks/ct_nodule_fresh_heldout.py --versions 1.6.0 1.8.0 --region-seed 70000 \
        --volume-seed 80000 --out benchmarks/results/ct_nodule_fresh_heldout_70000.json   # a second fresh set
    (or one version per process with --out /tmp/X.json, then --merge /tmp/X.json ...)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ct.nodules import MODEL_NAME, NodulePipeline  # noqa: E402
from models.registry import Registry  # noqa: E402
from training.ct.data import nodule_volumes  # noqa: E402
from training.ct.evaluate_nodules import evaluate  # noqa: E402

SEEDS = {"heldout_region": 50000, "heldout_volume": 60000}
N_CASES = {"heldout_region": 30, "heldout_volume": 15}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="*", default=[], help="versions to evaluate (none: only rewrite the table)")
    ap.add_argument("--merge", nargs="*", default=[], help="runs written by other invocations (--out) to add")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ct_nodule_fresh_heldout.json"))
    ap.add_argument("--region-seed", type=int, default=SEEDS["heldout_region"])
    ap.add_argument("--volume-seed", type=int, default=SEEDS["heldout_volume"])
    a = ap.parse_args(argv)
    seeds = {"heldout_region": a.region_seed, "heldout_volume": a.volume_seed}
    vs = nodule_volumes()
    sets = {k: (vs[k], s) for k, s in seeds.items()}
    out_path = Path(a.out)
    runs = json.loads(out_path.read_text()) if out_path.exists() else {}
    for m in a.merge:
        runs.update(json.loads(Path(m).read_text()))
    for v in a.versions:
        model, card = Registry().load(MODEL_NAME, version=v, threads=1)
        pipe = NodulePipeline(model=model)
        pipe.apply_card(card)  # threshold, segmentation, duplicate suppression as the card was measured
        res, _ = evaluate(pipe, sets, N_CASES)
        runs[v] = {"seeds": seeds, "cases": N_CASES, "threshold": pipe.threshold, "results": res}
        out_path.write_text(json.dumps(runs, indent=1, default=float))
    lines = ["# Lung-nodule CAD: fresh held-out seeds", "",
             "Written by benchmarks/ct_nodule_fresh_heldout.py: the held-out region and lung-base volume of "
             f"training/ct/evaluate_nodules.py with new seeds (region {seeds['heldout_region']}+, volume "
             f"{seeds['heldout_volume']}+; 30 + 15 cases), each "
             "version at its card's threshold. Output-level FROC (what the task reports).", "",
             "| version | CPM region | CPM volume | **CPM combined** | combined sensitivity at 1/8 … 8 FP/scan "
             "| all-candidate CPM combined | sensitivity at threshold | false findings per scan "
             "| found nodules: Dice, diameter error (mm) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, r in runs.items():
        o, op = r["results"]["output_level"], r["results"]["operating_point"]
        sens = " ".join(f"{x:.2f}" for x in o["combined"]["sensitivity_at_fp_per_scan"].values())
        lines.append(f"| {v} | {o['heldout_region']['cpm']:.3f} | {o['heldout_volume']['cpm']:.3f} "
                     f"| **{o['combined']['cpm']:.3f}** | {sens} | {r['results']['combined']['cpm']:.3f} "
                     f"| {op['sensitivity']:.3f} | {op['fp_per_scan']:.2f} "
                     f"| {op['mean_dice_found']:.3f}, {op['diameter_mae_mm']:.2f} |")
    out_path.write_text(json.dumps(runs, indent=1, default=float))
    md = out_path.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
