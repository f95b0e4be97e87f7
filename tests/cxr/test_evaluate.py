"""Evaluation maths: AUROC (with ties) and its bootstrap CI, box hits, FROC, operating points."""
from __future__ import annotations

import numpy as np
import pytest

from training.cxr.evaluate import auroc, auroc_ci, choose_thresholds, hits, localisation


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.4
    s = np.round(rng.random(60) + 0.3 * y, 1)  # rounding creates ties
    pos, neg = s[y], s[~y]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(y, s) == pytest.approx(pairwise)
    assert auroc(y, -s) == pytest.approx(1 - pairwise)
    assert auroc(np.ones(5), np.arange(5)) is None


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.random(200) < 0.5
    s = rng.random(200) + 0.5 * y
    r = auroc_ci(y, s, n_boot=200)
    assert r["ci95"][0] < r["auroc"] < r["ci95"][1] and r["n_pos"] + r["n_neg"] == 200


def test_hits_and_froc():
    gt = [[(1, [10, 10, 50, 50])], [], [(1, [100, 100, 120, 120])]]
    cands = [
        [(1, 0.9, [20, 20, 40, 40]), (3, 0.8, [0, 0, 5, 5])],  # hit (class 1); other class ignored
        [(1, 0.7, [0, 0, 10, 10])],  # false positive on a normal image
        [(1, 0.2, [0, 0, 30, 30])],  # misses its box
    ]
    assert hits([20, 20, 40, 40], [10, 10, 50, 50]) and not hits([0, 0, 5, 5], [10, 10, 50, 50])
    loc = localisation(cands, gt, {"consolidation": 0.5})
    c = loc["consolidation"]
    assert c["gt_boxes"] == 2 and c["hit_rate_at_operating_point"] == 0.5
    assert c["froc_sensitivity_at_fp_per_image"]["0.125"] == 0.5  # first hit before any FP
    assert c["froc_sensitivity_at_fp_per_image"]["4.0"] == 0.5  # second box never found
    assert set(loc) == {"consolidation"}


def test_operating_points_are_training_normal_quantiles():
    scores = np.tile(np.linspace(0, 1, 101)[:, None], (1, 5))
    th = choose_thresholds(scores, scores[:, :1], specificity=0.9)
    assert th["nodule_mass"] == pytest.approx(0.9) and th["abnormality"] == pytest.approx(0.9)
