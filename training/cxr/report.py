"""Write ``docs/cxr_metrics.md`` from the model cards (numbers come only from the cards,
which ``medws eval cxr`` wrote). ``python -m training.cxr.report [--zoo DIR] [--out FILE]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from models.registry import Registry


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _auc_row(name: str, m: dict) -> str:
    ci = m.get("ci95")
    ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
    return f"| {name} | {_fmt(m.get('auroc'))} | {ci_s} | {m.get('n_pos')} | {m.get('n_neg')} |"


def render(reg: Registry) -> str:
    """Markdown tables of the cards' metrics."""
    lung = reg.get("cxr-lung").card
    les = reg.get("cxr-lesions").card
    m = les.metrics
    lines = [f"# Chest X-ray model metrics (generated from the model cards by `python -m training.cxr.report`)", "",
             f"Models: `{lung.name}` {lung.version}, `{les.name}` {les.version}; measured {m.get('measured_at')} "
             f"by `{m.get('measured_by')}`.", "",
             f"## Lung fields\n\nHeld-out Dice {lung.metrics['heldout_dice_mean']:.4f} (min {lung.metrics['heldout_dice_min']:.4f}, "
             f"n = {lung.metrics['n_images']}): {lung.metrics['data']}.", ""]
    for key, title in (("real_nih_heldout", "Real held-out NIH"), ("synthetic_heldout", "Held-out synthetic lesions")):
        part = m[key]
        lines += [f"## {title}", "", part["data"], "", "| class | AUROC | 95% CI | positives | negatives |", "|---|---|---|---|---|"]
        if "abnormal_vs_normal" in part:
            lines.append(_auc_row("abnormal vs normal", part["abnormal_vs_normal"]))
        lines += [_auc_row(c, part["per_class"][c]) for c in les.classes]
        loc = part.get("localisation", {})
        if loc:
            lines += ["", "| class | GT boxes | hit rate at operating point | FROC sens. @0.25 / 0.5 / 1 / 2 FP per image |",
                      "|---|---|---|---|"]
            for c, v in loc.items():
                s = v["froc_sensitivity_at_fp_per_image"]
                lines.append(f"| {c} | {v['gt_boxes']} | {v['hit_rate_at_operating_point']:.3f} | "
                             f"{s['0.25']:.2f} / {s['0.5']:.2f} / {s['1.0']:.2f} / {s['2.0']:.2f} |")
        if key == "real_nih_heldout":
            lines += ["", part.get("localisation_data", "")]
        by_d = part.get("nodule_mass_by_diameter")
        if by_d:
            lines += ["", "Synthetic nodule/mass AUROC by equivalent diameter (all negatives each row; "
                      "model-grid size = the input resolution the network sees):", "",
                      "| diameter (mm) | median size on the model grid (px) | positives | AUROC |", "|---|---|---|---|"]
            lines += [f"| {b['diameter_mm'][0]:g}-{b['diameter_mm'][1]:g} | {b['median_diameter_model_px']:.1f} | "
                      f"{b['n_pos']} | {_fmt(b['auroc'])} |" for b in by_d]
        lines.append("")
    fpr = m["fpr_real_normals_at_operating_points"]
    lines += ["## False-positive rate on held-out real normals at the operating points", "", fpr["data"] + "; " + m["operating_points"] + ".", "",
              "| " + " | ".join(k for k in fpr if k != "data") + " |", "|" + "---|" * (len(fpr) - 1),
              "| " + " | ".join(f"{v:.3f}" for k, v in fpr.items() if k != "data") + " |", "",
              "Operating points: " + ", ".join(f"{k} {v:.3f}" for k, v in les.thresholds.items()), ""]
    runs = les.extra.get("training_runs")
    if runs:
        lines += ["## Training runs of this version", "",
                  "| init from | steps | wall (s) | lr | synthetic kind weights | seg lesion-pixel weights | real oversampling | BN re-estimation batches |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            kp = r.get("kind_p")
            lines.append(f"| {Path(str(r.get('init_from'))).parent.name if r.get('init_from') else 'scratch'} | {r.get('steps')} | "
                         f"{r.get('wall_s')} | {r.get('lr')} | {[round(v, 2) for v in kp] if kp else 'uniform'} | "
                         f"{r.get('seg_pos_weight') or 'none'} | {r.get('class_boost') or 'none'} | {r.get('bn_recalibration_batches', 0)} |")
        lines.append("")
    if reg.versions("cxr-nodule"):
        lines += nodule_section(reg.get("cxr-nodule").card)
    return "\n".join(lines)


def nodule_section(card) -> list[str]:
    """The ``cxr-nodule`` card's metrics, beside the coarse model's on the same images."""
    m = card.metrics
    syn, real = m["synthetic_heldout"], m["real_nih_heldout"]
    coarse = syn.get("coarse_cxr_lesions_same_images", {})
    lines = [f"## Fine-grid nodule/mass model (`{card.name}` {card.version}, the pipeline's nodule/mass score)", "",
             f"Measured {m.get('measured_at')} by `{m.get('measured_by')}`. {syn['data']}.", "",
             "| nodule/mass | AUROC (`cxr-nodule`) | 95% CI | AUROC (`cxr-lesions`, same images at 256) | positives | negatives |",
             "|---|---|---|---|---|---|"]
    for name, part, other in (("held-out synthetic", syn["nodule_mass"], coarse.get("nodule_mass", {})),
                              ("real held-out NIH", real["nodule_mass"], real.get("coarse_cxr_lesions_same_images", {}))):
        ci = part.get("ci95")
        lines.append(f"| {name} | {_fmt(part.get('auroc'))} | {f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else 'n/a'} | "
                     f"{_fmt(other.get('auroc'))} | {part.get('n_pos')} | {part.get('n_neg')} |")
    lines += ["", f"Real data: {real['data']}.", "", "By equivalent diameter (held-out synthetic, all negatives each row):", "",
              "| diameter (mm) | size on the 512 grid (px) | positives | AUROC `cxr-nodule` | AUROC `cxr-lesions` |",
              "|---|---|---|---|---|"]
    by_c = {tuple(b["diameter_mm"]): b for b in coarse.get("nodule_mass_by_diameter", [])}
    for b in syn["nodule_mass_by_diameter"]:
        c = by_c.get(tuple(b["diameter_mm"]), {})
        lines.append(f"| {b['diameter_mm'][0]:g}-{b['diameter_mm'][1]:g} | {b['median_diameter_model_px']:.1f} | "
                     f"{b['n_pos']} | {_fmt(b['auroc'])} | {_fmt(c.get('auroc'))} |")
    fpr = m["fpr_real_normals_at_operating_point"]
    lines += ["", f"Peak hit rate (the map's maximum lies on the inserted nodule): {syn['peak_hit_rate']:.3f}. "
              f"At the operating point ({card.thresholds['nodule_mass']:.3f}; {m['operating_point']}): synthetic "
              f"sensitivity {syn['sensitivity_at_operating_point']:.3f}, specificity {syn['specificity_at_operating_point']:.3f}; "
              f"false-positive rate on held-out real normals {fpr['nodule_mass']:.3f} ({fpr['data']}).", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Write the markdown file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=None)
    ap.add_argument("--out", default="docs/cxr_metrics.md")
    args = ap.parse_args(argv)
    reg = Registry([args.zoo]) if args.zoo else Registry()
    Path(args.out).write_text(render(reg))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
