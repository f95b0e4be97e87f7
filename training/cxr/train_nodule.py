"""Fine-grid nodule/mass network (``cxr-nodule``): a :class:`training.cxr.nets.CxrLesionNet`
fine-tuned on radiographs letterboxed to 512 pixels, trained on 256-pixel crops.

Why: on the 256 grid a 5 mm nodule spans ~3 pixels; on the 512 grid ~6.  The network is
fully convolutional and its nodule score is a local quantity (the maximum of the stride-4
nodule map inside the lung fields, :func:`models.cxr.nodule.nodule_score`), so training on
crops costs a quarter of full 512 images and matches full-image inference.

Each batch mixes crops of

* synthetic nodules/masses (5--30 mm, half of them drawn from 5--15 mm, where the coarse
  model failed) inserted into real normal radiographs at 512 (exact masks),
* the other four synthetic lesion kinds (negatives: the held-out synthetic negatives
  include them),
* real NIH radiographs without a nodule/mass label (negatives of every other disease) and
  real normals,
* real NIH nodule/mass radiographs with a radiologist box (crop around the box; image-level
  loss only, the box is too coarse for pixels).

Losses: pixel BCE (lesion pixels weighted) + soft Dice on positives at stride 4, and a
multiple-instance BCE on the maximum logit inside the crop's lung support (the image score).
"""
from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from models.cxr.nodule import NODULE_INPUT_SIZE, NODULE_STRIDE, lung_support
from models.cxr.preprocess import CLASSES
from training.cxr.data import GridSet, augment_batch, downsample_mask, grid_from_pairs, grid_from_records
from training.cxr.nets import CxrLesionNet

logger = logging.getLogger(__name__)

CROP = 256
NODULE = CLASSES.index("nodule_mass")
OTHER_KINDS = [c for c in CLASSES if c != "nodule_mass"]


def fine_grids(data: str | Path, lung_session, cache: str | Path | None = None) -> tuple[GridSet, GridSet]:
    """(all NIH, OpenIST normals) on the 512 grid with lung masks (manual for OpenIST, predicted for NIH).

    ``lung_session`` runs the shipped ``cxr-lung`` model (256 input) on the 2x2-mean
    reduced fine grid; its mask is repeated back to 512.
    """
    from training.cxr.data import nih_records, openist_pairs

    if cache and Path(cache).exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    data = Path(data)
    nih = grid_from_records(nih_records(data / "nih"), NODULE_INPUT_SIZE)
    openist = grid_from_pairs(openist_pairs(data / "normal-openist"), NODULE_INPUT_SIZE)
    nih.lungs = predicted_lungs(lung_session, nih.images)
    if cache:
        with open(cache, "wb") as f:
            pickle.dump((nih, openist), f, protocol=4)
    return nih, openist


def half_grid(images: np.ndarray) -> np.ndarray:
    """2x2 means of square grids (N,S,S) -> (N,S/2,S/2) float32: the 256 grid the lung model reads."""
    n, s, _ = images.shape
    return images.reshape(n, s // 2, 2, s // 2, 2).mean(axis=(2, 4)).astype(np.float32)


def predicted_lungs(lung_session, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """Lung masks (N,512,512) from the 256-input lung model run on 2x2-mean reduced images."""
    half = half_grid(images)
    out = []
    for i in range(0, len(images), batch):
        p = lung_session.run({"image": np.ascontiguousarray(half[i:i + batch, None])})["lung"][:, 0] >= 0.5
        out.append(np.repeat(np.repeat(p, 2, axis=1), 2, axis=2))
    return np.concatenate(out)


def _crop_origin(rng: np.random.Generator, size: int, centre: tuple[float, float] | None, margin: int = 24) -> tuple[int, int]:
    """Top-left of a CROP window containing ``centre`` (y, x) at least ``margin`` px inside, or random."""
    hi = size - CROP
    if centre is None:
        return int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
    out = []
    for c in centre:
        lo_o, hi_o = int(np.ceil(c + margin - CROP)), int(np.floor(c - margin))
        out.append(int(np.clip(rng.integers(min(lo_o, hi_o), max(lo_o, hi_o) + 1), 0, hi)))
    return out[0], out[1]


def _lung_point(rng: np.random.Generator, lung: np.ndarray | None, size: int) -> tuple[float, float]:
    if lung is not None and lung.any():
        ys, xs = np.nonzero(lung[::4, ::4])
        k = int(rng.integers(len(ys)))
        return 4.0 * ys[k] + 2, 4.0 * xs[k] + 2
    return float(rng.uniform(0.3, 0.7) * size), float(rng.uniform(0.25, 0.75) * size)


def _synthetic_nodule(rng, image, lung, spacing):
    from training.synthesis.cxr_lesions import SynthesisError, insert_nodule_mass

    d = float(rng.uniform(5.0, 15.0) if rng.random() < 0.5 else rng.uniform(5.0, 30.0))
    try:
        ins = insert_nodule_mass(image, lung, spacing, rng, diameter_mm=d)
    except SynthesisError:
        return None
    return ins.image, ins.mask


def make_batch(rng: np.random.Generator, nih: GridSet, normals: GridSet, mix: tuple[int, int, int, int] = (5, 2, 3, 2),
               box_p: float = 0.1) -> dict[str, np.ndarray]:
    """One batch of CROP x CROP crops: (synthetic nodule, synthetic other kind, real non-nodule, normal).

    With probability ``box_p`` one real-negative slot holds a real nodule/mass image with a
    radiologist box instead.  Returns image (B,1,C,C), seg (B,1,C/4,C/4), seg_weight (B,),
    label (B,) and support (B,1,C/4,C/4) (lung cells of the crop).
    """
    from training.synthesis.cxr_lesions import SynthesisError, synthesize

    n_pos, n_other, n_real, n_norm = mix
    size = normals.images.shape[-1]
    g = CROP // NODULE_STRIDE
    lab = np.nan_to_num(nih.labels[:, NODULE], nan=-1.0)
    neg_idx = np.flatnonzero(lab == 0)
    box_idx = [i for i in np.flatnonzero(lab > 0) if any(c == NODULE for c, _ in nih.boxes[i])]
    imgs, segs, segw, labels, lungs = [], [], [], [], []

    def add(image, lung, mask, centre, label, weight):
        y0, x0 = _crop_origin(rng, size, centre)
        sl = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
        imgs.append(image[sl])
        segs.append(downsample_mask(mask[sl], g) if mask is not None else np.zeros((g, g), np.float32))
        segw.append(weight)
        labels.append(label)
        lungs.append(lung[sl] if lung is not None else np.ones((CROP, CROP), bool))

    while len(imgs) < n_pos:
        i = int(rng.integers(len(normals.images)))
        got = _synthetic_nodule(rng, normals.images[i], normals.lungs[i], float(normals.spacing[i]))
        if got is None:
            continue
        ys, xs = np.nonzero(got[1])
        add(got[0], normals.lungs[i], got[1], (ys.mean(), xs.mean()), 1.0, 1.0)
    for _ in range(n_other):
        i = int(rng.integers(len(normals.images)))
        kind = str(rng.choice(OTHER_KINDS))
        try:
            image, masks = synthesize(normals.images[i], normals.lungs[i], float(normals.spacing[i]), [kind], rng)
            ys, xs = np.nonzero(masks[kind])
            centre = (ys.mean(), xs.mean()) if rng.random() < 0.7 else _lung_point(rng, normals.lungs[i], size)
        except SynthesisError:
            image, centre = normals.images[i], None
        add(image, normals.lungs[i], None, centre, 0.0, 1.0)
    for _ in range(n_real):
        if box_idx and rng.random() < box_p:
            i = int(box_idx[rng.integers(len(box_idx))])
            x1, y1, x2, y2 = next(b for c, b in nih.boxes[i] if c == NODULE)
            add(nih.images[i], nih.lungs[i], None, ((y1 + y2) / 2, (x1 + x2) / 2), 1.0, 0.0)
        else:
            i = int(neg_idx[rng.integers(len(neg_idx))])
            add(nih.images[i], nih.lungs[i], None, _lung_point(rng, nih.lungs[i], size), 0.0, 1.0)
    for _ in range(n_norm):
        i = int(rng.integers(len(normals.images)))
        add(normals.images[i], normals.lungs[i], None, _lung_point(rng, normals.lungs[i], size), 0.0, 1.0)
    images, seg_arr, lung_arr = augment_batch(rng, np.stack(imgs).astype(np.float32), np.stack(segs)[:, None],
                                              np.stack(lungs)[:, None].astype(np.float32))
    support = np.stack([lung_support(m[0] >= 0.5, g) for m in lung_arr])
    return {"image": images[:, None], "seg": seg_arr.astype(np.float32),
            "seg_weight": np.asarray(segw, np.float32), "label": np.asarray(labels, np.float32),
            "support": support[:, None]}


def nodule_loss(seg_logits: torch.Tensor, b: dict[str, torch.Tensor], pos_weight: float = 10.0) -> torch.Tensor:
    """Weighted pixel BCE + soft Dice on positives + multiple-instance BCE on the supported maximum."""
    w = b["seg_weight"][:, None, None, None].expand_as(seg_logits)
    bce = (F.binary_cross_entropy_with_logits(seg_logits, b["seg"], reduction="none",
                                              pos_weight=torch.tensor(pos_weight)) * w).sum() / w.sum().clamp(min=1)
    prob = torch.sigmoid(seg_logits)
    pos = (b["seg"].amax(dim=(1, 2, 3)) > 0) & (b["seg_weight"] > 0)
    inter = (prob * b["seg"]).sum(dim=(1, 2, 3))
    dice = 1.0 - (2 * inter + 1.0) / (prob.sum(dim=(1, 2, 3)) + b["seg"].sum(dim=(1, 2, 3)) + 1.0)
    dice_loss = dice[pos].mean() if pos.any() else prob.sum() * 0.0
    masked = seg_logits.masked_fill(b["support"] < 0.5, -30.0)
    mil = F.binary_cross_entropy_with_logits(masked.amax(dim=(1, 2, 3)), b["label"])
    return 4.0 * bce + 0.5 * dice_loss + mil


def train_nodule(nih: GridSet, normals: GridSet, out: str | Path, init_from: str | Path | None = None,
                 budget_s: float = 2700.0, lr: float = 1e-3, mix: tuple[int, int, int, int] = (5, 2, 3, 2),
                 max_iters: int = 100000, bn_batches: int = 20, seed: int = 0) -> dict:
    """Fine-tune on the nodule batches within ``budget_s``; re-estimate BatchNorm on full 512 images.

    ``nih`` is the patient-level *training* split only. Saves ``out/model.pt``.
    """
    from training.ct.train import budget_loop
    from training.cxr.train_lesion import recalibrate_bn

    out = Path(out)
    net = CxrLesionNet()
    if init_from:
        net.load_state_dict(torch.load(init_from, map_location="cpu"))

    def step(rng: np.random.Generator) -> torch.Tensor:
        b = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in make_batch(rng, nih, normals, mix).items()}
        return nodule_loss(net.forward_seg(b["image"])[:, NODULE:NODULE + 1], b)

    info = {"init_from": str(init_from) if init_from else None, "mix": list(mix), "crop": CROP,
            "grid": NODULE_INPUT_SIZE, "real_n": len(nih.images), "normals_n": len(normals.images)}
    info = budget_loop(net, out, budget_s, step, info, lr=lr, seed=seed, max_iters=max_iters)
    if bn_batches:  # BatchNorm statistics of whole 512 images (what inference sees), not crops
        rng = np.random.default_rng(seed + 1)
        pool = np.concatenate([normals.images, nih.images])
        batches = (pool[rng.integers(0, len(pool), 8)][:, None] for _ in range(bn_batches))
        info["bn_recalibration_batches"] = recalibrate_bn(net, batches)
        torch.save(net.state_dict(), out / "model.pt")
        (out / "train_info.json").write_text(json.dumps(info, indent=2))
    return info


def training_sets(nih: GridSet, openist: GridSet) -> tuple[GridSet, GridSet]:
    """(NIH training split, training normals with lungs: OpenIST train + NIH train normals)."""
    from training.cxr.release import merge_backgrounds

    nih_tr = nih.split("train")
    return nih_tr, merge_backgrounds(openist.split("train"), nih_tr.subset(np.flatnonzero(nih_tr.abnormal == 0)))


def main() -> None:  # pragma: no cover - background job entry point
    import argparse

    from models.registry import Registry

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/cxr")
    ap.add_argument("--out", default="/tmp/cxr_nodule")
    ap.add_argument("--budget-s", type=float, default=2700.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--init-from", default="models/zoo/cxr-lesions/0.5.0/weights.pt")
    ap.add_argument("--cache", default=None, help="fine-grid cache (default OUT/fine_grids.pkl)")
    ap.add_argument("--grids-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    nih, openist = fine_grids(args.data, Registry().session("cxr-lung", threads=args.threads),
                              args.cache or out / "fine_grids.pkl")
    print(json.dumps({"grids_s": round(time.time() - t0, 1), "nih": len(nih.images), "openist": len(openist.images)}), flush=True)
    if args.grids_only:
        return
    nih_tr, normals = training_sets(nih, openist)
    info = train_nodule(nih_tr, normals, out, init_from=args.init_from, budget_s=args.budget_s, lr=args.lr)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
