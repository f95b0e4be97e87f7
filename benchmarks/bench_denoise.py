"""Low-dose CT denoising side by side: low-dose input, BM3D, TV and the medws networks.

On held-out real slices (``training.denoise.data.TEST_IDX``, never seen in training)
at simulated 25% and 10% dose (projection-domain noise insertion, seed 777 as in the
model evaluation), in one run:

* PSNR and SSIM against the real full-dose slice in the soft-tissue window
  W400/L40 ([-160, 240] HU);
* noise SD in the flattest soft-tissue ROIs; mean-HU bias in those ROIs;
* edge preservation: correlation of gradient magnitudes on the strongest 10% edges;
* time per 512 x 512 slice (single thread for every method: BM3D, TV, ONNX Runtime);
* a 300-slice series timing for the light network (in memory, HU in → HU out,
  ``--series-threads`` ONNX Runtime threads);
* a figure (one slice, all versions, same window): ``docs/images/denoise_comparison.png``.

BM3D: the ``bm3d`` package with the noise level estimated from each image
(median local SD over soft tissue, :func:`estimate_noise_sd`; the white-noise wavelet
MAD estimator reads CT noise as ~5 HU and left BM3D doing nothing).  TV: ``denoise_tv_chambolle``
with the weight tuned per dose on two *training* slices.

Results: ``benchmarks/results/bench_denoise.json`` and ``.md``.

    python benchmarks/bench_denoise.py [--slices 4] [--series 300]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from training.denoise import metrics as M  # noqa: E402
from training.denoise.data import DEFAULT_SERIES, cached_pairs, TEST_IDX, TRAIN_IDX, load_real_slices, make_pairs  # noqa: E402
from training.denoise.evaluate import TEST_SEED  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FIGURE = REPO / "docs" / "images" / "denoise_comparison.png"
NETWORKS = (("medws light", "ct-denoise-light"), ("medws full (seed design)", "ct-denoise-full"))
TV_WEIGHTS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.25)


def estimate_noise_sd(hu: np.ndarray, size: int = 9) -> float:
    """Noise SD estimated from the image itself: median local SD over soft tissue [HU].

    The wavelet-MAD estimator (``skimage.restoration.estimate_sigma``) assumes white
    noise and reads CT's low-pass, correlated noise as ~5 HU when it is 20-50 HU, which
    leaves BM3D doing nothing; the median local SD in soft tissue is the fairer estimate.
    """
    from scipy import ndimage as ndi

    hu = hu.astype(np.float64)
    m = ndi.uniform_filter(hu, size)
    var = ndi.uniform_filter(hu**2, size) - m**2
    soft = (m > -20) & (m < 120) & (ndi.minimum_filter(hu > -300, 3 * size) > 0)
    return float(np.sqrt(np.median(var[soft]))) if soft.any() else float(np.sqrt(np.median(var)))


def bm3d_denoise(hu: np.ndarray) -> np.ndarray:
    import bm3d

    sigma = estimate_noise_sd(hu) / 1000.0
    return (bm3d.bm3d(hu.astype(np.float64) / 1000.0, sigma_psd=sigma) * 1000.0).astype(np.float32)


def tv_denoise(hu: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return (denoise_tv_chambolle(hu.astype(np.float64) / 1000.0, weight=weight) * 1000.0).astype(np.float32)


def tune_tv(slices, px, doses) -> dict[float, float]:
    """TV weight maximising PSNR on two training slices, per dose."""
    idx = (TRAIN_IDX[2], TRAIN_IDX[8])
    pairs = make_pairs(slices, idx, px, doses=doses, seed=4242)
    best: dict[float, float] = {}
    for d in doses:
        ks = [k for k in range(len(pairs.dose)) if abs(pairs.dose[k] - d) < 1e-6]
        scores = {w: np.mean([M.psnr(tv_denoise(pairs.noisy[k], w), pairs.clean[k]) for k in ks]) for w in TV_WEIGHTS}
        best[d] = max(scores, key=scores.get)
        print(f"TV weight for dose {d}: {best[d]} ({ {w: round(float(s), 2) for w, s in scores.items()} })", flush=True)
    return best


CPU_TIMES: dict[str, list[float]] = {}


def _timed(fn, *a, label: str = ""):
    """Run ``fn``; wall seconds returned, process CPU seconds kept in ``CPU_TIMES[label]``."""
    c = time.process_time()
    t = time.perf_counter()
    out = fn(*a)
    CPU_TIMES.setdefault(label, []).append(time.process_time() - c)
    return out, time.perf_counter() - t


def _window_u8(hu: np.ndarray) -> np.ndarray:
    lo, hi = M.WINDOW
    return (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def make_figure(panels: list[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    crop = np.s_[96:416, 64:448]
    tiles = [(name, _window_u8(img[crop])) for name, img in panels]
    h, w = tiles[0][1].shape
    cols = 4
    rows = (len(tiles) + cols - 1) // cols
    pad = 22
    canvas = Image.new("L", (cols * w, rows * (h + pad) + pad), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill=255)
    for i, (name, t) in enumerate(tiles):
        r, c = divmod(i, cols)
        y = pad + r * (h + pad)
        canvas.paste(Image.fromarray(t), (c * w, y + pad))
        draw.text((c * w + 4, y + 4), name, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=4, help="held-out slices to use (BM3D takes seconds each)")
    ap.add_argument("--series", type=int, default=300, help="slices in the light-network series timing (0: skip)")
    ap.add_argument("--series-threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEFAULT_SERIES)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--figure", type=Path, default=FIGURE)
    ap.add_argument("--cache", type=Path, default=None, help="npz cache of the simulated test pairs")
    args = ap.parse_args(argv)

    from models.denoise.task import CtDenoiser
    from models.errors import ModelNotFoundError

    doses = (0.25, 0.10)
    slices, px = load_real_slices(args.data)
    pick = [TEST_IDX[i] for i in np.linspace(0, len(TEST_IDX) - 1, min(args.slices, len(TEST_IDX))).round().astype(int)]
    pick = sorted(set(pick))
    print(f"held-out slices {pick}", flush=True)
    nets = {}
    for label, name in NETWORKS:
        try:
            nets[label] = CtDenoiser(name, threads=1)
        except ModelNotFoundError as e:
            print(f"skipping {label}: {e}", flush=True)
    tv_w = tune_tv(slices, px, doses)
    # the same simulated test images as the model evaluation (same seed, same order)
    test = cached_pairs(args.cache, lambda: make_pairs(slices, TEST_IDX, px, doses=doses, seed=TEST_SEED))

    rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    fig_panels: dict[float, list] = {}
    fig_slice = pick[len(pick) // 2]
    for k in range(len(test.dose)):
        i, d = int(test.index[k]), round(float(test.dose[k]), 4)
        if i not in pick:
            continue
        clean, noisy = test.clean[k], test.noisy[k]
        rois = M.uniform_rois(clean)
        outputs = {"low-dose input": (noisy, 0.0)}
        outputs["BM3D"] = _timed(bm3d_denoise, noisy, label="BM3D")
        outputs["TV (Chambolle)"] = _timed(tv_denoise, noisy, tv_w[d], label="TV (Chambolle)")
        for label, den in nets.items():
            den.denoise_hu(noisy[:64, :64])  # warm-up
            outputs[label] = _timed(den.denoise_hu, noisy, label=label)
        dkey = f"{int(round(d * 100))}%"
        for method, (img, secs) in outputs.items():
            m = M.all_metrics(img, clean, rois)
            m["roi_bias_hu"] = float(np.mean([img[r].mean() - clean[r].mean() for r in rois]))
            m["seconds_per_slice"] = secs
            for key, v in m.items():
                rows.setdefault(dkey, {}).setdefault(method, {}).setdefault(key, []).append(float(v))
        print(f"slice {i} dose {dkey}: " + ", ".join(
            f"{mth} {M.psnr(img, clean):.2f} dB/{secs:.2f}s" for mth, (img, secs) in outputs.items()), flush=True)
        if i == fig_slice:
            fig_panels[d] = [("full dose (reference)", clean)] + [(f"{mth}", img) for mth, (img, _) in outputs.items()]
    full_dose_sd = float(np.mean([M.noise_sd(test.clean[k], M.uniform_rois(test.clean[k]))
                                  for k in range(len(test.dose)) if int(test.index[k]) in pick and abs(test.dose[k] - doses[0]) < 1e-4]))

    table = {d: {mth: {k: float(np.mean(v)) for k, v in vals.items()} for mth, vals in by.items()} for d, by in rows.items()}

    series = None
    if args.series and "medws light" in nets:
        den = CtDenoiser("ct-denoise-light", threads=args.series_threads)
        vol = [test.noisy[k % len(test.noisy)] for k in range(args.series)]
        den.denoise_hu(vol[0])
        c = time.process_time()
        t = time.perf_counter()
        for s in vol:
            den.denoise_hu(s)
        total = time.perf_counter() - t
        cpu = time.process_time() - c
        series = {"slices": args.series, "seconds": total, "seconds_per_slice": total / args.series,
                  "cpu_seconds": cpu,
                  "threads": args.series_threads, "target_seconds": 60.0, "met": total <= 60.0}
        print(f"light network, {args.series} slices: {total:.1f} s", flush=True)

    checks = {}
    if "25%" in table and "BM3D" in table["25%"]:
        b = table["25%"]["BM3D"]
        for label in nets:
            n = table["25%"][label]
            checks[label] = {
                "psnr_gain_over_bm3d_db_25pct": n["psnr_db"] - b["psnr_db"],
                "psnr_target_met (>= +1 dB)": n["psnr_db"] >= b["psnr_db"] + 1.0,
                "ssim_target_met (>= BM3D)": n["ssim"] >= b["ssim"],
                "speedup_vs_bm3d": b["seconds_per_slice"] / n["seconds_per_slice"],
                "speed_target_met (>= 20x)": b["seconds_per_slice"] / n["seconds_per_slice"] >= 20.0,
            }
    result = {
        "benchmark": "bench_denoise",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "note": "shared 2-core build machine (other jobs running): absolute times are noisy"},
        "data": {"series": "ct/totalseg/dicom_series (real, Siemens, 120 kVp, CTDIvol 18.5 mGy)",
                 "held_out_slices": pick, "doses": list(doses), "noise_seed": TEST_SEED,
                 "window_hu": list(M.WINDOW), "full_dose_noise_sd_hu": full_dose_sd},
        "tv_weights": {f"{int(round(d * 100))}%": w for d, w in tv_w.items()},
        "bm3d": "bm3d package, profile 'np', white-noise sigma = median local SD (9x9) over soft tissue of each image",
        "models": {label: f"{den.name} {den.version}" for label, den in nets.items()},
        "table": table,
        "cpu_seconds_per_slice": {k: float(np.median(v)) for k, v in CPU_TIMES.items()},
        "series_timing_light": series,
        "targets": checks,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_denoise.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# bench_denoise", "",
          f"{result['date']} — held-out real slices {pick}, simulated dose, PSNR/SSIM in W400/L40 vs the real "
          f"full-dose slice (its own noise SD in the same ROIs: {full_dose_sd:.1f} HU). Single thread per method. "
          "Shared 2-core machine: times are noisy.", ""]
    for d, by in table.items():
        md += [f"## {d} dose", "", "| method | PSNR dB | SSIM | noise SD HU | ROI bias HU | edge corr | s / slice |",
               "|---|---|---|---|---|---|---|"]
        for mth, v in by.items():
            md.append(f"| {mth} | {v['psnr_db']:.2f} | {v['ssim']:.4f} | {v['noise_sd_hu']:.1f} | {v['roi_bias_hu']:+.1f} "
                      f"| {v['edge_corr']:.3f} | {v['seconds_per_slice']:.3f} |")
        md.append("")
    md.append(f"TV weights (tuned on training slices): {result['tv_weights']}")
    md.append("")
    md.append("Median process CPU seconds per slice (less sensitive to the other jobs on the machine): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_seconds_per_slice"].items()))
    md.append("")
    if series:
        md.append(f"Light network, {series['slices']}-slice series ({series['threads']} ORT threads, in memory): "
                  f"{series['seconds']:.1f} s wall ({series['seconds_per_slice']:.3f} s/slice; process CPU time "
                  f"{series['cpu_seconds']:.1f} s); target ≤ 60 s wall: "
                  f"{'met' if series['met'] else 'NOT met'}")
        md.append("")
    for label, c in checks.items():
        md.append(f"- {label} at 25%: PSNR {c['psnr_gain_over_bm3d_db_25pct']:+.2f} dB vs BM3D "
                  f"({'met' if c['psnr_target_met (>= +1 dB)'] else 'NOT met'}), SSIM ≥ BM3D "
                  f"{'met' if c['ssim_target_met (>= BM3D)'] else 'NOT met'}, {c['speedup_vs_bm3d']:.1f}x faster "
                  f"({'met' if c['speed_target_met (>= 20x)'] else 'NOT met'})")
    (args.out / "bench_denoise.md").write_text("\n".join(md) + "\n")
    if doses[0] in fig_panels:
        make_figure(fig_panels[doses[0]], args.figure,
                    f"slice {fig_slice} (held out), simulated 25% dose, W400/L40")
        make_figure(fig_panels[doses[1]], args.figure.with_name(args.figure.stem + "_10pct.png"),
                    f"slice {fig_slice} (held out), simulated 10% dose, W400/L40")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
