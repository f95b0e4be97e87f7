"""Accuracy check of the two-step shrink in chest X-ray pre-processing.

``models.cxr.preprocess.prepare`` shrinks radiographs to the model grid in two steps
(integer box reduction, then the antialiased bilinear filter: ``REDUCING_GAP``), which is
~2x faster than the exact one-step filter that built the training grids of models up to
0.4.0.  This script runs the served ONNX models on the held-out sets prepared both ways
and writes the AUROCs and their differences (real held-out NIH per class and
abnormal-vs-normal; synthetic lesions in held-out OpenIST normals) plus the largest pixel
difference of the grids.  Results: ``benchmarks/results/cxr_prep_check.json`` and ``.md``.

    python benchmarks/cxr_prep_check.py [--data ../shared/data/cxr] [--zoo DIR]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def held_out_sets(data: Path, reducing_gap: float | None, upsample: int = 1) -> dict:
    """Held-out NIH and OpenIST grids with ``prepare`` using ``reducing_gap``.

    With ``upsample`` > 1 every radiograph is first enlarged that many times (bicubic), as
    a stand-in for full-size CR/DX (the shared NIH/OpenIST files are ~512-1024 px, where the
    two-step shrink reduces by 1, i.e. is the one-step filter).
    """
    from PIL import Image

    import models.cxr.preprocess as pre
    from models.imaging import load_radiograph
    from training.cxr.data import grid_from_pairs, grid_from_records, nih_records, openist_pairs, split_of

    recs = [r for r in nih_records(data / "nih") if split_of(r.patient_id) == "test"]
    pairs = [p for p in openist_pairs(data / "normal-openist") if split_of(Path(p[0]).stem) == "test"]
    saved = pre.REDUCING_GAP
    pre.REDUCING_GAP = reducing_gap
    try:
        sets = {"nih": grid_from_records(recs), "openist": grid_from_pairs(pairs)}
        if upsample > 1:
            for key, paths in (("nih", [r.image_path for r in recs]), ("openist", [a for a, _ in pairs])):
                imgs = []
                for path in paths:
                    pix = load_radiograph(path).pixels
                    big = Image.fromarray(pix, mode="F").resize((pix.shape[1] * upsample, pix.shape[0] * upsample),
                                                                Image.Resampling.BICUBIC)
                    imgs.append(pre.prepare(np.clip(np.asarray(big), 0, 1)).tensor[0, 0])
                sets[key].images = np.stack(imgs).astype(np.float32)
    finally:
        pre.REDUCING_GAP = saved
    return sets


def aurocs(lung, lesion, sets: dict) -> dict:
    """Per-class AUROCs on the held-out sets (the evaluation's definitions)."""
    from models.cxr.preprocess import CLASSES
    from training.cxr.data import synthetic_eval_set
    from training.cxr.evaluate import auroc, run_onnx

    nih = sets["nih"]
    o = run_onnx(None, lesion, nih.images)
    real = {"abnormal_vs_normal": auroc(nih.abnormal, o["abnormality"][:, 0])}
    n_pos = {"abnormal_vs_normal": int(nih.abnormal.sum())}
    for i, c in enumerate(CLASSES):
        known = ~np.isnan(nih.labels[:, i])
        real[c] = auroc(nih.labels[known, i], o["scores"][known, i])
        n_pos[c] = int(np.nansum(nih.labels[:, i]))
    s_img, s_lab, _ = synthetic_eval_set(sets["openist"])
    o_s = run_onnx(None, lesion, s_img)
    synth = {c: auroc(s_lab[:, i], o_s["scores"][:, i]) for i, c in enumerate(CLASSES)}
    return {"real_nih_heldout": real, "synthetic_heldout": synth,
            "positives": {"real_nih_heldout": n_pos, "synthetic_heldout": {c: int(s_lab[:, i].sum()) for i, c in enumerate(CLASSES)}}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr")
    ap.add_argument("--zoo", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--upsample", type=int, default=4, help="enlarge the held-out radiographs this many times first")
    args = ap.parse_args(argv)
    from models.cxr.preprocess import REDUCING_GAP
    from models.registry import Registry

    reg = Registry([args.zoo]) if args.zoo else Registry()
    lesion, card = reg.load("cxr-lesions", threads=2)
    exact = held_out_sets(args.data, None, args.upsample)
    fast = held_out_sets(args.data, REDUCING_GAP, args.upsample)
    grid_diff = max(float(np.abs(exact[k].images - fast[k].images).max()) for k in exact)
    a_exact, a_fast = aurocs(None, lesion, exact), aurocs(None, lesion, fast)
    positives = a_exact.pop("positives")
    a_fast.pop("positives")
    delta = {part: {c: round(a_fast[part][c] - a_exact[part][c], 4) for c in a_exact[part]} for part in a_exact}
    result = {"check": "held-out AUROCs with the one-step vs two-step shrink in models.cxr.preprocess.prepare",
              "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
              "model": {"name": card.name, "version": card.version}, "reducing_gap": REDUCING_GAP,
              "upsample": args.upsample,
              "max_abs_grid_difference": grid_diff, "positives": positives, "one_step": a_exact, "two_step": a_fast, "delta_two_minus_one": delta,
              "max_abs_delta": max(abs(v) for part in delta.values() for v in part.values())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cxr_prep_check.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Two-step shrink accuracy check ({result['date']})", "",
             f"Model `{card.name}` {card.version} (ONNX Runtime); held-out radiographs enlarged {args.upsample}x (bicubic, "
             f"as full-size CR/DX), then prepared with the exact one-step antialiased "
             f"bilinear filter vs the two-step shrink (reducing gap {REDUCING_GAP:g}); largest grid difference "
             f"{grid_diff:.4f} (of [0, 1]).", "", "| set | class | positives | AUROC one-step | AUROC two-step | delta |", "|---|---|---|---|---|---|"]
    for part in a_exact:
        for c in a_exact[part]:
            lines.append(f"| {part} | {c} | {positives[part][c]} | {a_exact[part][c]:.4f} | {a_fast[part][c]:.4f} | "
                         f"{delta[part][c]:+.4f} |")
    lines += ["", f"Largest |delta|: {result['max_abs_delta']:.4f} (an AUROC over a handful of positives moves by "
              "1/(positives x negatives) per swapped pair). Written by benchmarks/cxr_prep_check.py."]
    (args.out / "cxr_prep_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
