"""Training loop with a wall-clock budget and checkpoints (CPU; ``torch.set_num_threads``).

``python -m training.ct.train nodules --budget-min 30 --out /tmp/ct_nodule`` trains the
nodule network; ``liver`` trains the multi-phase liver-lesion network.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.ct.export import write_lineage

logger = logging.getLogger(__name__)


def dice_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 3.0) -> torch.Tensor:
    """Soft Dice (per batch) + weighted BCE on sigmoid logits (channel-wise)."""
    p = torch.sigmoid(logits)
    dims = (0, 2, 3, 4)
    inter = (p * target).sum(dims)
    dice = 1 - (2 * inter + 1) / (p.sum(dims) + target.sum(dims) + 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, pos_weight=torch.full((logits.shape[1], 1, 1, 1), pos_weight))
    return dice.mean() + bce


def budget_loop(net: torch.nn.Module, out: Path, budget_s: float, step: Callable[[np.random.Generator], torch.Tensor],
                info: dict, lr: float = 2e-3, seed: int = 0, max_iters: int = 100000, log_every: int = 25) -> dict:
    """AdamW with cosine decay over the wall-clock budget until the budget or ``max_iters``;
    ``step(rng)`` draws one batch and returns its loss.  Saves ``out/model.pt`` and
    ``history.json`` every ``log_every`` steps and writes ``train_info.json`` (``info``
    plus the run's counts) at the end."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.time()
    hist: list[dict] = []
    it = 0
    run = 0.0
    net.train()
    while it < max_iters and time.time() - t0 < budget_s:
        frac = (time.time() - t0) / budget_s
        for g in opt.param_groups:  # cosine decay over the wall-clock budget
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        loss = step(rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run = 0.95 * run + 0.05 * loss.item() if it else loss.item()
        it += 1
        if it % log_every == 0:
            hist.append({"iter": it, "loss": round(run, 4), "elapsed_s": round(time.time() - t0, 1)})
            logger.info("iter %d loss %.4f (%.0f s)", it, run, time.time() - t0)
            torch.save(net.state_dict(), out / "model.pt")
            (out / "history.json").write_text(json.dumps(hist))
    torch.save(net.state_dict(), out / "model.pt")
    info = {"iterations": it, **info, "wall_s": round(time.time() - t0, 1), "final_loss": round(run, 4),
            "budget_s": budget_s, "lr": lr, "seed": seed}
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    (out / "history.json").write_text(json.dumps(hist))
    return info


def train(net: torch.nn.Module, sample: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
          out: Path, budget_s: float, batch: int = 4, lr: float = 2e-3, seed: int = 0,
          max_iters: int = 100000, log_every: int = 25, pos_weight: float = 3.0) -> dict:
    """Segmentation training (Dice + BCE) of ``sample(rng)`` patches in :func:`budget_loop`."""

    def step(rng: np.random.Generator) -> torch.Tensor:
        xs, ys = zip(*(sample(rng) for _ in range(batch)))
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        if x.ndim == 4:
            x = x[:, None]
        if y.ndim == 4:
            y = y[:, None]
        return dice_bce(net(x), y, pos_weight)

    return budget_loop(net, out, budget_s, step, {"batch": batch, "pos_weight": pos_weight}, lr=lr, seed=seed,
                       max_iters=max_iters, log_every=log_every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=["nodules", "liver"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-iters", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="start from this state dict (fine-tuning)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pos-weight", type=float, default=3.0)
    ap.add_argument("--lesion-frac", type=float, default=0.45, help="liver: share of lesion-centred patches")
    ap.add_argument("--phase-dropout", type=float, default=0.0, help="liver: share of portal-venous-only patches")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    from training.ct.networks import small_unet

    if a.task == "nodules":
        from training.ct.data import nodule_patch, nodule_volumes

        lv = nodule_volumes()["train"]
        net = small_unet(1, 1)
        if a.init:
            net.load_state_dict(torch.load(a.init, map_location="cpu"))
        info = train(net, lambda rng: nodule_patch(lv, rng), Path(a.out), a.budget_min * 60, a.batch,
                     lr=a.lr, seed=a.seed, max_iters=a.max_iters, pos_weight=a.pos_weight)
    else:
        from training.ct.liver_data import liver_patch, liver_train_volume

        lv = liver_train_volume()
        net = small_unet(3, 2)
        if a.init:
            net.load_state_dict(torch.load(a.init, map_location="cpu"))
        info = train(net, lambda rng: liver_patch(lv, rng, lesion_frac=a.lesion_frac, phase_dropout=a.phase_dropout),
                     Path(a.out), a.budget_min * 60, a.batch,
                     lr=a.lr, seed=a.seed, max_iters=a.max_iters, pos_weight=a.pos_weight)
        info.update(lesion_frac=a.lesion_frac, phase_dropout=a.phase_dropout)
    finish_run(Path(a.out), info, a.init)
    return 0


def finish_run(out: Path, info: dict, init: str | None) -> None:
    """End of a training CLI: the final ``train_info.json`` (``info`` with any additions),
    the lineage of a fine-tuning run, and ``info`` printed as one JSON line."""
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    if init:
        write_lineage(out, Path(init))
    print(json.dumps(info))


if __name__ == "__main__":
    raise SystemExit(main())
