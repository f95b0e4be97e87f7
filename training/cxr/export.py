"""ONNX export of the chest X-ray networks with a torch-vs-ONNX Runtime parity check.

Every export is verified: the torch module and the ONNX graph (run by
:class:`models.session.OrtModel`) must agree within ``PARITY_TOL`` on real images
(max absolute difference of the probability outputs); otherwise :class:`ExportError`.
The model card is written next to ``model.onnx`` with the sha256 of the weights and the
parity result; metrics are added later by :mod:`training.cxr.evaluate`.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from models.card import ModelCard, sha256_file
from models.cxr.preprocess import CLASSES, HIGH_PERCENTILE, INPUT_SIZE, LOW_PERCENTILE
from training.cxr.deploy import for_inference
from training.cxr.nets import LESION_OUTPUTS, CxrLesionNet, LungProbabilities, lung_unet

logger = logging.getLogger(__name__)

PARITY_TOL = 1e-3
OPSET = 17
NORMALISATION = (f"models.cxr.preprocess.prepare: presentation values (models.imaging.load_radiograph), "
                 f"letterbox to {{size}}x{{size}} (aspect kept, zero padding), content scaled by its "
                 f"{LOW_PERCENTILE:g}th/{HIGH_PERCENTILE:g}th percentiles to [0, 1], padding 0")


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch module."""


def _export(module: torch.nn.Module, path: Path, outputs: tuple[str, ...], size: int) -> None:
    module.eval()
    dummy = torch.zeros(1, 1, size, size)
    axes = {"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    torch.onnx.export(module, (dummy,), str(path), input_names=["image"], output_names=list(outputs),
                      dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def parity(module: torch.nn.Module, onnx_path: Path, images: np.ndarray, outputs: tuple[str, ...]) -> dict[str, float]:
    """Max |torch - ORT| per output on ``images`` (N,1,S,S)."""
    from models.session import OrtModel

    module.eval()
    ort_model = OrtModel(onnx_path, threads=1)
    worst: dict[str, float] = {o: 0.0 for o in outputs}
    with torch.no_grad():
        for img in images:
            x = img[None].astype(np.float32)
            t_out = module(torch.from_numpy(x))
            t_out = t_out if isinstance(t_out, tuple) else (t_out,)
            o_out = ort_model.run({"image": x})
            for name, tv in zip(outputs, t_out):
                worst[name] = max(worst[name], float(np.abs(tv.numpy() - o_out[name]).max()))
    return worst


def export_model(
    module: torch.nn.Module,
    outputs: tuple[str, ...],
    card: ModelCard,
    zoo: str | Path,
    parity_images: np.ndarray,
    state_dict_path: str | Path | None = None,
    prob_outputs: tuple[str, ...] | None = None,
) -> Path:
    """Export ``module`` to ``zoo/<name>/<version>/model.onnx`` + ``card.json`` after a parity check."""
    out = Path(zoo) / card.name / card.version
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    size = int(card.input["size"])
    _export(for_inference(module), onnx_path, outputs, size)  # exact rewrites, see training.cxr.deploy
    diffs = parity(module, onnx_path, parity_images, outputs)  # against the training module
    checked = prob_outputs or outputs
    worst = max(diffs[o] for o in checked)
    if worst >= PARITY_TOL:
        raise ExportError(f"{card.name}: ONNX Runtime differs from torch by {worst:.2e} (>= {PARITY_TOL}) on {checked}")
    if state_dict_path:
        shutil.copyfile(state_dict_path, out / "weights.pt")
    card.sha256 = sha256_file(onnx_path)
    card.extra = {**card.extra, "onnx_opset": OPSET, "export_rewrites": "training.cxr.deploy.for_inference (PReLU -> LeakyReLU)", "parity_max_abs_diff": diffs,
                  "parity_images": int(len(parity_images)), "parity_tolerance": PARITY_TOL,
                  "onnx_bytes": onnx_path.stat().st_size}
    card.save(out / "card.json")
    logger.info("exported %s %s (parity %s)", card.name, card.version, json.dumps(diffs))
    return out


def export_lung(ckpt: str | Path, zoo: str | Path, version: str, parity_images: np.ndarray,
                training_data: str, size: int = INPUT_SIZE) -> Path:
    """Export the lung U-Net (output ``lung``: (N,1,S,S) probability)."""
    net = lung_unet()
    net.load_state_dict(torch.load(ckpt, map_location="cpu"))
    card = ModelCard(
        name="cxr-lung", version=version, task="cxr-lung-segmentation",
        input={"name": "image", "size": size, "channels": 1, "normalisation": NORMALISATION.format(size=size)},
        outputs={"lung": "(N,1,S,S) lung-field probability on the letterboxed grid"},
        classes=["lung"], thresholds={"lung": 0.5}, training_data=training_data,
        extra={"architecture": "monai.networks.nets.UNet channels (8,16,32,64,128) strides 2, 1 residual unit"},
    )
    return export_model(LungProbabilities(net), ("lung",), card, zoo, parity_images, ckpt)


def export_lesion(ckpt: str | Path, zoo: str | Path, version: str, parity_images: np.ndarray,
                  training_data: str, size: int = INPUT_SIZE) -> Path:
    """Export the lesion network (outputs scores, abnormality, seg, embedding)."""
    net = CxrLesionNet()
    net.load_state_dict(torch.load(ckpt, map_location="cpu"))
    card = ModelCard(
        name="cxr-lesions", version=version, task="cxr-findings",
        input={"name": "image", "size": size, "channels": 1, "normalisation": NORMALISATION.format(size=size)},
        outputs={
            "scores": "(N,5) image-level probability per class",
            "abnormality": "(N,1) probability that the radiograph is abnormal",
            "seg": f"(N,5,S/4,S/4) per-class probability maps (stride 4) on the letterboxed grid",
            "embedding": "(N,128) L2-normalised pooled encoder features for similar-case retrieval",
        },
        classes=list(CLASSES), thresholds={c: 0.5 for c in CLASSES} | {"abnormality": 0.5},
        training_data=training_data,
        extra={"architecture": "CxrLesionNet: MONAI ResidualUnit encoder (strides 2..32), FPN decoder to stride 4, "
                               "per-class seg heads, pooled classification/abnormality heads, embedding",
               "seg_threshold": 0.5},
    )
    return export_model(net, LESION_OUTPUTS, card, zoo, parity_images, ckpt,
                        prob_outputs=("scores", "abnormality", "seg"))


TRAINING_DATA_NODULE = (
    "Fine-tuned from cxr-lesions 0.5.0 on 256-px crops of radiographs letterboxed to {grid} px: synthetic "
    "nodules/masses (5-30 mm, half 5-15 mm; training.synthesis.cxr_lesions) inserted into {normals} real normal "
    "radiographs (OpenIST training split with manual lung masks, NIH training normals with predicted lung masks); "
    "negatives: the other four synthetic lesion kinds, {real} real NIH training-split radiographs without a "
    "nodule/mass label, real normals; NIH nodule/mass radiographs with a radiologist box (image-level loss only)."
)


def export_nodule(ckpt: str | Path, zoo: str | Path, version: str, data: str | Path, train_info: dict | None = None,
                  n_parity: int = 4) -> Path:
    """Export the fine-grid nodule network (output ``nodule``: (N,1,S/4,S/4) probability)."""
    from models.cxr.nodule import NODULE_INPUT_SIZE, SUPPORT_MARGIN
    from training.cxr.data import grid_from_pairs
    from training.cxr.nets import NoduleMap

    info = train_info or {}
    net = CxrLesionNet()
    net.load_state_dict(torch.load(ckpt, map_location="cpu"))
    size = NODULE_INPUT_SIZE
    samples = sorted((Path(data) / "nih" / "images").glob("*.png"))[:n_parity]
    imgs = grid_from_pairs([(str(p), None) for p in samples], size).images[:, None]
    card = ModelCard(
        name="cxr-nodule", version=version, task="cxr-nodule-map",
        input={"name": "image", "size": size, "channels": 1, "normalisation": NORMALISATION.format(size=size)},
        outputs={"nodule": "(N,1,S/4,S/4) nodule/mass probability map (stride 4) on the letterboxed grid"},
        classes=["nodule_mass"], thresholds={"nodule_mass": 0.5},
        training_data=TRAINING_DATA_NODULE.format(grid=size, normals=info.get("normals_n", "?"),
                                                  real=info.get("real_n", "?")),
        extra={"architecture": "CxrLesionNet encoder/FPN decoder (training.cxr.nets.NoduleMap: first seg channel)",
               "image_score": f"models.cxr.nodule.nodule_score: map maximum inside the lung fields dilated by "
                              f"{SUPPORT_MARGIN} cells", "training_runs": [info] if info else []},
    )
    return export_model(NoduleMap(net), ("nodule",), card, zoo, imgs, ckpt)
