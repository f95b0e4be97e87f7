"""Evaluation of ``cxr-nodule`` (the fine-grid nodule/mass model, ONNX Runtime as shipped) -> its card.

The protocol of :func:`training.cxr.evaluate.evaluate` on the 512-pixel grid the model reads:

* held-out synthetic set: :func:`training.cxr.data.synthetic_eval_set` (seed 1234) on the
  held-out OpenIST normals letterboxed to 512 -- each normal clean and once per lesion
  kind; nodule/mass positives are the nodule insertions, every other image is a negative
  (clean, consolidation, interstitial, effusion, pneumothorax).  AUROC with 95% bootstrap
  CI, AUROC per diameter bin, and the peak hit rate (the map's maximum lies on the nodule);
* real NIH held-out split (patient level): nodule/mass AUROC against the image labels;
* operating point: 95% specificity on *training* real normals; false-positive rate on
  held-out real normals at it.

For comparison, the same images reduced 2x2 to 256 are scored by the coarse
``cxr-lesions`` model (its ``nodule_mass`` score), so the card shows both side by side.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.card import ModelCard, now_iso
from models.cxr.nodule import NODULE_STRIDE, lung_support, nodule_score
from training.cxr.evaluate import SPECIFICITY, auroc_ci, nodule_auroc_by_diameter

logger = logging.getLogger(__name__)


def score_images(lung_model, nodule_model, images: np.ndarray, lesion_model=None, batch: int = 8) -> dict[str, np.ndarray]:
    """Nodule scores (N,), maps (N,1,g,g) and supports of fine-grid images (N,512,512).

    Lungs come from ``lung_model`` on the 2x2-reduced grid (what the 256 pipeline grid is);
    with ``lesion_model`` the coarse model's ``nodule_mass`` score is returned as ``coarse``.
    """
    from training.cxr.train_nodule import half_grid

    scores, peaks, coarse = [], [], []
    g = images.shape[-1] // NODULE_STRIDE
    for i in range(0, len(images), batch):
        fine = np.ascontiguousarray(images[i:i + batch, None], dtype=np.float32)
        half = np.ascontiguousarray(half_grid(images[i:i + batch])[:, None])
        lung = lung_model.run({"image": half})["lung"][:, 0]
        maps = nodule_model.run({"image": fine})["nodule"][:, 0]
        for m, lp in zip(maps, lung):
            sup = lung_support(lp, g)
            scores.append(nodule_score(m, sup))
            masked = np.where(sup, m, -1.0) if sup.any() else m
            peaks.append(np.unravel_index(int(np.argmax(masked)), m.shape))
        if lesion_model is not None:
            coarse.append(lesion_model.run({"image": half})["scores"][:, 0])
    out = {"score": np.asarray(scores, np.float64), "peak": np.asarray(peaks, int)}
    if coarse:
        out["coarse"] = np.concatenate(coarse).astype(np.float64)
    return out


def peak_hit_rate(peaks: np.ndarray, masks: np.ndarray, margin: int = 1) -> float:
    """Fraction of positives whose map maximum lies on the nodule (mask cells dilated by ``margin``)."""
    from scipy import ndimage as ndi

    hits = 0
    for (py, px), m in zip(peaks, masks):
        g = m.shape[0] // NODULE_STRIDE
        cells = m.reshape(g, NODULE_STRIDE, g, NODULE_STRIDE).any(axis=(1, 3))
        cells = ndi.binary_dilation(cells, iterations=margin)
        hits += bool(cells[py, px])
    return hits / max(len(peaks), 1)


def evaluate_nodule(lung_model, nodule_model, data: str | Path, lesion_model=None, cache: str | Path | None = None) -> dict:
    """All metrics of the module docstring; returns {"metrics": ..., "threshold": ...}."""
    from training.cxr.data import synthetic_eval_set
    from training.cxr.train_nodule import fine_grids

    nih, openist = fine_grids(Path(data), lung_model, cache)
    nih_tr, nih_te = nih.split("train"), nih.split("test")
    op_tr, op_te = openist.split("train"), openist.split("test")

    # operating point on training real normals
    tr_norm = np.concatenate([nih_tr.images[nih_tr.abnormal == 0], op_tr.images])
    thr = float(np.quantile(score_images(lung_model, nodule_model, tr_norm)["score"], SPECIFICITY))

    s_img, s_lab, s_masks = synthetic_eval_set(op_te)
    s = score_images(lung_model, nodule_model, s_img, lesion_model)
    y = s_lab[:, 0]
    pos = y > 0
    synth = {"data": f"synthetic lesions (training.synthesis.cxr_lesions, seed 1234) inserted into {len(op_te.images)} "
                     f"held-out OpenIST normals letterboxed to {s_img.shape[-1]} px: {len(s_img)} images (clean + one per "
                     f"class); positives = nodule/mass insertions, negatives = every other image",
             "nodule_mass": auroc_ci(y, s["score"]),
             "nodule_mass_by_diameter": nodule_auroc_by_diameter(y, s["score"], s_masks[:, 0].sum(axis=(1, 2)),
                                                                 np.repeat(op_te.spacing, s_lab.shape[1] + 1)),
             "peak_hit_rate": peak_hit_rate(s["peak"][pos], s_masks[pos, 0]),
             "sensitivity_at_operating_point": float(np.mean(s["score"][pos] >= thr)),
             "specificity_at_operating_point": float(np.mean(s["score"][~pos] < thr))}
    if "coarse" in s:
        synth["coarse_cxr_lesions_same_images"] = {
            "nodule_mass": auroc_ci(y, s["coarse"]),
            "nodule_mass_by_diameter": nodule_auroc_by_diameter(y, s["coarse"], s_masks[:, 0].sum(axis=(1, 2)),
                                                                np.repeat(op_te.spacing, s_lab.shape[1] + 1)),
            "note": "cxr-lesions nodule_mass score on the same images reduced 2x2 to its 256 grid"}

    r = score_images(lung_model, nodule_model, nih_te.images, lesion_model)
    known = ~np.isnan(nih_te.labels[:, 0])
    real = {"data": f"NIH ChestX-ray14 subset, patient-level held-out split: {int(known.sum())} images with a known "
                    f"nodule/mass label ({int(np.nansum(nih_te.labels[:, 0]))} positive)",
            "nodule_mass": auroc_ci(nih_te.labels[known, 0], r["score"][known])}
    if "coarse" in r:
        real["coarse_cxr_lesions_same_images"] = auroc_ci(nih_te.labels[known, 0], r["coarse"][known])

    te_norm = np.concatenate([nih_te.images[nih_te.abnormal == 0], op_te.images])
    fpr = float(np.mean(score_images(lung_model, nodule_model, te_norm)["score"] >= thr))
    metrics = {"synthetic_heldout": synth, "real_nih_heldout": real,
               "fpr_real_normals_at_operating_point": {
                   "data": f"{int((nih_te.abnormal == 0).sum())} NIH 'No Finding' + {len(op_te.images)} OpenIST held-out normals",
                   "nodule_mass": fpr},
               "operating_point": f"{SPECIFICITY:.0%} specificity on {len(tr_norm)} training real normals"}
    return {"metrics": metrics, "threshold": thr}


def write_card(result: dict, card_path: str | Path) -> ModelCard:
    """Write the measured metrics and the operating point into the ``cxr-nodule`` card."""
    card = ModelCard.load(card_path)
    card.metrics = {**result["metrics"], "measured_at": now_iso(),
                    "measured_by": "training.cxr.evaluate_nodule (medws eval cxr --model cxr-nodule)"}
    card.thresholds = {"nodule_mass": round(float(result["threshold"]), 6)}
    card.save(card_path)
    logger.info("wrote metrics into %s", card_path)
    return card


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - release helper
    """Export a trained ``cxr-nodule`` checkpoint (parity-checked) and evaluate it into its card."""
    import argparse
    import json

    import torch

    from models.registry import Registry
    from training.cxr.export import export_nodule

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/cxr"))
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--train-info", type=Path, default=None)
    ap.add_argument("--zoo", type=Path, default=Path("models/zoo"))
    ap.add_argument("--version", required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    info = json.loads(args.train_info.read_text()) if args.train_info else {}
    export_nodule(args.ckpt, args.zoo, args.version, args.data, info)
    if args.no_eval:
        return 0
    reg = Registry([args.zoo])
    res = evaluate_nodule(reg.session("cxr-lung", threads=args.threads), reg.session("cxr-nodule", args.version, threads=args.threads),
                          args.data, lesion_model=reg.session("cxr-lesions", threads=args.threads), cache=args.cache)
    write_card(res, reg.get("cxr-nodule", args.version).card_path)
    print(json.dumps(res, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
