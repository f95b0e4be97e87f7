"""Train -> export (parity-checked ONNX) -> evaluate -> cards, for both chest X-ray models."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

TRAINING_DATA_LUNG = ("OpenIST normal adult PA chest radiographs (real) with manual lung masks: "
                      "{n} training images (70% md5 split); no synthetic data")
TRAINING_DATA_LESION = (
    "Real: {real} NIH ChestX-ray14 radiographs (patient-level training split; report-mined labels mapped by "
    "training.datasets.class_map, radiologist boxes as weak masks). Real normals: NIH 'No Finding' + OpenIST. "
    "Synthetic: lesions of all five classes inserted on the fly into {bg} real normal radiographs "
    "(OpenIST with manual lung masks, NIH normals with predicted lung masks) with pixel-exact masks "
    "(training.synthesis.cxr_lesions). Rare classes (nodule/mass, interstitial opacity, pneumothorax) are "
    "learned almost entirely from synthetic lesions."
)


def parity_images(data: Path, n: int = 4) -> np.ndarray:
    """A few real radiographs on the model grid (N,1,S,S) for the export parity check."""
    from training.cxr.data import grid_from_pairs

    samples = sorted((data / "nih" / "images").glob("*.png"))[:n]
    return grid_from_pairs([(str(p), None) for p in samples]).images[:, None]


def export_both(out: Path, data: Path, version: str, n_lung: int, n_real: int, n_bg: int,
                zoo: Path | None = None, lung_ckpt: Path | None = None) -> tuple[Path, Path]:
    """Export lung.pt and lesion.pt from ``out`` into ``zoo`` (default ``out/zoo``)."""
    from training.cxr.export import export_lesion, export_lung

    zoo = zoo or out / "zoo"
    imgs = parity_images(data)
    lung_dir = export_lung(lung_ckpt or out / "lung.pt", zoo, version, imgs, TRAINING_DATA_LUNG.format(n=n_lung))
    les_dir = export_lesion(out / "lesion.pt", zoo, version, imgs,
                            TRAINING_DATA_LESION.format(real=n_real, bg=n_bg))
    return lung_dir, les_dir


def evaluate_into_cards(zoo: Path, data: Path, threads: int = 2, cache: Path | None = None) -> dict:
    """Run :func:`training.cxr.evaluate.evaluate` on ``zoo``'s models and write both cards."""
    from models.registry import Registry
    from training.cxr.evaluate import evaluate, write_card

    reg = Registry([zoo])
    metrics = evaluate(reg.session("cxr-lung", threads=threads), reg.session("cxr-lesions", threads=threads), data,
                       cache=cache)
    write_card("cxr-lung", metrics, reg.get("cxr-lung").card_path)
    write_card("cxr-lesions", metrics, reg.get("cxr-lesions").card_path)
    return metrics


def train_and_release(data: Path, out: Path, epochs: int, budget_s: float, version: str = "0.1.0",
                      init_from: str | None = None, threads: int = 2, skip_lung: bool = False) -> dict:
    """Full run used by ``medws train cxr``."""
    from training.cxr.data import grid_from_pairs, openist_pairs
    from training.cxr.train_lesion import add_predicted_lungs, load_training_grids, train_lesion
    from training.cxr.train_lung import train_lung

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    openist = grid_from_pairs(openist_pairs(data / "normal-openist"))
    if not skip_lung:
        train_lung(openist.split("train"), openist.split("test"), 4 * epochs, out, budget_s=budget_s)
    train, _test, _ = load_training_grids(data, None)
    nih_normals = add_predicted_lungs(train.subset(np.nonzero(train.abnormal == 0)[0]), out / "lung.pt")
    backgrounds = merge_backgrounds(openist.split("train"), nih_normals)
    ckpt = None
    if init_from:
        from models.registry import Registry

        ckpt = Registry().get(init_from).directory / "weights.pt"
    summary = train_lesion(train, backgrounds, epochs, out, init_from=ckpt, budget_s=budget_s, bn_batches=30,
                           seg_pos_weight=[10.0, 2.0, 1.0, 2.0, 1.0], class_boost={"pleural_effusion": 3.0})
    export_both(out, data, version, len(openist.split("train").images), len(train.images), len(backgrounds.images))
    metrics = evaluate_into_cards(out / "zoo", data, threads)
    (out / "release.json").write_text(json.dumps({"train": summary, "metrics": metrics}, indent=1, default=str))
    return metrics


def merge_backgrounds(openist, nih_normals):
    """OpenIST normals + NIH normals whose predicted lung fields are plausible (> 10% of the grid)."""
    from training.cxr.data import GridSet

    keep = np.array([i for i in range(len(nih_normals.images)) if nih_normals.lungs[i].mean() > 0.1], dtype=int)
    nih_normals = nih_normals.subset(keep)
    return GridSet(
        images=np.concatenate([openist.images, nih_normals.images]),
        ids=openist.ids + nih_normals.ids, patients=openist.patients + nih_normals.patients,
        lungs=np.concatenate([openist.lungs, nih_normals.lungs]),
        spacing=np.concatenate([openist.spacing, nih_normals.spacing]),
    )


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - release helper
    """Export checkpoints of a finished (background) run into a zoo and evaluate them into the cards."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/cxr"))
    ap.add_argument("--out", type=Path, required=True, help="folder with lesion.pt (and lung.pt)")
    ap.add_argument("--lung", type=Path, default=None, help="lung checkpoint (default OUT/lung.pt)")
    ap.add_argument("--zoo", type=Path, default=Path("models/zoo"))
    ap.add_argument("--version", required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-log", type=Path, nargs="*", default=[], help="lesion_train.json of each run (into the card)")
    ap.add_argument("--no-eval", action="store_true", help="export only (then run medws eval cxr)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    train_json = json.loads((args.out / "lesion_train.json").read_text()) if (args.out / "lesion_train.json").exists() else {}
    from training.cxr.data import openist_pairs, split_of

    n_lung = sum(split_of(Path(a).stem) == "train" for a, _ in openist_pairs(args.data / "normal-openist"))
    export_both(args.out, args.data, args.version, n_lung, train_json.get("real_n", 477), train_json.get("normals_n", 384),
                zoo=args.zoo, lung_ckpt=args.lung)
    runs = [json.loads(Path(p).read_text()) for p in args.train_log]
    if runs:
        from models.card import ModelCard

        card_path = args.zoo / "cxr-lesions" / args.version / "card.json"
        card = ModelCard.load(card_path)
        card.extra["training_runs"] = [{k: v for k, v in r.items() if k != "history"} for r in runs]
        card.save(card_path)
    if args.no_eval:
        return 0
    metrics = evaluate_into_cards(args.zoo, args.data, args.threads, cache=args.cache)
    print(json.dumps(metrics, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
