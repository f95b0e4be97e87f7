"""FROC and CPM (LUNA16 convention), lesion matching and Dice (numpy only)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def froc(case_candidates: Sequence[Sequence[tuple[float, int | None]]], n_lesions: int, n_cases: int,
         fp_rates: Sequence[float] = FP_RATES) -> dict:
    """Sensitivity at each FP/scan rate and their mean (CPM).

    ``case_candidates[i]`` lists ``(score, lesion_id or None)`` for case ``i``; a candidate
    with a lesion id is a hit (the first, highest-scoring hit of a lesion counts, later hits
    of the same lesion are ignored, as in LUNA16), ``None`` is a false positive.
    Sensitivity at rate r = lesions found with at most ``r × n_cases`` FPs above the threshold.
    """
    items = []
    for i, cands in enumerate(case_candidates):
        for s, lid in cands:
            items.append((float(s), None if lid is None else (i, lid)))
    items.sort(key=lambda t: -t[0])
    found: set = set()
    fps = 0
    # points (fp count, tp count) after each distinct score threshold
    curve: list[tuple[int, int]] = [(0, 0)]
    k = 0
    while k < len(items):
        s = items[k][0]
        while k < len(items) and items[k][0] == s:
            lid = items[k][1]
            if lid is None:
                fps += 1
            elif lid not in found:
                found.add(lid)
            k += 1
        curve.append((fps, len(found)))
    sens = {}
    for r in fp_rates:
        allowed = r * n_cases
        tp = max(t for f, t in curve if f <= allowed)
        sens[str(r)] = tp / max(n_lesions, 1)
    return {"sensitivity_at_fp_per_scan": sens, "cpm": float(np.mean(list(sens.values()))),
            "max_sensitivity": len(found) / max(n_lesions, 1), "total_fp": fps, "n_cases": n_cases,
            "n_lesions": n_lesions}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(bool)
    b = b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)
