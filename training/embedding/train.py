"""Train ``cxr-embed`` (supervised contrastive + auxiliary multi-label BCE) on CPU within a
wall-clock budget; a checkpoint is written after every epoch.

Usage::

    python -m training.embedding.train --out /tmp/medws-embed --budget-min 25 --threads 2
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.embedding.data import EmbedSet, cached, load_nih, load_synthetic
from training.embedding.nets import EmbedNet, supcon_loss

logger = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cxr"


def training_sets(cache: Path, data: Path = DATA) -> tuple[EmbedSet, EmbedSet]:
    nih = cached(cache / "nih_train.npz", lambda: load_nih(data / "nih", "train"))
    syn = cached(cache / "syn_train.npz", lambda: load_synthetic(data / "normal-openist", "train", seed=1))
    return nih, syn


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse label frequency (rare findings drawn as often as common ones)."""
    freq = labels.sum(0) + 1.0
    w = (labels / freq).sum(1)
    return w / w.sum()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random shift (+-8 px) and contrast/gamma jitter; padding stays 0."""
    n = x.shape[0]
    dx, dy = (torch.randint(-8, 9, (2,), generator=gen)).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gamma = torch.exp(torch.randn(n, 1, 1, 1, generator=gen) * 0.15)
    gain = 1.0 + torch.randn(n, 1, 1, 1, generator=gen) * 0.08
    return (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)


def train(out: Path, budget_min: float, threads: int = 2, batch: int = 48, seed: int = 0,
          max_epochs: int = 200, steps_per_epoch: int = 30) -> Path:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    nih, syn = training_sets(out / "cache")
    images = np.concatenate([nih.images, syn.images])
    labels = np.concatenate([nih.labels, syn.labels])
    logger.info("training on %d NIH + %d synthetic images (data ready in %.0f s)", len(nih), len(syn),
                time.monotonic() - t_start)
    p = sample_weights(labels)
    model = EmbedNet()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    ckpt = out / "ckpt.pt"
    history = []
    deadline = t_start + budget_min * 60
    for epoch in range(max_epochs):
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            idx = rng.choice(len(images), size=batch, replace=False, p=p)
            x = augment(torch.from_numpy(images[idx].astype(np.float32))[:, None], gen)
            y = torch.from_numpy(labels[idx])
            z, logits = model.forward_train(x)
            loss = supcon_loss(z, y) + F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "elapsed_s": round(time.monotonic() - t_start)})
        torch.save({"state_dict": model.state_dict(), "history": history, "batch": batch, "seed": seed,
                    "steps_per_epoch": steps_per_epoch, "threads": threads}, ckpt)
        logger.info("epoch %d loss %.4f (%.0f s)", epoch, history[-1]["loss"], history[-1]["elapsed_s"])
        if time.monotonic() > deadline:
            logger.info("budget of %.0f min reached", budget_min)
            break
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return ckpt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/medws-embed"))
    ap.add_argument("--budget-min", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps-per-epoch", type=int, default=30)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(a.out, a.budget_min, a.threads, steps_per_epoch=a.steps_per_epoch)


if __name__ == "__main__":
    main()
