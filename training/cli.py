"""``medws train cxr`` and ``medws eval cxr`` (chest X-ray lung-field and lesion models)."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register(commands) -> None:
    """Add ``medws train cxr`` and ``medws eval cxr``."""
    train = commands.group("train", "train a model (MONAI; uses a GPU when present)")
    p = train.add_parser("cxr", help="train, export (ONNX + parity) and evaluate the chest X-ray models",
                         description="train the lung-field and lesion models on DIR (../shared/data/cxr layout: "
                                     "nih/, normal-openist/), export them to OUT/zoo and write measured metrics into their cards")
    p.add_argument("--data", required=True, help="chest X-ray data root (nih/labels.json, normal-openist/)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, OUT/zoo/<name>/<version>/)")
    p.add_argument("--epochs", type=int, default=40, help="lesion-model epochs (25 steps each); lung: 4x")
    p.add_argument("--budget-min", type=float, default=45.0, help="wall-clock budget per model (minutes)")
    p.add_argument("--from", dest="init_from", default=None,
                   help="start the lesion model from this registry model's weights.pt (e.g. cxr-lesions)")
    p.add_argument("--version", default="0.1.0", help="semantic version of the new models")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--skip-lung", action="store_true", help="reuse OUT/lung.pt instead of training the lung model")
    p.set_defaults(func=_train_cxr)

    ev = commands.group("eval", "evaluate a model and write the metrics into its card")
    e = ev.add_parser("cxr", help="evaluate a chest X-ray model on held-out real and synthetic data; writes card.json",
                      description="evaluate cxr-lung or cxr-lesions (ONNX Runtime) and write the metrics into its model card")
    e.add_argument("--model", required=True, choices=["cxr-lung", "cxr-lesions"])
    e.add_argument("--data", required=True, help="chest X-ray data root (nih/, normal-openist/)")
    e.add_argument("--zoo", default=None, help="registry folder (default: the installed models/zoo)")
    e.add_argument("--version", default=None)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--cache", default=None, help="grid cache written by training (skips re-reading the images)")
    e.set_defaults(func=_eval_cxr)


def _eval_cxr(args) -> int:
    import json

    from models.registry import Registry
    from training.cxr.evaluate import evaluate, write_card

    reg = Registry([args.zoo]) if args.zoo else Registry()
    target = reg.get(args.model, args.version)
    lung = reg.session("cxr-lung", args.version if args.model == "cxr-lung" else None, threads=args.threads)
    lesion = reg.session("cxr-lesions", args.version if args.model == "cxr-lesions" else None, threads=args.threads)
    seg_thr = float(reg.get("cxr-lesions").card.extra.get("seg_threshold", 0.5))
    metrics = evaluate(lung, lesion, args.data, seg_threshold=seg_thr, cache=args.cache,
                       lesions=args.model == "cxr-lesions")
    card = write_card(args.model, metrics, target.card_path)
    print(json.dumps({"model": card.name, "version": card.version, "card": str(target.card_path),
                      "metrics": card.metrics}, indent=1))
    return 0


def _train_cxr(args) -> int:
    from pathlib import Path

    from training.cxr.release import train_and_release

    train_and_release(Path(args.data), Path(args.out), epochs=args.epochs, budget_s=60 * args.budget_min,
                      version=args.version, init_from=args.init_from, threads=args.threads,
                      skip_lung=args.skip_lung)
    return 0
