"""Agreement between annotators: IoU of boxes and masks, Cohen's kappa of labels."""
from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes ``(x1, y1, x2, y2)``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters' categorical ratings of the same items (Cohen 1960).

    Returns 1.0 when both raters use one identical category throughout (no chance
    disagreement possible) and ``nan`` for no items.
    """
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return float("nan")
    cats = sorted(set(a) | set(b), key=str)
    idx = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for x, y in zip(a, b):
        table[idx[x], idx[y]] += 1
    po = np.trace(table) / n
    pe = float((table.sum(0) * table.sum(1)).sum()) / (n * n)
    if pe >= 1.0:
        return 1.0 if po >= 1.0 else 0.0
    return float((po - pe) / (1 - pe))


def match_boxes(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[float]:
    """Greedy one-to-one matching by IoU; returns the IoU of each box of the larger set
    (0 for unmatched boxes)."""
    pairs = sorted(((box_iou(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)), reverse=True)
    used_a, used_b, ious = set(), set(), []
    for iou, i, j in pairs:
        if iou <= 0 or i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        ious.append(iou)
    return ious + [0.0] * (max(len(a), len(b)) - len(ious))


def annotator_agreement(store, annotator_a: str, annotator_b: str, classes: Sequence[str]) -> dict:
    """Agreement of two annotators over the images both annotated.

    Per class: Cohen's kappa of presence (image label or any box/polygon/mask of the
    class), mean matched box IoU, mean mask IoU.  Returns a JSON-ready dict.
    """
    images = [r["image_id"] for r in store.images()]
    both = []
    for image_id in images:
        ann_a = store.annotations(image_id, annotator_a, include_rejected=False)
        ann_b = store.annotations(image_id, annotator_b, include_rejected=False)
        if ann_a and ann_b:
            both.append((image_id, ann_a, ann_b))
    out: dict = {"annotators": [annotator_a, annotator_b], "images": len(both), "classes": {}}
    for c in classes:
        pres_a = [any(x.label == c for x in aa) for _, aa, _ in both]
        pres_b = [any(x.label == c for x in bb) for _, _, bb in both]
        box_ious: list[float] = []
        mask_ious: list[float] = []
        for _, aa, bb in both:
            ba = [x.box() for x in aa if x.kind == "box" and x.label == c]
            bbx = [x.box() for x in bb if x.kind == "box" and x.label == c]
            if ba or bbx:
                box_ious += match_boxes(ba, bbx)
            ma = [x.mask() for x in aa if x.kind == "mask" and x.label == c]
            mb = [x.mask() for x in bb if x.kind == "mask" and x.label == c]
            if ma or mb:
                shape = (ma or mb)[0].shape
                mask_ious.append(mask_iou(np.any(ma, axis=0) if ma else np.zeros(shape, bool),
                                          np.any(mb, axis=0) if mb else np.zeros(shape, bool)))
        out["classes"][c] = {
            "kappa": cohen_kappa(pres_a, pres_b) if both else float("nan"),
            "box_iou_mean": float(np.mean(box_ious)) if box_ious else None,
            "mask_iou_mean": float(np.mean(mask_ious)) if mask_ious else None,
        }
    return out
