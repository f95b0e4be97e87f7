"""Train the nodule false-positive-reduction classifier (CPU, wall-clock budget, checkpoints).

``python -m training.ct.train_fpr --out /tmp/ct_runs/fpr --budget-min 35``: balanced-ish
batches of inserted nodules (positives) and blob candidates of the training region
(negatives), see :mod:`training.ct.fpr_data`; BCE, AdamW, cosine decay over the budget.
Online hard-negative mining: each step scores twice the negatives it needs and keeps the
hardest half.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from training.ct.train import budget_loop, finish_run

logger = logging.getLogger(__name__)


def train_fpr(net: torch.nn.Module, sample, out: Path, budget_s: float, batch: int = 32, lr: float = 2e-3,
              seed: int = 0, max_iters: int = 100000, log_every: int = 25, p_pos: float = 0.4,
              hard_factor: int = 2, frozen_norm: bool = False) -> dict:
    """``sample(rng, label)`` returns one (patch, label) with label 1 or 0 as asked.
    ``frozen_norm``: batch norms keep their statistics (fine-tuning a network recovered from
    its ONNX export, :func:`training.ct.networks.fpr_cnn_from_onnx`)."""
    from training.ct.networks import freeze_batch_norm

    n_pos = max(1, int(round(batch * p_pos)))
    n_neg = batch - n_pos

    def step(rng: np.random.Generator) -> torch.Tensor:
        pos = [sample(rng, 1) for _ in range(n_pos)]
        neg = [sample(rng, 0) for _ in range(n_neg * hard_factor)]
        if hard_factor > 1:  # keep the negatives the network currently scores highest
            net.eval()
            with torch.no_grad():
                s = net(torch.from_numpy(np.stack([x for x, _ in neg]))[:, None])[:, 0].numpy()
            neg = [neg[i] for i in np.argsort(-s)[:n_neg]]
        net.train()
        if frozen_norm:
            freeze_batch_norm(net)
        xs, ys = zip(*(pos + neg))
        x = torch.from_numpy(np.stack(xs))[:, None]
        y = torch.from_numpy(np.stack(ys))
        return torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)

    return budget_loop(net, out, budget_s, step, {"batch": batch, "p_pos": p_pos, "hard_negative_factor": hard_factor,
                                                  "frozen_batch_norm": frozen_norm},
                       lr=lr, seed=seed, max_iters=max_iters, log_every=log_every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-min", type=float, default=35.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-iters", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--init", help="start from this state dict (fine-tuning)")
    ap.add_argument("--init-onnx", help="start from this exported classifier (a served model.onnx; batch norms "
                                        "folded, so they stay frozen)")
    ap.add_argument("--cut-sources", type=float, default=0.0,
                    help="share of samples drawn from the training region cut at axial planes, with the candidates "
                         "found at the cut faces as negatives (fpr_data.cut_sources)")
    ap.add_argument("--faces", type=float, default=0.0,
                    help="share of patches cut as if the scan ended near the candidate (fpr_data.face_mirror)")
    ap.add_argument("--small-share", type=float, default=0.0,
                    help="share of the nodules drawn from 4-8 mm instead of 4-30 mm (fpr_data.positive_diameter)")
    ap.add_argument("--hard-factor", type=int, default=2, help="negatives scored per negative kept (online mining)")
    ap.add_argument("--anatomy-aug", action="store_true",
                    help="random rotations/scales and synthetic vessel junctions (training.ct.fpr_data.fpr_sample)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    from training.ct.data import nodule_volumes
    from training.ct.fpr_data import cut_sources, fpr_sample, fpr_sources
    from training.ct.networks import fpr_cnn, fpr_cnn_from_onnx

    sources = fpr_sources(nodule_volumes()["train"])
    cuts = cut_sources(sources) if a.cut_sources > 0 else []

    def sample(rng, label):
        src = cuts if cuts and rng.random() < a.cut_sources else sources
        return fpr_sample(src, rng, p_pos=float(label), anatomy_aug=a.anatomy_aug, p_face=a.faces,
                          p_small=a.small_share)

    net = fpr_cnn_from_onnx(a.init_onnx) if a.init_onnx else fpr_cnn()
    if a.init:
        net.load_state_dict(torch.load(a.init, map_location="cpu"))
    info = train_fpr(net, sample, Path(a.out),
                     a.budget_min * 60, a.batch, lr=a.lr, seed=a.seed, max_iters=a.max_iters,
                     hard_factor=a.hard_factor, frozen_norm=bool(a.init_onnx))
    info["negative_candidates"] = {s.name: int(len(s.negatives)) for s in sources}
    info["anatomy_aug"] = a.anatomy_aug
    info["faces"] = a.faces
    info["cut_sources"] = a.cut_sources
    info["small_share"] = a.small_share
    if cuts:
        info["cut_source_negatives"] = {c.name: int(len(c.negatives)) for c in cuts}
    if a.init_onnx:
        info["init_onnx"] = a.init_onnx
    finish_run(Path(a.out), info, a.init or a.init_onnx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
