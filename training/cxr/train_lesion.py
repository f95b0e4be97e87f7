"""Train the chest lesion network (MONAI blocks) on real NIH images, real normals and
synthetic lesions inserted into real normals, with a wall-clock budget and checkpoints.

``train_lesion(real, normals, epochs, out_dir, init_from=None, ...)`` is the callable entry
point (``real`` and ``normals`` are :class:`training.cxr.data.GridSet`; build them from
``CxrRecord`` lists with :func:`training.cxr.data.grid_from_records`). ``normals`` need lung
masks: synthetic lesions are placed inside them.

Losses: image-level BCE for the five classes and the abnormality score; per-class
segmentation BCE (+ soft Dice on positives) at stride 4, with exact masks for synthetic
lesions, radiologist boxes as weak masks for real images, and no segmentation loss for a
class that is positive on a real image without a box.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from models.cxr.preprocess import CLASSES
from training.cxr.data import GridSet, augment_batch, box_masks, downsample_mask, synthetic_sample
from training.cxr.nets import CxrLesionNet

logger = logging.getLogger(__name__)

SEG_STRIDE = 4


def _real_targets(grid: GridSet, i: int, size: int, seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Weak segmentation target and per-class weights for a real image."""
    target = box_masks(grid.boxes[i], size, seg) if grid.boxes else np.zeros((len(CLASSES), seg, seg), np.float32)
    has_box = target.reshape(len(CLASSES), -1).max(axis=1) > 0
    labels = grid.labels[i] if grid.labels is not None else np.zeros(len(CLASSES), np.float32)
    weight = np.ones(len(CLASSES), dtype=np.float32)
    weight[(labels > 0) & ~has_box] = 0.0  # positive without localisation: image loss only
    return target, weight


def real_sampling_p(real: GridSet, class_boost: dict[str, float] | None) -> np.ndarray | None:
    """Sampling probabilities of the real images: positives of ``class_boost`` classes drawn that many times as often."""
    if not class_boost or real.labels is None or not len(real.images):
        return None
    w = np.ones(len(real.images), dtype=np.float64)
    for cls, factor in class_boost.items():
        pos = np.nan_to_num(real.labels[:, CLASSES.index(cls)]) > 0
        w[pos] = np.maximum(w[pos], float(factor))
    return w / w.sum()


def make_batch(
    rng: np.random.Generator, real: GridSet, normals: GridSet, n_real: int, n_normal: int, n_synth: int,
    kind_p: list[float] | None = None, real_p: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Assemble one mixed batch (images, class labels, abnormality, seg targets and weights).

    ``kind_p`` weights the synthetic lesion kinds; ``real_p`` (see :func:`real_sampling_p`)
    the real images (uniform when None).
    """
    size = real.images.shape[-1] if len(real.images) else normals.images.shape[-1]
    seg = size // SEG_STRIDE
    imgs, labs, abn, segs, segw = [], [], [], [], []
    real_idx = rng.choice(len(real.images), n_real, p=real_p) if len(real.images) else []
    for i in real_idx:
        t, w = _real_targets(real, int(i), size, seg)
        imgs.append(real.images[i])
        labs.append(real.labels[i])
        abn.append(real.abnormal[i])
        segs.append(t)
        segw.append(w)
    for i in rng.integers(0, len(normals.images), n_normal + n_synth):
        if len(imgs) < n_real + n_normal:
            img, masks = normals.images[i], np.zeros((len(CLASSES), size, size), bool)
        else:
            kinds = list(rng.choice(CLASSES, size=1 if rng.random() < 0.7 else 2, replace=False, p=kind_p))
            img, masks = synthetic_sample(normals.images[i], normals.lungs[i], float(normals.spacing[i]), rng, kinds)
        present = masks.any(axis=(1, 2)).astype(np.float32)
        imgs.append(img)
        labs.append(present)
        abn.append(float(present.any()))
        segs.append(np.stack([downsample_mask(m, seg) for m in masks]))
        segw.append(np.ones(len(CLASSES), dtype=np.float32))
    images, segs_arr = augment_batch(rng, np.stack(imgs).astype(np.float32), np.stack(segs))
    return {
        "image": images[:, None],
        "labels": np.stack(labs).astype(np.float32),
        "abnormal": np.asarray(abn, dtype=np.float32)[:, None],
        "seg": segs_arr.astype(np.float32),
        "seg_weight": np.stack(segw).astype(np.float32),
    }


def lesion_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], pos_weight: torch.Tensor,
                seg_pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Image BCE (classes + abnormality) + weighted segmentation BCE + soft Dice on positives.

    ``seg_pos_weight`` (5,) up-weights lesion pixels per class: a 5--30 mm nodule covers
    ~1--25 of the 64x64 stride-4 cells, so without it the pixel BCE is dominated by
    background and the nodule map collapses to "never" (what 0.1.0--0.4.0 did).
    """
    cls = F.binary_cross_entropy_with_logits(out["scores"], batch["labels"], pos_weight=pos_weight)
    abn = F.binary_cross_entropy_with_logits(out["abnormality"], batch["abnormal"])
    w = batch["seg_weight"][:, :, None, None].expand_as(out["seg"])
    spw = None if seg_pos_weight is None else seg_pos_weight[:, None, None]
    seg_bce = (F.binary_cross_entropy_with_logits(out["seg"], batch["seg"], reduction="none", pos_weight=spw) * w).sum() / w.sum().clamp(min=1)
    prob = torch.sigmoid(out["seg"])
    pos = (batch["seg"].amax(dim=(2, 3)) > 0) & (batch["seg_weight"] > 0)
    inter = (prob * batch["seg"]).sum(dim=(2, 3))
    denom = prob.sum(dim=(2, 3)) + batch["seg"].sum(dim=(2, 3))
    dice = 1.0 - (2 * inter + 1.0) / (denom + 1.0)
    dice_loss = dice[pos].mean() if pos.any() else prob.sum() * 0.0
    return cls + abn + 4.0 * seg_bce + 0.5 * dice_loss


def lr_at(lr: float, progress: float, warmup: float = 0.05) -> float:
    """Linear warm-up then cosine decay over ``progress`` in [0, 1] (steps or wall-clock, whichever is further)."""
    if progress < warmup:
        return lr * (0.1 + 0.9 * progress / warmup)
    t = min((progress - warmup) / (1.0 - warmup), 1.0)
    return lr * (0.02 + 0.98 * 0.5 * (1.0 + np.cos(np.pi * t)))


def train_lesion(
    real: GridSet,
    normals: GridSet,
    epochs: int,
    out_dir: str | Path,
    init_from: str | Path | None = None,
    budget_s: float = 2700.0,
    steps_per_epoch: int = 50,
    batch: tuple[int, int, int] = (6, 2, 8),
    lr: float = 2e-3,
    device: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    kind_p: list[float] | None = None,
    seg_pos_weight: list[float] | None = None,
    class_boost: dict[str, float] | None = None,
    revive_seg: list[str] | None = None,
    bn_batches: int = 0,
) -> dict:
    """Train; checkpoint ``out_dir/lesion.pt`` after every epoch. Returns the training summary.

    ``seg_pos_weight``: per-class weight of lesion pixels in the segmentation BCE;
    ``class_boost``: oversampling factor of real positives per class (e.g. pleural effusion);
    ``revive_seg``: classes whose segmentation logits are shifted up to a mean of -4 on the
    first batch after loading (a collapsed map has vanishing sigmoid/Dice gradients);
    ``bn_batches``: re-estimate the BatchNorm statistics over that many training batches
    before the final checkpoint (:func:`recalibrate_bn`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = CxrLesionNet().to(dev)
    if init_from:
        net.load_state_dict(torch.load(init_from, map_location=dev))
    real_p = real_sampling_p(real, class_boost)
    spw = torch.tensor(seg_pos_weight, dtype=torch.float32, device=dev) if seg_pos_weight else None
    if revive_seg:
        revive_seg_bias(net, make_batch(rng, real, normals, *batch, kind_p=kind_p, real_p=real_p)["image"], revive_seg, dev)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    pos_weight = torch.tensor([2.0, 1.0, 2.0, 1.5, 2.0], device=dev)
    t0 = time.time()
    history, step = [], 0
    for epoch in range(epochs):
        net.train()
        losses = []
        for _ in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = lr_at(lr, max(step / max(total, 1), (time.time() - t0) / budget_s))
            b = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in make_batch(rng, real, normals, *batch, kind_p=kind_p, real_p=real_p).items()}
            loss = lesion_loss(net.forward_logits(b["image"]), b, pos_weight, spw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if step >= total or time.time() - t0 > budget_s:
                break
        torch.save(net.state_dict(), out / "lesion.pt")
        history.append({"epoch": epoch, "step": step, "loss": float(np.mean(losses)), "elapsed_s": round(time.time() - t0, 1)})
        logger.info("lesion epoch %d step %d loss %.4f (%.0fs)", epoch, step, np.mean(losses), time.time() - t0)
        print(json.dumps(history[-1]), flush=True)
        if step >= total or time.time() - t0 > budget_s:
            break
    if bn_batches:
        recalibrate_bn(net, (make_batch(rng, real, normals, *batch, kind_p=kind_p, real_p=real_p)["image"]
                             for _ in range(bn_batches)), dev)
        torch.save(net.state_dict(), out / "lesion.pt")
    summary = {"init_from": str(init_from) if init_from else None, "bn_recalibration_batches": bn_batches, "lr": lr, "kind_p": kind_p, "seg_pos_weight": seg_pos_weight,
               "class_boost": class_boost, "revive_seg": revive_seg, "budget_s": budget_s, "steps": step, "epochs_run": len(history), "history": history, "batch": list(batch),
               "real_n": len(real.images), "normals_n": len(normals.images), "wall_s": round(time.time() - t0, 1)}
    (out / "lesion_train.json").write_text(json.dumps(summary, indent=1))
    return summary


def recalibrate_bn(net: torch.nn.Module, batches, dev: torch.device | str = "cpu") -> int:
    """Re-estimate every BatchNorm's running mean/variance as the plain average over ``batches``.

    The exponential running averages (momentum 0.1) lag behind weights that still move at
    a high learning rate; evaluation then normalises with stale statistics (a mid-run 0.5.0
    checkpoint scored far lower on the synthetic held-out set before this than after).
    Returns the number of batches used.
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = net.training
    net.train()
    n = 0
    with torch.no_grad():
        for images in batches:
            net(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(dev))
            n += 1
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.train(was_training)
    logger.info("BatchNorm statistics re-estimated over %d batches", n)
    return n


def revive_seg_bias(net: CxrLesionNet, images: np.ndarray, classes: list[str], dev: torch.device,
                    target: float = -4.0) -> dict[str, float]:
    """Shift the seg-head bias of ``classes`` so their mean logit on ``images`` is ``target``; returns the shifts."""
    net.eval()
    with torch.no_grad():
        seg = net.forward_logits(torch.from_numpy(np.ascontiguousarray(images)).to(dev))["seg"]
        shifts = {}
        for cls in classes:
            c = CLASSES.index(cls)
            mean = float(seg[:, c].mean())
            if mean < target:
                net.seg_head.bias[c] += target - mean
                shifts[cls] = target - mean
    net.train()
    logger.info("seg bias shifts %s", shifts)
    return shifts


def load_training_grids(data: str | Path, cache: str | Path | None = None) -> tuple[GridSet, GridSet, GridSet]:
    """(NIH train, NIH held-out, OpenIST normals with lungs) on the model grid, cached as .npz."""
    import pickle

    from training.cxr.data import grid_from_pairs, grid_from_records, nih_records, openist_pairs

    data = Path(data)
    if cache and Path(cache).exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    nih = grid_from_records(nih_records(data / "nih"))
    openist = grid_from_pairs(openist_pairs(data / "normal-openist"))
    grids = (nih.split("train"), nih.split("test"), openist)
    if cache:
        with open(cache, "wb") as f:
            pickle.dump(grids, f)
    return grids


def add_predicted_lungs(grid: GridSet, lung_ckpt: str | Path) -> GridSet:
    """Attach lung masks predicted by the trained lung U-Net (for synthetic insertion)."""
    from training.cxr.nets import lung_unet
    from training.cxr.train_lung import predict_lungs

    net = lung_unet()
    net.load_state_dict(torch.load(lung_ckpt, map_location="cpu"))
    grid.lungs = predict_lungs(net, grid.images) >= 0.5
    return grid


def main() -> None:  # pragma: no cover - background job entry point
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/cxr")
    ap.add_argument("--out", default="/tmp/cxr_train")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--steps-per-epoch", type=int, default=25)
    ap.add_argument("--budget-s", type=float, default=2700.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-lung", action="store_true", help="wait for out/lung_train.json first")
    ap.add_argument("--init-from", default=None, help="lesion checkpoint to continue from")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kind-p", type=float, nargs=5, default=None, help="sampling weights of the synthetic kinds")
    ap.add_argument("--seg-pos-weight", type=float, nargs=5, default=None, help="per-class weight of lesion pixels in the seg BCE")
    ap.add_argument("--boost", nargs="*", default=[], help="CLASS=FACTOR oversampling of real positives")
    ap.add_argument("--revive-seg", nargs="*", default=None, help="classes whose collapsed seg logits are shifted to -4")
    ap.add_argument("--bn-batches", type=int, default=30, help="BatchNorm re-estimation batches before the final checkpoint")
    ap.add_argument("--recalibrate", action="store_true",
                    help="only re-estimate the BatchNorm statistics of OUT/lesion.pt (--bn-batches batches of the "
                         "run's mix, read from OUT/lesion_train.json) and record it there")
    ap.add_argument("--cache", default=None, help="grid cache (default OUT/grids.pkl)")
    ap.add_argument("--lung", default=None, help="lung checkpoint (default OUT/lung.pt)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, _test, openist = load_training_grids(args.data, args.cache or out / "grids.pkl")
    lung_ckpt = Path(args.lung) if args.lung else out / "lung.pt"
    while args.wait_lung and not (out / "lung_train.json").exists():
        time.sleep(10)
    normals = openist.split("train")
    nih_normals = train.subset(np.nonzero(train.abnormal == 0)[0])
    if lung_ckpt.exists():
        nih_normals = add_predicted_lungs(nih_normals, lung_ckpt)
        keep = [i for i in range(len(nih_normals.images)) if nih_normals.lungs[i].sum() > 0.1 * nih_normals.lungs[i].size]
        nih_normals = nih_normals.subset(np.array(keep))
        backgrounds = GridSet(
            images=np.concatenate([normals.images, nih_normals.images]),
            ids=normals.ids + nih_normals.ids, patients=normals.patients + nih_normals.patients,
            lungs=np.concatenate([normals.lungs, nih_normals.lungs]),
            spacing=np.concatenate([normals.spacing, nih_normals.spacing]),
        )
    else:
        backgrounds = normals
    print(json.dumps({"real_train": len(train.images), "backgrounds": len(backgrounds.images)}), flush=True)
    if args.recalibrate:
        log = json.loads((out / "lesion_train.json").read_text())
        net = CxrLesionNet()
        net.load_state_dict(torch.load(out / "lesion.pt", map_location="cpu"))
        rng = np.random.default_rng(12345)
        real_p = real_sampling_p(train, log.get("class_boost"))
        n = recalibrate_bn(net, (make_batch(rng, train, backgrounds, *log["batch"], kind_p=log.get("kind_p"), real_p=real_p)["image"]
                                 for _ in range(args.bn_batches)))
        torch.save(net.state_dict(), out / "lesion.pt")
        log["bn_recalibration_batches"] = n
        (out / "lesion_train.json").write_text(json.dumps(log, indent=1))
        print(json.dumps({"bn_recalibration_batches": n}))
        return
    summary = train_lesion(train, backgrounds, args.epochs, out, budget_s=args.budget_s,
                           steps_per_epoch=args.steps_per_epoch, init_from=args.init_from, lr=args.lr,
                           kind_p=list(np.asarray(args.kind_p) / np.sum(args.kind_p)) if args.kind_p else None,
                           seg_pos_weight=args.seg_pos_weight, revive_seg=args.revive_seg, bn_batches=args.bn_batches,
                           class_boost={k: float(v) for k, v in (b.split("=") for b in args.boost)} or None)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":
    main()
