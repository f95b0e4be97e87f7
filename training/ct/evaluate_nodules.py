"""Export the nodule network to ONNX, evaluate it through the runtime pipeline on held-out
inserted nodules (FROC 1/8…8 FP/scan, CPM, Dice, size and type accuracy) and write the
model card.  ``python -m training.ct.evaluate_nodules --ckpt /tmp/ct_runs/nodule``.

Held-out protocol: training used slices < 100 of the aortic crop with seeds from 0; the
evaluation inserts nodules with seeds 10000+ into slices ≥ 108 of that crop (held-out
region) and seeds 20000+ into the lung bases of the other reconstruction (held-out volume).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from models.card import ModelCard, sha256_file
from models.ct.nodules import MODEL_NAME, PATCH, SPACING, NodulePipeline, normalise
from models.session import OrtModel
from training.ct.data import nodule_case, nodule_volumes
from training.ct.export import export_onnx, training_record
from training.ct.froc import dice, froc
from training.ct.networks import small_unet

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
VERSION = "1.0.0"


def evaluate(pipe: NodulePipeline, sets: dict, n_cases: dict[str, int], cand_threshold: float = 0.2) -> dict:
    results: dict = {}
    all_cands: list = []
    n_les_all = 0
    measures: list[dict] = []
    t_total = 0.0
    for name, (lv, seed0) in sets.items():
        cases = []
        n_les = 0
        for i in range(n_cases[name]):
            rng = np.random.default_rng(seed0 + i)
            vol, labels, specs = nodule_case(lv, rng, n_nodules=int(rng.integers(1, 3)))
            n_les += len(specs)
            t = time.time()
            x = pipe.pre_process(vol, lobes=lv.lobes)
            prob = pipe.predict(x)
            t_total += time.time() - t
            region = ndimage.binary_dilation(x.lungs, iterations=2)
            lab, n = ndimage.label((prob >= cand_threshold) & region)
            cands = []
            for j, sl in enumerate(ndimage.find_objects(lab), start=1):
                comp = lab[sl] == j
                gt = labels[sl][comp]
                gt = gt[gt > 0]
                hit = int(np.bincount(gt).argmax()) if gt.size else None
                cands.append((float(prob[sl][comp].max()), hit))
            cases.append(cands)
            # measurements at the operating threshold
            res = pipe.post_process(prob, x)
            op_lab = np.zeros(labels.shape, np.int32)
            lab2, _ = ndimage.label((prob >= pipe.threshold) & region)
            for k, spec in enumerate(specs, start=1):
                g = labels == k
                ids = np.unique(lab2[g])
                ids = ids[ids > 0]
                if not ids.size:
                    measures.append({"set": name, "found": False, **spec})
                    continue
                pm = np.zeros(labels.shape, bool)
                for j in ids:  # the measurement masks the pipeline reports
                    sl_j = ndimage.find_objects((lab2 == j).astype(np.uint8))[0]
                    cj = lab2[sl_j] == j
                    pm[sl_j] |= NodulePipeline._refine(cj, prob[sl_j], float(prob[sl_j][cj].max()))
                f = None
                cz = np.argwhere(g).mean(0)
                best = 1e9
                for fd in res["findings"]:
                    dd = np.linalg.norm(np.asarray(x.volume.patient_to_voxel(fd["centre_patient_mm"])) - cz)
                    if dd < best:
                        best, f = dd, fd
                measures.append({"set": name, "found": True, "dice": dice(pm, g), **spec,
                                 "pred_mean_diameter_mm": f["mean_diameter_mm"] if f else None,
                                 "pred_type": f["type"] if f else None,
                                 "pred_volume_mm3": f["volume_mm3"] if f else None,
                                 "true_volume_mm3": float(g.sum() * np.prod(SPACING))})
            del op_lab
        results[name] = froc(cases, n_les, len(cases))
        all_cands.extend(cases)
        n_les_all += n_les
    results["combined"] = froc(all_cands, n_les_all, len(all_cands))
    found = [m for m in measures if m["found"]]
    ge = [m for m in measures if m["diameter_mm"] >= 6]
    results["operating_point"] = {
        "threshold": pipe.threshold,
        "sensitivity": len(found) / max(len(measures), 1),
        "sensitivity_ge_6mm": sum(m["found"] for m in ge) / max(len(ge), 1),
        "mean_dice_found": float(np.mean([m["dice"] for m in found])) if found else 0.0,
        "diameter_mae_mm": float(np.mean([abs(m["pred_mean_diameter_mm"] - m["diameter_mm"]) for m in found
                                          if m["pred_mean_diameter_mm"] is not None])) if found else None,
        "type_accuracy": float(np.mean([m["pred_type"] == m["type"] for m in found])) if found else None,
        "volume_rel_error_median": float(np.median([abs(m["pred_volume_mm3"] - m["true_volume_mm3"])
                                                    / m["true_volume_mm3"] for m in found])) if found else None,
    }
    results["inference_s_per_case_mean"] = t_total / max(len(all_cands), 1)
    return results, measures


def choose_threshold(pipe: NodulePipeline, lv, n_cases: int = 10, seed0: int = 5000,
                     fp_per_scan: float = 1.0) -> dict:
    """Operating threshold from VALIDATION cases in the training region (seeds 5000+, never
    the held-out sets): the lowest candidate score with at most ``fp_per_scan`` FPs/scan."""
    fps: list[float] = []
    for i in range(n_cases):
        rng = np.random.default_rng(seed0 + i)
        vol, labels, _ = nodule_case(lv, rng, n_nodules=2)
        x = pipe.pre_process(vol)
        prob = pipe.predict(x)
        lab, _ = ndimage.label((prob >= 0.05) & ndimage.binary_dilation(x.lungs, iterations=2))
        for j, sl in enumerate(ndimage.find_objects(lab), start=1):
            comp = lab[sl] == j
            if not (labels[sl][comp] > 0).any():
                fps.append(float(prob[sl][comp].max()))
    fps.sort(reverse=True)
    k = int(fp_per_scan * n_cases)
    thr = fps[k] + 1e-4 if len(fps) > k else 0.05
    return {"threshold": round(min(max(thr, 0.05), 0.95), 4), "validation_cases": n_cases,
            "target_fp_per_scan": fp_per_scan, "validation_seeds": f"{seed0}..{seed0 + n_cases - 1} (training region)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="training output folder (model.pt, train_info.json)")
    ap.add_argument("--cases-region", type=int, default=30)
    ap.add_argument("--cases-volume", type=int, default=15)
    ap.add_argument("--zoo", default=str(REPO / "models" / "zoo"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    ck = Path(a.ckpt)
    net = small_unet(1, 1)
    net.load_state_dict(torch.load(ck / "model.pt", map_location="cpu"))
    out_dir = Path(a.zoo) / MODEL_NAME / VERSION
    onnx_path = out_dir / "model.onnx"
    vs = nodule_volumes()
    sample = normalise(vs["train"].vol.hu[20:20 + PATCH, 30:30 + PATCH, 30:30 + PATCH])[None, None]
    parity = export_onnx(net, onnx_path, 1, PATCH, sample)
    pipe = NodulePipeline(model=OrtModel(onnx_path, threads=1), threshold=0.5)
    pipe.version = VERSION
    op = choose_threshold(pipe, vs["train"])
    pipe.threshold = op["threshold"]
    sets = {"heldout_region": (vs["heldout_region"], 10000), "heldout_volume": (vs["heldout_volume"], 20000)}
    res, measures = evaluate(pipe, sets, {"heldout_region": a.cases_region, "heldout_volume": a.cases_volume},
                             cand_threshold=min(0.2, pipe.threshold))
    train_info = training_record(ck)
    card = ModelCard(
        name=MODEL_NAME, version=VERSION, task="ct-lung-nodule-segmentation",
        input={"name": "image", "size": PATCH, "channels": 1, "spacing_mm": list(SPACING),
               "normalisation": "HU clipped to [-1000, 400] and scaled to [0, 1]; windows of 64^3 voxels "
                                "over the lung bounding box, stride 48, tapered averaging"},
        outputs={"logits": "[N, 1, 64, 64, 64] nodule logit per voxel (sigmoid → probability)"},
        classes=["nodule"], thresholds={"nodule": pipe.threshold},
        training_data=("SYNTHETIC LESIONS IN ONE REAL PATIENT: solid, part-solid and ground-glass nodules "
                       "(4-30 mm, lobulated, partial-volume edges) inserted with exact masks into the real "
                       "lungs of slices 0-99 of the TotalSegmentator contrast CT aortic crop (1.5 mm). No real "
                       "nodules were available; performance on real nodules is unmeasured."),
        metrics={
            "heldout_synthetic": res,
            "heldout_protocol": ("held-out inserted nodules: new random seeds (10000+, 20000+) and new "
                                 "locations, in a held-out region (slices >= 108 of the same crop) and a "
                                 "held-out volume (lung bases of another reconstruction, real lobe masks); "
                                 "FROC candidates = components of probability >= 0.2, hit = overlap with "
                                 "the inserted nodule mask (LUNA16 convention)"),
            "real_data": "not measured: no labelled real nodule CT is available here",
        },
        sha256=sha256_file(onnx_path),
        extra={"export": parity, "training": train_info, "operating_point": op, "network": "MONAI UNet 3-D (8,16,32,64), 1 res unit",
               "evaluated_by": "training/ct/evaluate_nodules.py"},
    )
    card.save(out_dir / "card.json")
    (ck / "eval_measures.json").write_text(json.dumps(measures, indent=1, default=float))
    print(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
