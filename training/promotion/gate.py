"""Promotion gate: a candidate replaces the current model only if it is not worse for any class.

Both models are scored on the same locked test set; per class, the AUROC of each and
the paired difference (candidate - current) with a percentile bootstrap 95% CI
(cases resampled with replacement, the same resample for both models; Efron &
Tibshirani 1993).  The candidate is WORSE for a class when it is significantly worse
(the whole CI below 0) or when its AUROC drops by more than ``margin`` (a clinically
relevant drop, even where a small locked set cannot make it significant).  A strict
non-inferiority rule (CI lower bound >= -margin) was measured to refuse an equally good
candidate almost always at a few hundred cases (benchmarks/bench_labeling.py), so it is
not the default.  A class without both positive and negative cases in the locked set
cannot be compared and is reported as such; it does not block, but a gate with no
comparable class refuses.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.03
DEFAULT_N_BOOT = 2000


def auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); None if one class is absent."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class ClassComparison:
    """One row of the comparison table."""

    label: str
    n_pos: int
    n_neg: int
    current: float | None
    candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str  # "not worse" | "WORSE" | "not comparable"


@dataclass
class GateResult:
    accepted: bool
    rows: list[ClassComparison]
    margin: float
    n_boot: int
    n_cases: int
    reason: str
    meta: dict = field(default_factory=dict)

    def table(self) -> str:
        """The comparison table (markdown)."""
        lines = ["| class | pos | neg | current AUROC | candidate AUROC | delta | 95% CI | verdict |",
                 "|---|---|---|---|---|---|---|---|"]

        def f(v):
            return "n/a" if v is None else f"{v:.3f}"

        for r in self.rows:
            ci = "n/a" if r.ci_low is None else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            delta = "n/a" if r.delta is None else f"{r.delta:+.3f}"
            lines.append(f"| {r.label} | {r.n_pos} | {r.n_neg} | {f(r.current)} | {f(r.candidate)} | {delta} | {ci} "
                         f"| {r.verdict} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "reason": self.reason, "margin": self.margin, "n_boot": self.n_boot,
                "n_cases": self.n_cases, "rows": [asdict(r) for r in self.rows], "meta": self.meta}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))


def compare(
    y_true: np.ndarray,
    current: np.ndarray,
    candidate: np.ndarray,
    classes: Sequence[str],
    *,
    margin: float = DEFAULT_MARGIN,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> GateResult:
    """Compare per-case scores of two models on the locked set (arrays of shape (N, C)).

    ``y_true`` holds 0/1 (NaN = unknown for that class; such cases are left out of that
    class).  Pure: no files, no models.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, current, candidate = y_true[:, None], current[:, None], candidate[:, None]
    if not (y_true.shape == current.shape == candidate.shape) or y_true.shape[1] != len(classes):
        raise ValueError(f"shapes differ: labels {y_true.shape}, current {current.shape}, candidate {candidate.shape}, "
                         f"{len(classes)} classes")
    rng = np.random.default_rng(seed)
    n = len(y_true)
    boot_idx = rng.integers(0, n, size=(n_boot, n))
    rows = []
    for c, label in enumerate(classes):
        known = ~np.isnan(y_true[:, c])
        y = y_true[known, c].astype(bool)
        a, b = current[known, c], candidate[known, c]
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        auc_a, auc_b = auroc(y, a), auroc(y, b)
        if auc_a is None or auc_b is None:
            rows.append(ClassComparison(label, n_pos, n_neg, auc_a, auc_b, None, None, None, "not comparable"))
            continue
        kidx = np.flatnonzero(known)
        pos_map = np.full(n, -1)
        pos_map[kidx] = np.arange(len(kidx))
        deltas = []
        for idx in boot_idx:
            sel = pos_map[idx]
            sel = sel[sel >= 0]
            ya = y[sel]
            if ya.all() or not ya.any():
                continue
            deltas.append(auroc(ya, b[sel]) - auroc(ya, a[sel]))  # type: ignore[operator]
        lo, hi = (float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))) if deltas else (None, None)
        delta = auc_b - auc_a
        worse = (hi is not None and hi < 0) or delta < -margin
        verdict = "WORSE" if worse else "not worse"
        rows.append(ClassComparison(label, n_pos, n_neg, auc_a, auc_b, auc_b - auc_a, lo, hi, verdict))
    worse = [r.label for r in rows if r.verdict == "WORSE"]
    comparable = [r for r in rows if r.verdict != "not comparable"]
    if worse:
        reason = (f"candidate is worse than the current model for: {', '.join(worse)} "
                  f"(AUROC significantly lower, or lower by more than {margin})")
    elif not comparable:
        reason = "no class has both positive and negative cases in the locked set: nothing can be compared"
    else:
        reason = f"candidate is not worse for any of {len(comparable)} comparable class(es) (margin {margin})"
    accepted = not worse and bool(comparable)
    return GateResult(accepted, rows, margin, n_boot, n, reason)
