"""Liver-lesion post-processing: cached network outputs, miss analysis and the choice of the
candidate thresholds on VALIDATION studies (seeds 20000+, never the held-out 30000+).

``python -m training.ct.liver_tuning collect --onnx M.onnx --seeds 20000:20030 --cache /tmp/liver_cache``
runs phase identification, registration and the network on simulated studies (same
protocol as the held-out evaluation: misaligned phases, headers) and caches the
probabilities; ``sweep`` scores post-processing settings on the cached validation
studies and writes the chosen ones; ``analyse`` lists every missed lesion with its size,
type, contrast, position and the probability the network reached inside it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from models.ct.liver import LiverPipeline, body_mask, liver_region
from models.ct.volume import resample_mask
from training.ct.froc import dice
from training.ct.liver_data import LiverVolume, liver_case, liver_train_volume

logger = logging.getLogger(__name__)
VALIDATION_SEED0 = 20000
HELDOUT_SEED0 = 30000


def study(lv: LiverVolume, seed: int):
    """The simulated study of one seed, exactly as the held-out evaluation draws it."""
    rng = np.random.default_rng(seed)
    return liver_case(lv, rng, n_lesions=int(rng.integers(1, 4)))


def lesion_contrast(mp, k: int) -> dict[str, float]:
    """Mean HU of lesion ``k`` minus the surrounding liver (3–9 mm shell) per aligned phase."""
    g = mp.lesion_labels == k
    shell = ndimage.binary_dilation(g, iterations=3) & ~ndimage.binary_dilation(g, iterations=1)
    shell &= mp.lesion_labels == 0
    return {p: round(float(a[g].mean() - a[shell].mean()), 1) if shell.any() else float("nan")
            for p, a in mp.aligned.items()}


def match(pred: np.ndarray, labels: np.ndarray, n_truth: int) -> tuple[list[dict], int]:
    """Per truth lesion ``found`` (any overlap) and Dice; the number of predicted components
    touching no truth lesion (false positives).  ``pred``/``labels`` on the same grid."""
    rows = []
    matched: set[int] = set()
    for k in range(1, n_truth + 1):
        g = labels == k
        ids = np.unique(pred[g])
        ids = ids[ids > 0]
        row = {"found": bool(ids.size)}
        if ids.size:
            matched.update(int(j) for j in ids)
            row["dice"] = dice(np.isin(pred, ids), g)
            row["pred_ids"] = [int(j) for j in ids]
        rows.append(row)
    n_pred = int(pred.max())
    return rows, len([j for j in range(1, n_pred + 1) if j not in matched and (pred == j).any()])


def collect(pipe: LiverPipeline, lv: LiverVolume, seeds: list[int], cache: Path, model_name: str = "registry") -> None:
    """Run pre_process + predict on each seed's study; save probabilities and truth."""
    cache.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        f = cache / f"{s}.npz"
        if f.is_file():
            continue
        vols, mp = study(lv, s)
        t = time.time()
        x = pipe.pre_process(vols)
        prob = pipe.predict(x)
        sec = time.time() - t
        truth_work = resample_mask(mp.lesion_labels, lv.native, x.work)
        info = [{**les.to_json(), "contrast_hu": lesion_contrast(mp, k),
                 "n_vox_native": int((mp.lesion_labels == k).sum())}
                for k, les in enumerate(mp.lesions, start=1)]
        np.savez_compressed(f, prob=prob.astype(np.float16), labels=mp.lesion_labels, labels_work=truth_work,
                            info=json.dumps(info), seconds=sec, edge_pad=pipe.edge_pad, model=model_name)
        logger.info("seed %d: %d lesions, %.1f s", s, len(info), sec)


def load(cache: Path, seeds: list[int]) -> list[dict]:
    out = []
    for s in seeds:
        z = np.load(cache / f"{s}.npz")
        out.append({"seed": s, "prob": z["prob"].astype(np.float32), "labels": z["labels"],
                    "labels_work": z["labels_work"], "info": json.loads(str(z["info"])),
                    "seconds": float(z["seconds"]), "edge_pad": int(z["edge_pad"]) if "edge_pad" in z else 0,
                    "model": str(z["model"]) if "model" in z else "registry (ct-liver-lesion-seg 1.0.0)"})
    return out


def score(pipe: LiverPipeline, cases: list[dict], lv: LiverVolume) -> dict:
    """Sensitivity (≥ 10 mm, all), Dice of found lesions, FP/case for the pipeline's
    current post-processing settings, matched on the native grid like the evaluation."""
    rows = []
    fps = 0
    for c in cases:
        if "near" not in c:  # independent of the lesion settings: computed once per case
            c["liver"], c["near"] = liver_region(c["prob"][0], body_mask(lv.work.hu))
        lesions = pipe.candidates(c["prob"][1], c["near"], c["liver"])
        pred = resample_mask(lesions, lv.work, lv.native)
        r, fp = match(pred, c["labels"], len(c["info"]))
        fps += fp
        for info, row in zip(c["info"], r):
            rows.append({"seed": c["seed"], **info, **row})
    big = [r for r in rows if r["diameter_mm"] >= 10]
    found = [r for r in rows if r["found"]]
    return {"sens_ge10": float(np.mean([r["found"] for r in big])) if big else 0.0,
            "sens_all": float(np.mean([r["found"] for r in rows])) if rows else 0.0,
            "dice_ge10": float(np.mean([r["dice"] for r in big if r["found"]])) if any(r["found"] for r in big) else 0.0,
            "dice_found": float(np.mean([r["dice"] for r in found])) if found else 0.0,
            "fp_per_case": fps / max(len(cases), 1), "n_lesions": len(rows), "n_ge10": len(big), "rows": rows}


GRID = {"threshold": [0.3, 0.4, 0.5, 0.6], "grow_threshold": [None, 0.2, 0.3],
        "min_diameter_mm": [5.0, 7.0], "min_peak": [None, 0.8], "min_in_liver": [None, 0.5, 0.6, 0.7]}


def components(pipe: LiverPipeline, c: dict, lv: LiverVolume) -> list[dict]:
    """Every candidate component of ``pipe``'s thresholds (no size/peak/liver filter) with
    what the filters look at (diameter, peak, in-liver and shell-liver fractions) and its
    overlap with each truth lesion, on the 1.5 mm work grid."""
    if "near" not in c:
        c["liver"], c["near"] = liver_region(c["prob"][0], body_mask(lv.work.hu))
    raw = LiverPipeline(model=object(), threshold=pipe.threshold, grow_threshold=pipe.grow_threshold,
                        min_diameter_mm=0.0)
    lab = raw.candidates(c["prob"][1], c["near"])
    out = []
    vox = float(np.prod(lv.work.spacing))
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(0, s.start - 3), min(n, s.stop + 3)) for s, n in zip(sl, lab.shape))
        m = lab[sl] == i
        ring = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m)
        t = c["labels_work"][sl][m]
        ks, cnt = np.unique(t[t > 0], return_counts=True)
        out.append({"diameter_mm": float((6 * m.sum() * vox / np.pi) ** (1 / 3)), "size": int(m.sum()),
                    "peak": float(c["prob"][1][sl][m].max()), "inside": float(c["liver"][sl][m].mean()),
                    "shell": float(c["liver"][sl][ring].mean()) if ring.any() else 0.0,
                    "inter": {int(k): int(n) for k, n in zip(ks, cnt)}})
    return out


def fast_score(tables: list[tuple[dict, list[dict]]], p: dict) -> dict:
    """Sensitivity, Dice (work grid), FP/case of the filters ``p`` from component tables."""
    found_big, found_all, dices_big, fps = [], [], [], 0
    for c, comps in tables:
        keep = [q for q in comps if q["diameter_mm"] >= p["min_diameter_mm"]
                and (p["min_peak"] is None or q["peak"] >= p["min_peak"])
                and (p["min_in_liver"] is None or (q["inside"] >= p["min_in_liver"] and q["shell"] >= p["min_in_liver"]))]
        fps += sum(1 for q in keep if not q["inter"])
        for k, info in enumerate(c["info"], start=1):
            g = int((c["labels_work"] == k).sum()) if f"n{k}" not in c else c[f"n{k}"]
            c[f"n{k}"] = g
            hit = [q for q in keep if k in q["inter"]]
            found = bool(hit)
            found_all.append(found)
            if info["diameter_mm"] >= 10:
                found_big.append(found)
                if found:
                    dices_big.append(2 * sum(q["inter"][k] for q in hit) / (sum(q["size"] for q in hit) + g))
    n = max(len(tables), 1)
    return {"sens_ge10": float(np.mean(found_big)) if found_big else 0.0,
            "sens_all": float(np.mean(found_all)) if found_all else 0.0,
            "dice_ge10": float(np.mean(dices_big)) if dices_big else 0.0, "fp_per_case": fps / n,
            "n_lesions": len(found_all), "n_ge10": len(found_big)}


def sweep(cases: list[dict], lv: LiverVolume, max_fp: float, grid: dict = GRID) -> tuple[dict, list[dict]]:
    """Every setting of ``grid`` on the validation cases (matched on the work grid);
    chosen = highest sensitivity ≥ 10 mm with FP/case ≤ ``max_fp``, ties → higher Dice,
    then fewer FP."""
    table = []
    for thr, grow in itertools.product(grid["threshold"], grid["grow_threshold"]):
        if grow is not None and grow >= thr:
            continue
        pipe = LiverPipeline(model=object(), threshold=thr, grow_threshold=grow)
        tables = [(c, components(pipe, c, lv)) for c in cases]
        for md, mp_, mil in itertools.product(grid["min_diameter_mm"], grid["min_peak"], grid["min_in_liver"]):
            if mp_ is not None and mp_ <= thr:
                continue
            p = {"threshold": thr, "grow_threshold": grow, "min_diameter_mm": md, "min_peak": mp_,
                 "min_in_liver": mil}
            table.append({**p, **fast_score(tables, p)})
            logger.info("%s", table[-1])
    ok = [t for t in table if t["fp_per_case"] <= max_fp] or table
    best = max(ok, key=lambda t: (round(t["sens_ge10"], 3), round(t["dice_ge10"], 3), -t["fp_per_case"]))
    return best, table


def analyse(pipe: LiverPipeline, cases: list[dict], lv: LiverVolume) -> list[dict]:
    """One row per missed lesion: size, type, contrast per phase, position (distance to the
    volume's first/last slice and to the liver surface), peak probability inside it."""
    s = score(pipe, cases, lv)
    liver_dist = ndimage.distance_transform_edt(lv.native_masks["liver"], sampling=lv.native.spacing)
    by_seed = {c["seed"]: c for c in cases}
    out = []
    k_of = {}
    for r in s["rows"]:
        k_of[r["seed"]] = k_of.get(r["seed"], 0) + 1
        k = k_of[r["seed"]]
        c = by_seed[r["seed"]]
        gw = c["labels_work"] == k
        pk = float(c["prob"][1][gw].max()) if gw.any() else float("nan")
        ctr = np.round(np.asarray(r["centre_zyx"])).astype(int)
        row = {"seed": r["seed"], "lesion": k, "diameter_mm": round(r["diameter_mm"], 1), "type": r["type"],
               "found": r["found"], "dice": round(r.get("dice", 0.0), 3), "peak_prob": round(pk, 3),
               "frac_ge_thr": round(float((c["prob"][1][gw] >= pipe.threshold).mean()), 3) if gw.any() else 0.0,
               "liver_prob_mean": round(float(c["prob"][0][gw].mean()), 3) if gw.any() else 0.0,
               "z_from_edge_mm": float(min(ctr[0], lv.native.shape[0] - 1 - ctr[0]) * lv.native.spacing[0]),
               "depth_in_liver_mm": round(float(liver_dist[tuple(ctr)]), 1),
               "n_vox_native": r["n_vox_native"], "contrast_hu": r["contrast_hu"]}
        out.append(row)
    return out


def _seeds(spec: str) -> list[int]:
    a, b = (int(v) for v in spec.split(":"))
    return list(range(a, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["collect", "sweep", "analyse"])
    ap.add_argument("--onnx", help="network for collect (default: the registry model)")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--seeds", required=True, help="a:b")
    ap.add_argument("--max-fp", type=float, default=1.0)
    ap.add_argument("--out", help="JSON output")
    ap.add_argument("--set", default="{}", help="post-processing settings for analyse (JSON)")
    ap.add_argument("--edge-pad", type=int, default=0, help="collect: mirrored slices at both ends")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lv = liver_train_volume()
    seeds = _seeds(a.seeds)
    if a.cmd == "collect":
        from models.session import OrtModel

        model = OrtModel(Path(a.onnx), threads=1) if a.onnx else None
        collect(LiverPipeline(model=model, threads=1, edge_pad=a.edge_pad), lv, seeds, Path(a.cache),
                a.onnx or "registry")
        return 0
    if any(s >= HELDOUT_SEED0 for s in seeds) and a.cmd == "sweep":
        raise SystemExit("sweep chooses settings: use validation seeds (< 30000), never held-out ones")
    cases = load(Path(a.cache), seeds)
    if a.cmd == "sweep":
        best, table = sweep(cases, lv, a.max_fp)
        if len({(c["edge_pad"], c["model"]) for c in cases}) != 1:
            raise SystemExit("the cached cases mix networks or edge padding")
        res = {"validation_seeds": [seeds[0], seeds[-1] + 1], "max_fp_per_case": a.max_fp,
               "model": cases[0]["model"], "edge_pad": cases[0]["edge_pad"], "chosen": best,
               "selection_rule": "highest sensitivity >= 10 mm with FP/case <= max; ties: Dice, then fewer FP; "
                                 "lesions matched on the 1.5 mm work grid",
               "table": table}
    else:
        res = analyse(LiverPipeline(model=object(), **json.loads(a.set)), cases, lv)
    text = json.dumps(res, indent=1, default=float)
    if a.out:
        Path(a.out).write_text(text)
    print(json.dumps(res["chosen"], default=float) if a.cmd == "sweep" else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
