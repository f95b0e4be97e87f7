"""Shadow mode: run a candidate beside the current model and record how often they agree.

The current model's output is what the pipeline uses; the candidate's never reaches a
reader.  Each case is appended to a JSON-lines log (scores and per-class decisions at
the operating points, no patient identifiers: cases are named by a UID the caller
passes), and :func:`summarise` reports per-class agreement and Cohen's kappa.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class ShadowRecorder:
    """Append-only shadow log of one (current, candidate) pair.

    Parameters
    ----------
    path
        JSON-lines file (created when missing).
    current, candidate
        ``name@version`` of both models.
    classes, thresholds
        Class order of the score vectors and the operating point of each class.
    """

    def __init__(self, path: str | os.PathLike, current: str, candidate: str, classes: Sequence[str],
                 thresholds: Mapping[str, float]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.current, self.candidate = current, candidate
        self.classes = list(classes)
        self.thresholds = {c: float(thresholds[c]) for c in self.classes}

    def record(self, case_uid: str, current_scores: Sequence[float], candidate_scores: Sequence[float]) -> dict:
        """Log one case; returns the logged entry."""
        cur = [float(v) for v in current_scores]
        cand = [float(v) for v in candidate_scores]
        if len(cur) != len(self.classes) or len(cand) != len(self.classes):
            raise ValueError(f"expected {len(self.classes)} scores per model")
        entry = {
            "at": time.time(), "case": case_uid, "classes": self.classes, "current": self.current, "candidate": self.candidate,
            "scores": {"current": cur, "candidate": cand},
            "decisions": {"current": [s >= self.thresholds[c] for s, c in zip(cur, self.classes)],
                          "candidate": [s >= self.thresholds[c] for s, c in zip(cand, self.classes)]},
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return entry

    def run(self, case_uid: str, pixels: np.ndarray, current_fn: Callable[[np.ndarray], Sequence[float]],
            candidate_fn: Callable[[np.ndarray], Sequence[float]]) -> Sequence[float]:
        """Score with both; record; return the *current* model's scores.  A failing
        candidate is logged and never affects the result."""
        cur = current_fn(pixels)
        try:
            cand = candidate_fn(pixels)
        except Exception:  # noqa: BLE001 - the shadow must never break the pipeline
            logger.exception("shadow candidate %s failed on a case", self.candidate)
            return cur
        self.record(case_uid, cur, cand)
        return cur

    def summary(self) -> dict[str, Any]:
        return summarise(self.path, self.classes)


def _kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    n = len(a)
    if n == 0:
        return None
    po = float(np.mean(a == b))
    pa, pb = float(np.mean(a)), float(np.mean(b))
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if pe >= 1.0 else (po - pe) / (1 - pe)


def summarise(path: str | os.PathLike, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class agreement rate, Cohen's kappa of decisions and mean |score difference|."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    out: dict[str, Any] = {"cases": len(rows), "classes": {}}
    if not rows:
        return out
    dc = np.array([r["decisions"]["current"] for r in rows], dtype=bool)
    dk = np.array([r["decisions"]["candidate"] for r in rows], dtype=bool)
    sc = np.array([r["scores"]["current"] for r in rows])
    sk = np.array([r["scores"]["candidate"] for r in rows])
    for i, c in enumerate(classes):
        out["classes"][c] = {"agreement": float(np.mean(dc[:, i] == dk[:, i])), "kappa": _kappa(dc[:, i], dk[:, i]),
                             "mean_abs_score_diff": float(np.mean(np.abs(sc[:, i] - sk[:, i])))}
    out["all_classes_agree"] = float(np.mean((dc == dk).all(axis=1)))
    return out
