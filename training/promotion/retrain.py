"""Fine-tune the chest X-ray lesion model on a labeling-tool export (``medws-dataset``).

Glue between :func:`training.datasets.medws_export.load_medws_export` and the CXR
engineer's :func:`training.cxr.train_lesion.train_lesion`: the export's *train* split
is the real labelled data, its normals double as the normal pool; the *test* split is
never touched here (it is the locked set of the promotion gate).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def fine_tune_from_export(dataset: str | os.PathLike, out_dir: str | os.PathLike, init_from: str | None = None,
                          epochs: int = 1, steps_per_epoch: int = 50, batch: tuple[int, int, int] = (6, 2, 0),
                          budget_s: float = 2700.0, threads: int = 2, seed: int = 0) -> dict:
    """Train ``epochs`` epochs from ``init_from`` (a ``lesion.pt`` state dict) on the export's
    train split; writes ``out_dir/lesion.pt`` and returns the training summary."""
    import torch

    from training.cxr.data import grid_from_records
    from training.cxr.train_lesion import train_lesion
    from training.datasets.medws_export import load_medws_export

    torch.set_num_threads(threads)
    records = load_medws_export(dataset, split="train")
    if not records:
        raise ValueError(f"{dataset} has no train-split images")
    grid = grid_from_records(records)
    normal_idx = np.flatnonzero(grid.abnormal == 0)
    normals = grid.subset(normal_idx) if len(normal_idx) else grid.subset(np.arange(len(records)))
    if batch[2] and normals.lungs is None:
        logger.warning("export has no lung masks: synthetic lesions disabled")
        batch = (batch[0], batch[1], 0)
    summary = train_lesion(grid, normals, epochs=epochs, out_dir=out_dir, init_from=init_from, budget_s=budget_s,
                           steps_per_epoch=steps_per_epoch, batch=batch, seed=seed, device="cpu")
    summary["dataset"] = str(Path(dataset))
    return summary
