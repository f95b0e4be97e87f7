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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="chest X-ray data root (nih/labels.json, normal-openist/)")
    src.add_argument("--dataset", help="medws-dataset export (docs/dataset-format.md): fine-tune --from on its train "
                                       "split into a candidate version OUT/zoo/<name>/<version>/ for medws models promote")
    p.add_argument("--out", required=True, help="output folder (checkpoints, OUT/zoo/<name>/<version>/)")
    p.add_argument("--epochs", type=int, default=40, help="lesion-model epochs (25 steps each); lung: 4x")
    p.add_argument("--budget-min", type=float, default=45.0, help="wall-clock budget per model (minutes)")
    p.add_argument("--from", dest="init_from", default=None,
                   help="start the lesion model from this registry model's weights.pt (e.g. cxr-lesions; "
                        "NAME@VERSION with --dataset)")
    p.add_argument("--version", default=None,
                   help="semantic version of the new models (default 0.1.0; with --dataset: --from's version, patch + 1)")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="with --dataset: lesion steps per epoch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--skip-lung", action="store_true", help="reuse OUT/lung.pt instead of training the lung model")
    p.set_defaults(func=_train_cxr)

    ev = commands.group("eval", "evaluate a model and write the metrics into its card")
    e = ev.add_parser("cxr", help="evaluate a chest X-ray model on held-out real and synthetic data; writes card.json",
                      description="evaluate cxr-lung, cxr-lesions or cxr-nodule (ONNX Runtime) and write the metrics into its model card")
    e.add_argument("--model", required=True, choices=["cxr-lung", "cxr-lesions", "cxr-nodule"])
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
    if args.model == "cxr-nodule":
        from training.cxr import evaluate_nodule as ev_nodule

        res = ev_nodule.evaluate_nodule(reg.session("cxr-lung", threads=args.threads),
                                        reg.session("cxr-nodule", args.version, threads=args.threads), args.data,
                                        lesion_model=reg.session("cxr-lesions", threads=args.threads), cache=args.cache)
        card = ev_nodule.write_card(res, target.card_path)
        print(json.dumps({"model": card.name, "version": card.version, "card": str(target.card_path),
                          "metrics": card.metrics}, indent=1))
        return 0
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

    if args.dataset:
        return _fine_tune_cxr(args)
    from training.cxr.release import train_and_release

    train_and_release(Path(args.data), Path(args.out), epochs=args.epochs, budget_s=60 * args.budget_min,
                      version=args.version or "0.1.0", init_from=args.init_from, threads=args.threads,
                      skip_lung=args.skip_lung)
    return 0


def _fine_tune_cxr(args) -> int:
    """``--dataset DIR --from CURRENT``: candidate version for ``medws models promote``."""
    import sys

    from models.errors import ModelError
    from training.datasets.medws_export import DatasetFormatError
    from training.promotion.retrain import candidate_from_export

    if not args.init_from:
        print("medws train cxr: --dataset needs --from CURRENT (e.g. --from cxr-lesions)", file=sys.stderr)
        return 2
    try:
        vdir = candidate_from_export(args.dataset, args.out, args.init_from, version=args.version,
                                     epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                     budget_s=60 * args.budget_min, threads=args.threads)
    except (ModelError, DatasetFormatError, ValueError) as e:
        print(f"medws train cxr: {e}", file=sys.stderr)
        return 2
    name, version = vdir.parent.name, vdir.name
    print(f"candidate {name}@{version} installed in {vdir}")
    print(f"gate it: MEDWS_MODELS_DIR={vdir.parent.parent} medws models promote {name}@{version} "
          f"--locked-set {args.dataset}")
    return 0
