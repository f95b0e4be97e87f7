"""Evaluation of the exported chest X-ray models (ONNX Runtime, as shipped) -> model card.

Measured on data never used for training:

* real NIH ChestX-ray14, patient-level held-out split (:func:`training.cxr.data.split_of`):
  per-class AUROC with 95% bootstrap CI, abnormal-vs-normal AUROC, box hit rate at the
  operating points and FROC (sensitivity at 1/8..4 false positives per image) against the
  radiologist boxes;
* held-out synthetic lesions inserted into held-out real normals (OpenIST test split):
  per-class AUROC with CI and hit rate against the exact masks;
* false-positive rates on held-out real normals (NIH "No Finding" + OpenIST) at the
  operating points; lung-field Dice on held-out OpenIST masks at source resolution.

Operating points are chosen on *training* real normals (95% specificity per class).
Everything is written into the models' ``card.json`` by :func:`write_cards`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from models.card import ModelCard, now_iso
from models.cxr.postprocess import post_process
from models.cxr.preprocess import CLASSES
from models.geometry import Letterbox

logger = logging.getLogger(__name__)

FROC_FPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
SPECIFICITY = 0.95


def auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann--Whitney, ties counted half); None without both classes."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_ci(y: np.ndarray, s: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUROC with a 95% percentile bootstrap confidence interval (image-level resampling)."""
    point = auroc(y, s)
    out = {"auroc": point, "n_pos": int(np.sum(y)), "n_neg": int(len(y) - np.sum(y))}
    if point is None:
        return out | {"ci95": None}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        a = auroc(y[idx], s[idx])
        if a is not None:
            boots.append(a)
    out["ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if boots else None
    return out


def run_onnx(lung_model, lesion_model, images: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    """Run both ORT models on model-grid images (N,S,S)."""
    keys = ("scores", "abnormality", "seg", "embedding")
    acc: dict[str, list] = {k: [] for k in keys + ("lung",)}
    for i in range(0, len(images), batch):
        x = np.ascontiguousarray(images[i : i + batch, None], dtype=np.float32)
        if lung_model is not None:
            acc["lung"].append(lung_model.run({"image": x})["lung"][:, 0])
        if lesion_model is not None:
            out = lesion_model.run({"image": x})
            for k in keys:
                acc[k].append(out[k])
    return {k: np.concatenate(v) for k, v in acc.items() if v}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def hits(pred_box, gt_box, min_iou: float = 0.1) -> bool:
    """A predicted box hits a ground-truth box: IoU >= ``min_iou`` or its centre lies inside."""
    cx, cy = (pred_box[0] + pred_box[2]) / 2, (pred_box[1] + pred_box[3]) / 2
    inside = gt_box[0] <= cx <= gt_box[2] and gt_box[1] <= cy <= gt_box[3]
    return inside or _iou(pred_box, gt_box) >= min_iou


def candidates(outputs: dict[str, np.ndarray], geometries: list[Letterbox], seg_threshold: float) -> list[list]:
    """All findings per image with every class allowed (threshold 0), in source pixels."""
    zero = {c: 0.0 for c in CLASSES}
    out = []
    for i, geo in enumerate(geometries):
        res = post_process(outputs["scores"][i], float(outputs["abnormality"][i, 0]), outputs["seg"][i],
                           outputs["lung"][i], geo, zero, seg_threshold)
        out.append([(CLASSES.index(f.label), f.probability, f.box) for f in res.findings])
    return out


def localisation(cands: list[list], gt: list[list[tuple[int, list[float]]]], thresholds: dict[str, float]) -> dict:
    """Per class: box hit rate at the operating point and FROC sensitivities at ``FROC_FPS``."""
    result = {}
    n_img = len(gt)
    for ci, cls in enumerate(CLASSES):
        gts = [(i, b) for i, boxes in enumerate(gt) for c, b in boxes if c == ci]
        if not gts:
            continue
        preds = sorted(((p, i, box) for i, cs in enumerate(cands) for c, p, box in cs if c == ci), key=lambda t: -t[0])
        hit_gt: set[int] = set()
        tp_fp = []  # (prob, is_tp)
        for p, i, box in preds:
            matched = [k for k, (gi, gb) in enumerate(gts) if gi == i and hits(box, gb)]
            new = [k for k in matched if k not in hit_gt]
            hit_gt.update(new)
            tp_fp.append((p, bool(matched), len(new)))
        sens_at = {}
        fps, found = 0, 0
        curve = []
        for p, is_tp, n_new in tp_fp:
            fps += 0 if is_tp else 1
            found += n_new
            curve.append((fps / n_img, found / len(gts)))
        for target in FROC_FPS:
            ok = [s for f, s in curve if f <= target]
            sens_at[str(target)] = float(max(ok)) if ok else 0.0
        thr = thresholds.get(cls, 0.5)
        at_op = set()
        for p, i, box in preds:
            if p >= thr:
                at_op.update(k for k, (gi, gb) in enumerate(gts) if gi == i and hits(box, gb))
        result[cls] = {"gt_boxes": len(gts), "images": n_img, "hit_rate_at_operating_point": len(at_op) / len(gts),
                       "froc_sensitivity_at_fp_per_image": sens_at}
    return result


def choose_thresholds(scores: np.ndarray, abnormality: np.ndarray, specificity: float = SPECIFICITY) -> dict[str, float]:
    """Operating points: the ``specificity`` quantile of scores on (training) real normals."""
    th = {c: float(np.quantile(scores[:, i], specificity)) for i, c in enumerate(CLASSES)}
    th["abnormality"] = float(np.quantile(abnormality[:, 0], specificity))
    return th


def _grid_geometries(n: int, size: int) -> list[Letterbox]:
    return [Letterbox.for_shape(size, size, size) for _ in range(n)]


def evaluate(lung_model, lesion_model, data: str | Path, seg_threshold: float = 0.5,
             cache: str | Path | None = None, lesions: bool = True) -> dict:
    """Compute every metric of the module docstring; returns {"lung": ..., "lesions": ..., "thresholds": ...}."""
    from training.cxr.data import nih_records, openist_pairs, read_grey, synthetic_eval_set
    from training.cxr.train_lung import dice

    from training.cxr.train_lesion import load_training_grids

    data = Path(data)
    recs = nih_records(data / "nih")
    nih_tr, nih_te, openist = load_training_grids(data, cache)
    size = nih_te.images.shape[-1]
    op_tr, op_te = openist.split("train"), openist.split("test")

    # lung fields: held-out Dice at source resolution
    from models.cxr.preprocess import prepare

    lung_dice = []
    pairs = {Path(p).stem: (p, m) for p, m in openist_pairs(data / "normal-openist")}
    lung_te = run_onnx(lung_model, None, op_te.images)["lung"]
    for i, stem in enumerate(op_te.ids):
        img_p, mask_p = pairs[stem]
        truth = read_grey(mask_p) > 127
        geo = prepare(read_grey(img_p)).geometry
        lung_dice.append(dice(geo.unletterbox(lung_te[i]) >= 0.5, truth))
    lung_metrics = {"heldout_dice_mean": float(np.mean(lung_dice)), "heldout_dice_min": float(np.min(lung_dice)),
                    "n_images": len(lung_dice),
                    "data": "OpenIST normal radiographs, held-out 30% (md5 split), manual lung masks, source resolution"}

    if not lesions:
        return {"lung": lung_metrics}

    # thresholds on training real normals
    tr_norm = np.concatenate([nih_tr.images[nih_tr.abnormal == 0], op_tr.images])
    o_trn = run_onnx(None, lesion_model, tr_norm)
    thresholds = choose_thresholds(o_trn["scores"], o_trn["abnormality"])

    # real held-out NIH
    o_te = run_onnx(lung_model, lesion_model, nih_te.images)
    real = {"data": f"NIH ChestX-ray14 subset, patient-level held-out split: {len(nih_te.images)} images, "
                    f"{len(set(nih_te.patients))} patients; report-mined labels (+Google 2019 expert positives)",
            "per_class": {}, "abnormal_vs_normal": auroc_ci(nih_te.abnormal, o_te["abnormality"][:, 0])}
    for i, c in enumerate(CLASSES):
        known = ~np.isnan(nih_te.labels[:, i])
        real["per_class"][c] = auroc_ci(nih_te.labels[known, i], o_te["scores"][known, i])
    nih_geos = [_geometry_of(r) for r in _by_ids(recs, nih_te.ids)]
    cands = candidates(o_te, nih_geos, seg_threshold)
    boxed = [k for k in range(len(nih_te.ids)) if nih_te.source_boxes[k] or nih_te.abnormal[k] == 0]
    real["localisation"] = localisation([cands[k] for k in boxed], [nih_te.source_boxes[k] for k in boxed], thresholds)
    real["localisation_data"] = (f"{sum(1 for k in boxed if nih_te.source_boxes[k])} held-out images with radiologist boxes "
                                 f"(ChestX-Det10 / NIH BBox) + {sum(1 for k in boxed if not nih_te.source_boxes[k])} "
                                 "held-out normals; hit = IoU >= 0.1 or predicted box centre inside the radiologist box")

    # synthetic held-out
    s_img, s_lab, s_masks = synthetic_eval_set(op_te)
    o_s = run_onnx(lung_model, lesion_model, s_img)
    synth = {"data": f"synthetic lesions (training.synthesis.cxr_lesions, seed 1234) inserted into "
                     f"{len(op_te.images)} held-out OpenIST normals: {len(s_img)} images (clean + one per class)",
             "per_class": {c: auroc_ci(s_lab[:, i], o_s["scores"][:, i]) for i, c in enumerate(CLASSES)}}
    synth["nodule_mass_by_diameter"] = nodule_auroc_by_diameter(
        s_lab[:, 0], o_s["scores"][:, 0], s_masks[:, 0].sum(axis=(1, 2)), np.repeat(op_te.spacing, len(CLASSES) + 1))
    s_gt = []
    for m in s_masks:
        boxes = []
        for ci in range(len(CLASSES)):
            if m[ci].any():
                ys, xs = np.nonzero(m[ci])
                boxes.append((ci, [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]))
        s_gt.append(boxes)
    synth["localisation"] = localisation(candidates(o_s, _grid_geometries(len(s_img), size), seg_threshold), s_gt, thresholds)

    # FPR on held-out real normals at the operating points
    te_norm_imgs = np.concatenate([nih_te.images[nih_te.abnormal == 0], op_te.images])
    o_n = run_onnx(None, lesion_model, te_norm_imgs)
    fpr = {c: float(np.mean(o_n["scores"][:, i] >= thresholds[c])) for i, c in enumerate(CLASSES)}
    fpr["any_class"] = float(np.mean((o_n["scores"] >= np.array([thresholds[c] for c in CLASSES])).any(axis=1)))
    fpr["abnormality"] = float(np.mean(o_n["abnormality"][:, 0] >= thresholds["abnormality"]))
    lesions = {"real_nih_heldout": real, "synthetic_heldout": synth,
               "fpr_real_normals_at_operating_points": {
                   "data": f"{int((nih_te.abnormal == 0).sum())} NIH 'No Finding' + {len(op_te.images)} OpenIST held-out normals",
                   **fpr},
               "operating_points": f"per-class {SPECIFICITY:.0%} specificity on {len(tr_norm)} training real normals"}
    return {"lung": lung_metrics, "lesions": lesions, "thresholds": thresholds}


DIAMETER_BINS_MM = ((5.0, 10.0), (10.0, 15.0), (15.0, 20.0), (20.0, 31.0))


def nodule_auroc_by_diameter(labels: np.ndarray, scores: np.ndarray, area_px: np.ndarray,
                             spacing_mm: np.ndarray) -> list[dict]:
    """AUROC of synthetic nodules/masses per equivalent-diameter bin (all negatives each time).

    The diameter is that of the circle with the mask's area on the model grid, so the
    table also says how many model pixels a nodule of that size spans (learnability at
    the input resolution).
    """
    pos = labels > 0
    diam_mm = 2.0 * np.sqrt(area_px / np.pi) * spacing_mm
    diam_px = 2.0 * np.sqrt(area_px / np.pi)
    out = []
    for lo, hi in DIAMETER_BINS_MM:
        sel = pos & (diam_mm >= lo) & (diam_mm < hi)
        if not sel.any():
            continue
        y = np.r_[np.ones(sel.sum()), np.zeros((~pos).sum())]
        s = np.r_[scores[sel], scores[~pos]]
        out.append({"diameter_mm": [lo, hi], "n_pos": int(sel.sum()), "auroc": auroc(y, s),
                    "median_diameter_model_px": round(float(np.median(diam_px[sel])), 2)})
    return out


def _by_ids(recs: list, ids: list[str]) -> list:
    index = {r.image_id: r for r in recs}
    return [index[i] for i in ids]


def _geometry_of(rec) -> Letterbox:
    from PIL import Image

    from models.cxr.preprocess import INPUT_SIZE

    with Image.open(rec.image_path) as im:
        w, h = im.size
    return Letterbox.for_shape(h, w, INPUT_SIZE)


def write_card(name: str, metrics: dict, card_path: str | Path) -> ModelCard:
    """Write the measured metrics of model ``name`` (``cxr-lung`` or ``cxr-lesions``) into its card.

    For ``cxr-lesions`` the chosen operating points replace the card's thresholds.
    """
    card = ModelCard.load(card_path)
    part = metrics["lung"] if name == "cxr-lung" else metrics["lesions"]
    card.metrics = {**part, "measured_at": now_iso(), "measured_by": "training.cxr.evaluate (medws eval cxr)"}
    if name != "cxr-lung":
        card.thresholds = {k: round(float(v), 6) for k, v in metrics["thresholds"].items()}
    card.save(card_path)
    logger.info("wrote metrics into %s", card_path)
    return card
