"""Release ``cxr-embed``: export the checkpoint to ONNX (parity-checked), evaluate the
exported model through ONNX Runtime on held-out data, and write the model card with the
measured numbers.

Held-out data: real NIH radiographs of held-out patients (the lesion model's
patient-level split, :func:`training.cxr.data.split_of`) and held-out OpenIST normals
(image-level split) with synthetic lesions inserted (seed 2, never used in training).
Relevant = shares a label (our five classes, ``other`` abnormal, ``normal``); the query's
own patient/source image is excluded from its ranking.  Baseline: block-averaged pixels.

Usage::

    python -m training.embedding.evaluate --ckpt /tmp/medws-embed/ckpt.pt --version 1.0.0
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from models.card import ModelCard, now_iso, sha256_file
from training.embedding.data import LABELS, EmbedSet, cached, load_nih, load_synthetic
from training.embedding.export import export_onnx, load_checkpoint, parity
from training.embedding.metrics import pixel_baseline, retrieval_metrics
from training.embedding.train import DATA

logger = logging.getLogger(__name__)
ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
NAME = "cxr-embed"


def held_out(cache: Path, data: Path = DATA) -> dict[str, EmbedSet]:
    return {"real_nih_heldout_patients": cached(cache / "nih_test.npz", lambda: load_nih(data / "nih", "test")),
            "synthetic_heldout_images": cached(cache / "syn_test.npz",
                                               lambda: load_synthetic(data / "normal-openist", "test", seed=2))}


def embed_all(embedder, images: np.ndarray, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].astype(np.float32)[:, None]
        out.append(embedder.session.run({"image": x})["embedding"])
    v = np.concatenate(out)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def evaluate_sets(embedder, sets: dict[str, EmbedSet], k: int = 10) -> dict:
    out = {}
    for name, s in sets.items():
        t0 = time.perf_counter()
        emb = embed_all(embedder, s.images)
        per_image_ms = 1000 * (time.perf_counter() - t0) / len(s)
        abnormal = s.labels[:, LABELS.index("normal")] == 0
        out[name] = {
            "images": len(s), "groups": len(set(s.groups)),
            "label_counts": {lab: int(s.labels[:, j].sum()) for j, lab in enumerate(LABELS)},
            "model": {"all_queries": retrieval_metrics(emb, s.labels, s.groups, k),
                      "abnormal_queries": retrieval_metrics(emb, s.labels, s.groups, k, abnormal)},
            "pixel_baseline": {"all_queries": retrieval_metrics(pixel_baseline(s.images), s.labels, s.groups, k),
                               "abnormal_queries": retrieval_metrics(pixel_baseline(s.images), s.labels,
                                                                     s.groups, k, abnormal)},
            "embed_ms_per_image_batched": round(per_image_ms, 2),
        }
    return out


def write_results(comparison: dict, definition: str, version: str,
                  out: Path = Path(__file__).resolve().parents[2] / "benchmarks" / "results") -> None:
    """``eval_cbir.json`` and a short ``.md`` table: precision@10 / mAP per model and data set."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_cbir.json").write_text(json.dumps({"definition": definition, "cxr_embed_version": version,
                                                    "results": comparison}, indent=1))
    lines = ["# Retrieval evaluation (written by training/embedding/evaluate.py)", "", definition, "",
             "| data | model | queries | P@10 | mAP | chance | abnormal queries: P@10 | mAP |",
             "|---|---|---|---|---|---|---|---|"]
    for model, sets in comparison.items():
        for data, r in sets.items():
            if not isinstance(r, dict) or "model" not in r:
                continue
            for who, label in (("model", model), ("pixel_baseline", "pixel baseline")):
                if who == "pixel_baseline" and model != NAME:
                    continue
                a, b = r[who]["all_queries"], r[who]["abnormal_queries"]
                if model != NAME and sets.get("model_version"):
                    label = f"{model} {sets['model_version']}"
                lines.append(f"| {data} | {label} | {a['queries']} | {a['precision_at_k']:.3f} | {a['map']:.3f} | "
                             f"{a['chance']:.3f} | {b['precision_at_k']:.3f} | {b['map']:.3f} |")
    (out / "eval_cbir.md").write_text("\n".join(lines) + "\n")


def release(ckpt: Path, version: str, cache: Path, zoo: Path = ZOO) -> Path:
    import torch

    from models.embedding import CxrEmbedder
    from models.registry import Registry

    torch.set_num_threads(2)
    model = load_checkpoint(ckpt)
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    folder = zoo / NAME / version
    onnx_path = export_onnx(model, folder / "model.onnx")
    sets = held_out(cache)
    probe = next(iter(sets.values())).images[:8].astype(np.float32)[:, None]
    worst = parity(model, onnx_path, probe)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    card = ModelCard(
        name=NAME, version=version, task="cxr-embedding",
        input={"name": "image", "size": 256, "channels": 1,
               "normalisation": "models.cxr.preprocess.prepare: letterbox to 256, 1st/99th percentile to [0, 1]"},
        outputs={"embedding": "(N,128) L2-normalised; cosine similarity = inner product"},
        classes=list(LABELS), thresholds={},
        training_data=("Real NIH ChestX-ray14 radiographs (../shared/data/cxr/nih, training patients of the "
                       "lesion model's patient-level split, report-mined labels + radiologist boxes) and real "
                       "OpenIST normal radiographs (training images) with SYNTHETIC lesions inserted by "
                       "training.synthesis.cxr_lesions (one per copy, five kinds). Labels: our five classes, "
                       "'other' (NIH finding outside them) and 'normal'."),
        sha256=sha256_file(onnx_path), created=now_iso(),
        extra={"architecture": "MONAI Convolution encoder (5 blocks, conv+BN+ReLU; avg-pool to 128 px), "
                               "mean+max pooling, 2-layer projection to 128, L2 normalisation",
               "loss": "supervised contrastive (positives share a label, tau 0.1) + auxiliary multi-label BCE",
               "parameters": int(n_params), "opset": 17, "parity_max_abs_diff": worst,
               "training": {"epochs": len(ck["history"]), "steps_per_epoch": ck["steps_per_epoch"],
                            "batch": ck["batch"], "final_loss": ck["history"][-1]["loss"],
                            "wall_clock_s": ck["history"][-1]["elapsed_s"], "threads": ck["threads"],
                            "machine": "shared 2-core CPU build machine"}})
    card.save(folder / "card.json")
    embedder = CxrEmbedder(registry=Registry([zoo]), threads=2, names=(NAME,))
    metrics = evaluate_sets(embedder, sets)
    metrics["definition"] = ("precision@10 and mAP; relevant = shares a label (five classes, 'other', 'normal'); "
                             "the query's own patient (NIH) or source image (synthetic) is excluded; "
                             "embeddings from the exported ONNX model through ONNX Runtime; "
                             "pixel_baseline = 16x16 block-averaged model grid")
    card.metrics = metrics
    card.save(folder / "card.json")
    # the lesion network's pooled embedding on the same held-out sets (when installed)
    comparison = {NAME: {k: v for k, v in metrics.items() if isinstance(v, dict)}}
    try:
        lesion = CxrEmbedder(threads=2, names=("cxr-lesions",))
        if lesion.size == embedder.size:
            comparison["cxr-lesions"] = evaluate_sets(lesion, sets)
            comparison["cxr-lesions"]["model_version"] = lesion.model.version
    except Exception as e:  # noqa: BLE001 - comparison only
        logger.info("cxr-lesions not compared: %s", e)
    write_results(comparison, metrics["definition"], version)
    logger.info("%s", json.dumps({k: v["model"] if isinstance(v, dict) and "model" in v else v
                                  for k, v in metrics.items()}, indent=1))
    return folder


def compare_only(version: str, cache: Path, zoo: Path = ZOO) -> None:
    """Re-measure the installed ``cxr-lesions`` next to the released ``cxr-embed`` card's numbers."""
    from models.embedding import CxrEmbedder

    card = ModelCard.load(zoo / NAME / version / "card.json")
    comparison = {NAME: {k: v for k, v in card.metrics.items() if isinstance(v, dict)}}
    lesion = CxrEmbedder(threads=2, names=("cxr-lesions",))
    comparison["cxr-lesions"] = evaluate_sets(lesion, held_out(cache))
    comparison["cxr-lesions"]["model_version"] = lesion.model.version
    write_results(comparison, card.metrics["definition"], version)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", type=Path, default=Path("/tmp/medws-embed/ckpt.pt"))
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medws-embed/cache"))
    ap.add_argument("--zoo", type=Path, default=ZOO)
    ap.add_argument("--compare-only", action="store_true",
                    help="keep the released cxr-embed; re-measure the installed cxr-lesions next to it")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.compare_only:
        compare_only(a.version, a.cache, a.zoo)
    else:
        release(a.ckpt, a.version, a.cache, a.zoo)


if __name__ == "__main__":
    main()
