"""Where are the nodule CAD's false positives on the held-out sets?

The held-out cases of a set are one anatomy with different inserted nodules. A real
structure that the classifier mistakes for a nodule would be a false positive in (almost)
every case, and cost about 1 FP/scan on its own. A false positive found in one case only
belongs to that case's inserted nodules (the distance to them is a column).

This script runs the served pipeline on the held-out cases of
``training/ct/evaluate_nodules.py`` (same seeds, same cases: ``run_case``), groups the false
positives of a set by position (within ``--radius-mm``) into structures, over every
candidate and over what the task reports (:meth:`NodulePipeline.detections`), and writes,
per structure, the cases it appears in, its logits, its place (distance to the first
or last slice, to the lung wall) and the share of inserted nodules that score below it.
Writes ``benchmarks/results/ct_nodule_fp_structures.{json,md}``.

    python benchmarks/ct_nodule_fp_structures.py [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ct.nodules import NodulePipeline  # noqa: E402
from training.ct.data import nodule_volumes  # noqa: E402
from training.ct.evaluate_nodules import run_case  # noqa: E402
from training.ct.froc import froc  # noqa: E402

SETS = {"heldout_region": 10000, "heldout_volume": 20000}
N_CASES = {"heldout_region": 30, "heldout_volume": 15}


def group_structures(points_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Structure id of each point: greedy grouping, each point joins the first structure whose
    first point lies within ``radius_mm``."""
    ids = np.full(len(points_mm), -1, int)
    seeds: list[np.ndarray] = []
    for i, p in enumerate(points_mm):
        for k, s in enumerate(seeds):
            if np.linalg.norm(p - s) <= radius_mm:
                ids[i] = k
                break
        else:
            seeds.append(p)
            ids[i] = len(seeds) - 1
    return ids


def run_set(pipe: NodulePipeline, lv, seed0: int, n: int) -> dict:
    from scipy import ndimage

    fps: list[dict] = []
    nodule_logits: list[float] = []
    nodule_logits_reported: list[float] = []
    cases = []
    out_cases = []
    n_les = 0
    wall_mm = None
    for i in range(n):
        r = run_case(pipe, lv, seed0 + i)
        x, z, hits, labels, specs = r.x, r.z, r.hits, r.labels, r.specs
        cases.append(list(zip(z.tolist(), hits)))
        kept = set(r.kept)
        out_cases.append([(float(z[j]), hits[j]) for j in r.kept])
        n_les += len(specs)
        if wall_mm is None:  # distance inside the lungs to the lung boundary (same anatomy in every case)
            wall_mm = ndimage.distance_transform_edt(x.lungs, sampling=x.work.spacing)
        best: dict[int, float] = {}
        best_rep: dict[int, float] = {}
        # distance to the nearest inserted nodule of this case (outside its mask; 0 inside)
        to_nodule = ndimage.distance_transform_edt(labels == 0, sampling=x.work.spacing)
        for j, (c, s, h) in enumerate(zip(x.candidates, z, hits)):
            if h is None:
                v = tuple(int(a) for a in np.clip(np.round(c.zyx), 0, np.asarray(x.work.shape) - 1))
                fps.append({"case": i, "zyx": [float(a) for a in c.zyx], "logit": float(s), "source": c.source,
                            "radius_mm": float(c.radius_mm), "wall_mm": float(wall_mm[v]), "reported": j in kept,
                            "nodule_mm": float(to_nodule[v]),
                            "face_mm": float(min(c.zyx[0], x.work.shape[0] - 1 - c.zyx[0]) * x.work.spacing[0])})
            else:
                best[h] = max(best.get(h, -np.inf), float(s))
                if j in kept:
                    best_rep[h] = max(best_rep.get(h, -np.inf), float(s))
        nodule_logits += list(best.values()) + [-np.inf] * (len(specs) - len(best))  # no candidate: never found
        nodule_logits_reported += list(best_rep.values()) + [-np.inf] * (len(specs) - len(best_rep))
    return {"fps": fps, "nodule_logits": nodule_logits, "nodule_logits_reported": nodule_logits_reported,
            "froc": froc(cases, n_les, n), "froc_reported": froc(out_cases, n_les, n), "n_cases": n,
            "spacing": list(x.work.spacing)}


LEVELS = {"candidates": "every candidate (the earlier protocol)",
          "reported": "what the task reports (NodulePipeline.detections at every threshold)"}


def structures(res: dict, radius_mm: float, top: int, level: str = "candidates") -> list[dict]:
    fps = [f for f in res["fps"] if level == "candidates" or f["reported"]]
    if not fps:
        return []
    pts = np.array([f["zyx"] for f in fps]) * np.asarray(res["spacing"])
    order = np.argsort([-f["logit"] for f in fps])  # group around the highest-scoring points first
    ids = np.empty(len(fps), int)
    ids[order] = group_structures(pts[order], radius_mm)
    nod = np.array(res["nodule_logits" if level == "candidates" else "nodule_logits_reported"])
    out = []
    for k in range(int(ids.max()) + 1 if len(ids) else 0):
        members = [fps[j] for j in np.nonzero(ids == k)[0]]
        lg = np.array([m["logit"] for m in members])
        med = float(np.median(lg))
        head = members[int(np.argmax(lg))]
        out.append({"structure": k, "cases": len({m["case"] for m in members}), "logit_median": med,
                    "logit_min": float(lg.min()), "logit_max": float(lg.max()),
                    "nodules_scoring_below_median": float(np.mean(nod < med)),
                    "zyx": head["zyx"], "source": head["source"], "radius_mm": head["radius_mm"],
                    "distance_to_first_or_last_slice_mm": head["face_mm"],
                    "depth_in_lung_mm": head["wall_mm"],
                    "distance_to_an_inserted_nodule_mm": head["nodule_mm"]})
    out.sort(key=lambda s: -s["logit_median"])
    return out[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--radius-mm", type=float, default=4.5)
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args(argv)
    pipe = NodulePipeline(threads=a.threads)
    _ = pipe.model  # the served version
    vs = nodule_volumes()
    t0 = time.time()
    out = {"model": {"name": pipe.name, "version": pipe.version}, "grouping_radius_mm": a.radius_mm, "sets": {}}
    for name, seed0 in SETS.items():
        res = run_set(pipe, vs[name], seed0, N_CASES[name])
        out["sets"][name] = {"n_cases": res["n_cases"]}
        for level in LEVELS:
            nod = np.array(res["nodule_logits" if level == "candidates" else "nodule_logits_reported"])
            every = structures(res, a.radius_mm, 10 ** 6, level)
            fp = sorted((f["logit"] for f in res["fps"] if level == "candidates" or f["reported"]), reverse=True)
            at_1 = fp[res["n_cases"] - 1] if len(fp) >= res["n_cases"] else -np.inf  # the set's 1 FP/scan logit
            out["sets"][name][level] = {
                "n_nodules": len(nod), "cpm": res["froc" if level == "candidates" else "froc_reported"]["cpm"],
                "nodule_logit_median": float(np.median(nod)),
                "logit_at_1_fp_per_scan": float(at_1),
                "structures_in_at_least_half_the_cases_at_or_above_1_fp_per_scan": sum(
                    1 for s in every if s["cases"] >= res["n_cases"] / 2 and s["logit_median"] >= at_1),
                "structures_in_at_least_half_the_cases_above_the_median_nodule": sum(
                    1 for s in every if s["cases"] >= res["n_cases"] / 2 and s["logit_median"] > np.median(nod)),
                "top_structures": every[:a.top]}
    out["wall_s"] = round(time.time() - t0, 1)
    res_dir = REPO / "benchmarks" / "results"
    (res_dir / "ct_nodule_fp_structures.json").write_text(json.dumps(out, indent=1))
    lines = ["# Lung-nodule CAD: where the held-out false positives are", "",
             f"Written by benchmarks/ct_nodule_fp_structures.py: served `{pipe.name}` {pipe.version}, the held-out "
             "cases of training/ct/evaluate_nodules.py; false positives of a set grouped by position "
             f"(within {a.radius_mm} mm), over every candidate and over what the task reports. Every case of a set "
             "is the same anatomy, so a structure that is a false positive in every case costs 1 FP/scan on its "
             "own; one found in one case only belongs to that case's inserted nodules (see the last column).", ""]
    for name, d in out["sets"].items():
        for level, what in LEVELS.items():
            e = d[level]
            lines += [f"## {name}, {what}: {d['n_cases']} cases, {e['n_nodules']} nodules, CPM {e['cpm']:.3f}", "",
                      f"Median best logit of the inserted nodules: {e['nodule_logit_median']:.2f}; the set reaches 1 "
                      f"FP/scan at logit {e['logit_at_1_fp_per_scan']:.2f}. Structures that are false positives in at "
                      "least half the cases with a median logit at or above that: "
                      f"**{e['structures_in_at_least_half_the_cases_at_or_above_1_fp_per_scan']}**; above the median "
                      f"nodule's: **{e['structures_in_at_least_half_the_cases_above_the_median_nodule']}**.", "",
                      "| structure | cases | logit median (min–max) | nodules below its median | pass | radius mm "
                      "| to first/last slice mm | depth in lung mm | to an inserted nodule mm |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for s in e["top_structures"]:
                lines.append(f"| {s['structure']} | {s['cases']}/{d['n_cases']} | {s['logit_median']:.2f} "
                             f"({s['logit_min']:.2f}–{s['logit_max']:.2f}) | {s['nodules_scoring_below_median']:.2f} "
                             f"| {s['source']} | {s['radius_mm']:.1f} | {s['distance_to_first_or_last_slice_mm']:.1f} "
                             f"| {s['depth_in_lung_mm']:.1f} | {s['distance_to_an_inserted_nodule_mm']:.1f} |")
            lines.append("")
    (res_dir / "ct_nodule_fp_structures.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
