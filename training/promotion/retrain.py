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


def _next_patch(version: str) -> str:
    """``0.4.0`` -> ``0.4.1`` (pre-release and build parts dropped)."""
    core = version.split("+")[0].split("-")[0]
    major, minor, patch = (int(p) for p in core.split("."))
    return f"{major}.{minor}.{patch + 1}"


def resolve_current(spec: str, dirs: list[str] | None = None) -> tuple[str, str, Path]:
    """``NAME`` (active version) or ``NAME@VERSION`` -> (name, version, its ``weights.pt``).

    Raises
    ------
    models.errors.ModelError
        When the model is not installed or ships no ``weights.pt`` to fine-tune from.
    """
    from models.errors import ModelError
    from models.registry import Registry

    name, _, version = spec.partition("@")
    entry = Registry(dirs).get(name, version or None)
    weights = entry.directory / "weights.pt"
    if not weights.is_file():
        raise ModelError(f"{name}@{entry.card.version} has no weights.pt in {entry.directory}; cannot fine-tune it")
    return name, entry.card.version, weights


def candidate_from_export(dataset: str | os.PathLike, out_dir: str | os.PathLike, current: str,
                          version: str | None = None, zoo: str | os.PathLike | None = None,
                          dirs: list[str] | None = None, **train_kw) -> Path:
    """Fine-tune the ``current`` lesion model (``NAME`` or ``NAME@VERSION``) on the export's train
    split and install the result as a candidate version ``zoo/<name>/<version>/`` (parity-checked
    ``model.onnx``, ``card.json``, ``weights.pt``; default zoo ``out_dir/zoo``, default version the
    current one with the patch number + 1).  The active pointer is not touched: ``medws models
    promote NAME@VERSION --locked-set DATASET`` decides.  Returns the version folder."""
    import json

    from models.card import ModelCard
    from training.cxr.data import grid_from_records
    from training.cxr.export import export_lesion
    from training.datasets.medws_export import load_medws_export, read_manifest

    name, cur_version, weights = resolve_current(current, dirs)
    if name != "cxr-lesions":
        raise ValueError(f"--from {current}: only cxr-lesions can be fine-tuned on a labeling export")
    version = version or _next_patch(cur_version)
    out = Path(out_dir)
    summary = fine_tune_from_export(dataset, out, init_from=str(weights), **train_kw)
    manifest = read_manifest(dataset)
    records = load_medws_export(dataset, split="train", verify=False)
    parity_imgs = grid_from_records(records[:4]).images[:, None]
    training_data = (f"Fine-tuned from {name}@{cur_version} on the train split of medws-dataset "
                     f"{manifest['dataset_version']} (content sha256 {manifest['content_sha256'][:16]}…): "
                     f"{summary.get('real_n', len(records))} labelled, de-identified images; "
                     f"that export's test split is the locked set of the promotion gate.")
    zoo = Path(zoo) if zoo else out / "zoo"
    vdir = export_lesion(out / "lesion.pt", zoo, version, parity_imgs, training_data)
    card = ModelCard.load(vdir / "card.json")
    card.extra["fine_tuned_from"] = f"{name}@{cur_version}"
    card.extra["training_dataset"] = {"dataset_version": manifest["dataset_version"],
                                      "content_sha256": manifest["content_sha256"], "path": str(Path(dataset))}
    card.extra["training_runs"] = [{k: v for k, v in summary.items() if k != "history"}]
    card.save(vdir / "card.json")
    (out / "fine_tune.json").write_text(json.dumps(summary, indent=1, default=str))
    _pin_served(name, zoo, dirs, version)
    return vdir


def _pin_served(name: str, zoo: Path, dirs: list[str] | None, candidate: str) -> None:
    """Keep serving what is served now once ``zoo`` joins the registry path: without an
    ``active.json`` the highest version wins, which would put the candidate in service
    before the gate.  Writes ``zoo/<name>/active.json`` unless one is there."""
    from models.registry import ACTIVE_FILE, Registry, default_dirs

    if (zoo / name / ACTIVE_FILE).is_file():
        return
    base = [Path(d) for d in dirs] if dirs is not None else default_dirs()
    served = Registry(base).get(name).card.version
    Registry([*base, zoo]).set_active(name, served, directory=zoo,
                                      note=f"pinned when candidate {candidate} was installed (not yet gated)")
