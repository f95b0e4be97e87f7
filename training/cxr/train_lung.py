"""Train the lung-field U-Net (MONAI) on real lung masks with a wall-clock budget.

``train_lung(data, epochs, out_dir, budget_s=...)`` -- callable as a function; the best
checkpoint by held-out (patient-level) Dice is written to ``out_dir/lung.pt`` as it goes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from training.cxr.data import GridSet, augment_batch
from training.cxr.nets import lung_unet

logger = logging.getLogger(__name__)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    inter = np.logical_and(pred, truth).sum()
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2.0 * inter / denom)


def predict_lungs(net: torch.nn.Module, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """Return lung probabilities (N,S,S) on the model grid."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch, None])
            out.append(torch.sigmoid(net(x))[:, 0].numpy())
    return np.concatenate(out)


def train_lung(
    train: GridSet,
    test: GridSet,
    epochs: int,
    out_dir: str | Path,
    budget_s: float = 1200.0,
    init_from: str | Path | None = None,
    batch: int = 8,
    device: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    lr: float = 3e-3,
) -> dict:
    """Train; keep the checkpoint with the best held-out Dice. Returns the training summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = lung_unet().to(dev)
    if init_from:
        net.load_state_dict(torch.load(init_from, map_location=dev))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = DiceCELoss(sigmoid=True)
    t0 = time.time()
    best, step, history = -1.0, 0, []
    n = len(train.images)
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(n)
        losses = []
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            idx = order[i : i + batch]
            x, y = augment_batch(rng, train.images[idx], train.lungs[idx].astype(np.float32))
            xt = torch.from_numpy(np.ascontiguousarray(x[:, None])).to(dev)
            yt = torch.from_numpy(np.ascontiguousarray(y[:, None])).to(dev)
            loss = loss_fn(net(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if max_steps and step >= max_steps:
                break
        probs = predict_lungs(net.cpu(), test.images) if len(test.images) else np.zeros((0,))
        net.to(dev)
        d = float(np.mean([dice(p >= 0.5, t) for p, t in zip(probs, test.lungs)])) if len(test.images) else 0.0
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "test_dice": d, "elapsed_s": time.time() - t0})
        logger.info("lung epoch %d loss %.4f held-out dice %.4f (%.0fs)", epoch, np.mean(losses), d, time.time() - t0)
        print(json.dumps(history[-1]), flush=True)
        if d > best:
            best = d
            torch.save(net.state_dict(), out / "lung.pt")
        if time.time() - t0 > budget_s or (max_steps and step >= max_steps):
            break
    summary = {"best_test_dice": best, "epochs_run": len(history), "history": history, "train_n": n, "test_n": len(test.images)}
    (out / "lung_train.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:  # pragma: no cover - background job entry point
    import argparse

    from training.cxr.data import grid_from_pairs, openist_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/cxr")
    ap.add_argument("--out", default="/tmp/cxr_train")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=1080.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init-from", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    grid = grid_from_pairs(openist_pairs(Path(args.data) / "normal-openist"))
    print(json.dumps(train_lung(grid.split("train"), grid.split("test"), args.epochs, args.out, args.budget_s,
                                init_from=args.init_from, lr=args.lr)["best_test_dice"]))


if __name__ == "__main__":
    main()
