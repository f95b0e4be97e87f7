"""Held-out comparison of the nodule CAD versions and attempts, copied from the files that
the evaluation (training/ct/evaluate_nodules.py) wrote: the shipped cards and the
evaluation records (or the cards, written to a scratch registry) of attempts that were not
shipped.  Writes
benchmarks/results/ct_nodule_versions.{json,md}.

    python benchmarks/ct_nodule_versions.py
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RES = REPO / "benchmarks" / "results"
SOURCES = {
    "1.0.0 (shipped before)": REPO / "models/zoo/ct-nodule-fpr/1.0.0/card.json",
    "1.1.0 (shipped before)": REPO / "models/zoo/ct-nodule-fpr/1.1.0/card.json",
    "1.1.0 re-evaluated, logit-ranked": RES / "ct_nodule_fpr_1.1.0_heldout_logit_ranked.json",
    "+ second stage, uncapped (not shipped)": RES / "ct_nodule_fpr_1.2.0_uncapped_eval.json",
    "+ second stage, veto only (not shipped)": RES / "ct_nodule_fpr_1.2.0_veto_eval.json",
    "anatomy augmentation (not shipped)": RES / "ct_nodule_fpr_1.3.0_anatomy_aug_card.json",
    "anatomy augmentation + 1.1.0, mean logit (chosen on validation; not shipped)":
        RES / "ct_nodule_fpr_1.3.0_anatomy_aug_ensemble_card.json",
    "1.4.0 (shipped before): 1.1.0 fine-tuned with synthetic scan faces":
        REPO / "models/zoo/ct-nodule-fpr/1.4.0/card.json",
    "1.4.0 + 1.1.0, mean logit (higher validation CPM; not shipped)":
        RES / "ct_nodule_fpr_1.5.0_faces_plus_1.1.0_ensemble_card.json",
    "1.6.0 (shipped before): 1.4.0 fine-tuned with candidates at cut faces": REPO / "models/zoo/ct-nodule-fpr/1.6.0/card.json",
    "1.7.0: 1.6.0 fine-tuned with 40 % of nodules 4-8 mm (not shipped)":
        RES / "ct_nodule_fpr_1.7.0_small_share_card.json",
    "1.6.0 weights, inscribed-radius segmentation (operating point worse; not landed)":
        RES / "ct_nodule_fpr_1.6.1_inscribed_only_card.json",
    "1.6.0 weights, inscribed-radius segmentation + touch suppression 2.0 (not shipped)":
        RES / "ct_nodule_fpr_1.6.1_inscribed_touch2_card.json",
    "1.6.0 weights, touch suppression 2.0 (highest validation CPM; not shipped)":
        RES / "ct_nodule_fpr_1.6.1_touch2_card.json",
    "1.6.2 (shipped): 1.6.0 weights, findings measured on their own inscribed-radius masks":
        REPO / "models/zoo/ct-nodule-fpr/1.6.2/card.json",
    "1.6.3: 1.6.2 + sub-voxel axes (diameter error worse; not shipped)":
        RES / "ct_nodule_fpr_1.6.3_subvoxel_axes_card.json",
    "1.9.0: weight average of 1.6.0 and 1.7.0 (operating point worse; not shipped)":
        RES / "ct_nodule_fpr_1.9.0_soup_card.json",
}


def _load(path: Path) -> tuple[dict, dict]:
    c = json.loads(path.read_text())
    if "metrics" in c:
        return c["metrics"]["heldout_synthetic"], c["extra"]["operating_point"]
    return c["heldout_synthetic"], c["operating_point"]


def _f(v: float) -> str:
    return f"{v:.2f}".lstrip("0") if v < 1 else "1.0"


def main() -> int:
    data = {k: _load(p) for k, p in SOURCES.items() if p.exists()}
    rows = [
        ("CPM held-out region (30 cases, 43 nodules)", lambda m, op: f"{m['heldout_region']['cpm']:.3f}"),
        ("CPM held-out volume (15 cases, 20 nodules)", lambda m, op: f"{m['heldout_volume']['cpm']:.3f}"),
        ("CPM combined (45 cases, 63 nodules)", lambda m, op: f"{m['combined']['cpm']:.3f}"),
        *[(f"{s.replace('heldout_', '')} sensitivity at 1/8 … 8 FP/scan",
           lambda m, op, s=s: " ".join(_f(v) for v in m[s]["sensitivity_at_fp_per_scan"].values()))
          for s in ("combined", "heldout_region", "heldout_volume")],
        *[(f"output-level CPM {label} (what the task reports)",
           lambda m, op, s=s: f"{m['output_level'][s]['cpm']:.3f}" if "output_level" in m else "—")
          for s, label in (("heldout_region", "held-out region"), ("heldout_volume", "held-out volume"),
                           ("combined", "combined"))],
        ("output-level CPM combined, hit tested at the reported location (mask centroid)",
         lambda m, op: f"{m['output_level_at_reported_centre']['combined']['cpm']:.3f}"
         if "output_level_at_reported_centre" in m else "—"),
        ("output-level combined sensitivity at 1/8 … 8 FP/scan",
         lambda m, op: " ".join(_f(v) for v in m["output_level"]["combined"]["sensitivity_at_fp_per_scan"].values())
         if "output_level" in m else "—"),
        ("candidate recall region / volume",
         lambda m, op: f"{m['heldout_region']['max_sensitivity']:.3f} / {m['heldout_volume']['max_sensitivity']:.2f}"),
        ("operating point: threshold, sensitivity, FP/scan",
         lambda m, op: (f"{m['operating_point']['threshold']:.3f}, {m['operating_point']['sensitivity']:.3f}, "
                        f"{m['operating_point']['fp_per_scan']:.2f}")),
        ("ground-glass sensitivity at the operating point",
         lambda m, op: f"{m['operating_point']['by_type']['ground-glass']['sensitivity']:.2f}"),
        ("found nodules at the operating point: mean Dice, diameter error (mm)",
         lambda m, op: (f"{m['operating_point']['mean_dice_found']:.3f}, {m['operating_point']['diameter_mae_mm']:.2f}"
                        if m["operating_point"].get("diameter_mae_mm") is not None else "—")),
        ("training-region validation CPM (all candidates)",
         lambda m, op: f"{op['validation_froc']['cpm']:.3f}" if "validation_froc" in op else "—"),
        ("training-region validation CPM (what the task reports)",
         lambda m, op: f"{op['validation_froc_output_level']['cpm']:.3f}" if "validation_froc_output_level" in op
         else "—"),
        ("inference s/case (one core, shared machine)", lambda m, op: f"{m['inference_s_per_case_mean']:.1f}"),
    ]
    table = {name: {k: fn(*d) for k, d in data.items()} for name, fn in rows}
    (RES / "ct_nodule_versions.json").write_text(json.dumps(
        {"sources": {k: str(p.relative_to(REPO)) for k, p in SOURCES.items() if p.exists()}, "table": table}, indent=1))
    lines = ["# Lung-nodule CAD: held-out comparison", "",
             "Written by benchmarks/ct_nodule_versions.py from the cards and evaluation records of "
             "training/ct/evaluate_nodules.py (same held-out seeds and sets for every column).", "",
             "| | " + " | ".join(data) + " |", "|---" * (len(data) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(vals.values()) + " |" for name, vals in table.items()]
    (RES / "ct_nodule_versions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
