"""Train a wavelet residual denoiser on simulated low-dose patches (time-budgeted, CPU).

``python -m training.denoise.train --variant light --minutes 15 --data DIR --out DIR``

Budget: the run stops after ``--minutes`` of wall clock (learning rate follows a cosine
schedule over that budget); a checkpoint is written at every validation and the best
validation checkpoint is kept as ``<variant>_best.pt``.  Uses ``--threads`` torch
threads (default 1: the build machine is shared).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from training.denoise.data import PairSet, PatchSampler
from training.denoise.networks import VARIANTS, WaveletResNet

logger = logging.getLogger(__name__)


def psnr(a: np.ndarray, b: np.ndarray, lo: float = -160.0, hi: float = 240.0) -> float:
    """PSNR [dB] in the HU window ``[lo, hi]`` (both images clipped to it)."""
    a = np.clip(a, lo, hi)
    b = np.clip(b, lo, hi)
    mse = float(np.mean((a - b) ** 2))
    return float(10 * np.log10((hi - lo) ** 2 / max(mse, 1e-12)))


@torch.no_grad()
def validate(model: WaveletResNet, val: PairSet, crop: int = 192) -> dict[str, float]:
    """Mean PSNR (soft-tissue window) of input and output on central crops, per dose."""
    model.eval()
    out: dict[str, list[float]] = {}
    h, w = val.clean.shape[1:]
    crop = min(crop, h, w) // 2 * 2
    sl = np.s_[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
    for k in range(len(val.clean)):
        x = val.noisy[k][sl]
        n = model(torch.from_numpy(x[None, None] / 1000.0).float()).numpy()[0, 0] * 1000.0
        d = f"{val.dose[k]:.2f}"
        out.setdefault(f"psnr_in_{d}", []).append(psnr(x, val.clean[k][sl]))
        out.setdefault(f"psnr_out_{d}", []).append(psnr(x - n, val.clean[k][sl]))
    model.train()
    return {k: float(np.mean(v)) for k, v in out.items()}


def save_checkpoint(path: Path, model: WaveletResNet, variant: str, step: int, history: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"variant": variant, "config": model.cfg.to_dict(), "state_dict": model.state_dict(),
                "step": step, "history": history}, tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--data", type=Path, required=True, help="folder with train.npz and val.npz (prepare.py)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-every", type=float, default=120.0, help="seconds between validations")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", type=Path, default=None, help="checkpoint to start from (fine-tuning)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    train = PairSet.load(args.data / "train.npz")
    val = PairSet.load(args.data / "val.npz")
    sampler = PatchSampler(train, args.patch, seed=args.seed)
    model = WaveletResNet(VARIANTS[args.variant])
    prior_history: list[dict] = []
    start_step = 0
    if args.resume is not None:
        ck = torch.load(args.resume, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["state_dict"])
        prior_history = list(ck.get("history", []))
        start_step = int(ck.get("step", 0))
        logger.info("resumed from %s (step %s)", args.resume, ck.get("step"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    budget = args.minutes * 60.0
    t0 = time.time()
    last_val = t0
    history: list[dict] = prior_history
    best = -math.inf
    step = start_step
    ema = None
    logger.info("variant %s: %d trainable parameters, budget %.1f min", args.variant, sum(p.numel() for p in params), args.minutes)
    while True:
        elapsed = time.time() - t0
        done = elapsed >= budget or step - start_step >= args.max_steps
        if done or time.time() - last_val >= args.val_every:
            v = validate(model, val)
            v.update(step=step, minutes=elapsed / 60.0, train_loss=ema)
            history.append(v)
            logger.info("val %s", json.dumps(v))
            save_checkpoint(args.out / f"{args.variant}.pt", model, args.variant, step, history)
            score = float(np.mean([v[k] for k in v if k.startswith("psnr_out")]))
            if score > best:
                best = score
                save_checkpoint(args.out / f"{args.variant}_best.pt", model, args.variant, step, history)
            last_val = time.time()
        if done:
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
        x, n = sampler.batch(args.batch)
        pred = model(torch.from_numpy(x))
        loss = torch.mean((pred - torch.from_numpy(n)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        lv = loss.item() * 1e6  # HU^2
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 100 == 0:
            logger.info("step %d loss(HU^2) %.1f", step, ema)
    (args.out / f"{args.variant}_history.json").write_text(json.dumps(history, indent=1))
    logger.info("done: %d steps, best val PSNR %.2f dB", step, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
