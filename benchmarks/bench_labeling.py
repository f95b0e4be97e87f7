"""Measurements for the labeling tool, de-identification and promotion gate.

Writes ``benchmarks/results/bench_labeling.json`` and ``.md``.  Run:
``python benchmarks/bench_labeling.py [--data ../shared/data] [--quick]``.

1. PS3.15 Annex E coverage: identifying values planted in every attribute of the
   Basic Profile table (incl. private tags and nested sequences); how many survive.
2. De-identification time per file on the real CR DICOM (1024 x 1024, JPEG baseline),
   with and without Clean Pixel Data.
3. Burned-in text detector: detection of synthetic text drawn into real OpenIST normals
   (PIL default font, random strings in the corner bands), false positives on the clean
   OpenIST images, and how many NIH images carry a detected burned-in marker.
4. Promotion gate behaviour on simulated locked sets (5 classes, 30 % prevalence,
   N = 300 cases; the two versions share most of their score noise, as a fine-tuned
   model does): how often an equally good candidate is refused, and how often a
   candidate worse by about 0.1 AUROC in one class is refused.
"""
from __future__ import annotations

import argparse
import json
import string
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def coverage() -> dict:
    from labeling_tool.core.deid import DeidKey, DeidOptions, deidentify, load_profile
    from tests.labeling.conftest import make_identified_dataset, original_values, surviving_values

    out = {"profile_attributes": len(load_profile())}
    for shift in (False, True):
        ds = make_identified_dataset()
        orig = original_values(ds)
        res = deidentify(ds, DeidKey.new(), DeidOptions(shift_dates=shift))
        left = surviving_values(res, orig)
        if shift:
            left_nontime = [h for h in left if not (h.endswith("=040506") and ("Time" in h or "TM" in h))]
        else:
            left_nontime = left
        out["shift_dates" if shift else "basic"] = {
            "identifying_values_planted": len(orig), "surviving": len(left_nontime),
            "times_of_day_retained": len(left) - len(left_nontime)}
    return out


def deid_timing(data: Path, reps: int) -> dict:
    import pydicom

    from labeling_tool.core.deid import DeidKey, DeidOptions, deidentify

    path = data / "cxr" / "samples" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    ds = pydicom.dcmread(path)
    key = DeidKey.new()
    res = {}
    for name, opts in (("basic", DeidOptions()), ("shift_dates+clean_pixels", DeidOptions(True, True))):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            deidentify(ds, key, opts)
            times.append(time.perf_counter() - t)
        res[name] = {"median_ms": round(1000 * float(np.median(times)), 1), "reps": reps}
    res["file"] = "real SIIM-ACR CR, 1024x1024, JPEG baseline"
    return res


def detector(data: Path, n: int) -> dict:
    from PIL import Image, ImageDraw

    from labeling_tool.core.deid import detect_text_boxes

    rng = np.random.default_rng(0)
    files = sorted((data / "cxr" / "normal-openist" / "images").glob("*.jpg"))[:n]
    fp, hit, covered_frac = 0, 0, []
    for f in files:
        im = Image.open(f).convert("L")
        clean = np.asarray(im).copy()
        if detect_text_boxes(clean):
            fp += 1
        text = "".join(rng.choice(list(string.ascii_uppercase + string.digits + " ^-"), size=rng.integers(8, 20)))
        h, w = clean.shape
        x = int(rng.integers(5, max(6, w // 3)))
        y = int(rng.choice([rng.integers(3, 20), rng.integers(h - 25, h - 12)]))
        ImageDraw.Draw(im).text((x, y), text, fill=255)
        texted = np.asarray(im)
        cov = np.zeros(texted.shape, bool)
        for r0, c0, r1, c1 in detect_text_boxes(texted):
            cov[r0:r1, c0:c1] = True
        diff = texted != clean
        frac = float(cov[diff].mean()) if diff.any() else 1.0
        covered_frac.append(frac)
        hit += frac >= 0.95
    nih = sorted((data / "cxr" / "nih" / "images").glob("*.png"))[:n]
    nih_text = sum(bool(detect_text_boxes(np.asarray(Image.open(f).convert("L")))) for f in nih)
    return {"openist_images": len(files), "false_positive_images": fp,
            "synthetic_text_detected_95pct_pixels": hit, "mean_text_pixels_covered": round(float(np.mean(covered_frac)), 3),
            "nih_images": len(nih), "nih_with_detected_text": nih_text}


def gate_power(trials: int, n_boot: int) -> dict:
    from training.promotion.gate import compare

    classes = ["nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax"]
    rng = np.random.default_rng(0)
    n = 300
    same_refused, worse_refused, deltas = 0, 0, []
    for _ in range(trials):
        y = (rng.random((n, 5)) < 0.3).astype(float)
        base = y * 1.5 + rng.normal(0, 1, y.shape)  # what both versions of a model share
        cur = base + rng.normal(0, 0.4, y.shape)
        eq = base + rng.normal(0, 0.4, y.shape)  # an equally good retrained version
        worse = eq.copy()
        worse[:, 1] = y[:, 1] * 0.9 + rng.normal(0, 1, n) + rng.normal(0, 0.4, n)  # weaker for consolidation
        r_eq = compare(y, cur, eq, classes, n_boot=n_boot, seed=1)
        r_w = compare(y, cur, worse, classes, n_boot=n_boot, seed=1)
        same_refused += not r_eq.accepted
        worse_refused += not r_w.accepted
        deltas.append(r_w.rows[1].delta)
    return {"cases": n, "trials": trials, "n_boot": n_boot, "margin": 0.03,
            "equal_candidate_refused_rate": same_refused / trials,
            "worse_candidate_refused_rate": worse_refused / trials,
            "worse_candidate_mean_auroc_drop": round(-float(np.mean(deltas)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    data = Path(args.data)
    t0 = time.time()
    res = {"annex_e_coverage": coverage(),
           "deid_time": deid_timing(data, 3 if args.quick else 10),
           "text_detector": detector(data, 20 if args.quick else 220),
           "gate": gate_power(10 if args.quick else 100, 300 if args.quick else 1000)}
    res["wall_s"] = round(time.time() - t0, 1)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_labeling.json").write_text(json.dumps(res, indent=1))
    c, d, t, g = res["annex_e_coverage"], res["deid_time"], res["text_detector"], res["gate"]
    md = [
        "# Labeling / de-identification / promotion gate measurements",
        "",
        "Written by `benchmarks/bench_labeling.py` (do not edit by hand).",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| PS3.15 Table E.1-1 attributes in the profile table | {c['profile_attributes']} |",
        f"| identifying values planted / surviving (Basic Profile) | {c['basic']['identifying_values_planted']} / {c['basic']['surviving']} |",
        f"| identifying values planted / surviving (+ Modified Dates) | {c['shift_dates']['identifying_values_planted']} / {c['shift_dates']['surviving']} (times of day kept: {c['shift_dates']['times_of_day_retained']}) |",
        f"| de-identify real CR 1024x1024 (Basic), median | {d['basic']['median_ms']} ms |",
        f"| de-identify real CR (+ dates + Clean Pixel Data), median | {d['shift_dates+clean_pixels']['median_ms']} ms |",
        f"| text detector: synthetic text found (>=95% of its pixels blanked) | {t['synthetic_text_detected_95pct_pixels']}/{t['openist_images']} (mean coverage {t['mean_text_pixels_covered']}) |",
        f"| text detector: clean OpenIST normals flagged (false positives) | {t['false_positive_images']}/{t['openist_images']} |",
        f"| NIH images with a detected burned-in marker | {t['nih_with_detected_text']}/{t['nih_images']} |",
        f"| gate: equally good candidate refused (N={g['cases']}, {g['trials']} trials) | {g['equal_candidate_refused_rate']:.2f} |",
        f"| gate: candidate worse by {g['worse_candidate_mean_auroc_drop']} AUROC in one class refused | {g['worse_candidate_refused_rate']:.2f} |",
        "",
        f"Total wall time {res['wall_s']} s.",
    ]
    (out / "bench_labeling.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
