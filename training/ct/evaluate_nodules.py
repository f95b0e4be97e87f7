"""Export the nodule false-positive-reduction classifier to ONNX, evaluate the whole
runtime pipeline (blob candidates → classifier → segmentation) on held-out inserted
nodules (FROC 1/8…8 FP/scan, CPM, Dice, size and type accuracy) and write the model card.
``python -m training.ct.evaluate_nodules --ckpt /tmp/ct_runs/fpr``.

Held-out protocol: training used slices < 100 of the aortic crop (nodules drawn from the
training seed stream, negatives = blob candidates of that region, also degraded to 3 mm);
the operating threshold is chosen on VALIDATION cases of the training region (seeds
5000+, as reconstructed and degraded to 3 mm); the evaluation inserts nodules with seeds
10000+ into slices ≥ 108 of that crop (held-out region) and seeds 20000+ into the lung
bases of the other reconstruction (held-out volume).  A candidate is a hit when its
centre lies in the inserted nodule's mask or within its radius of the nodule's centre
(LUNA16); further hits on a found nodule are neither TP nor FP.

Two FROCs are written: over all candidates (``heldout_region``/``heldout_volume``/
``combined``, the earlier protocol) and over what the task reports (``output_level``): the
candidates :meth:`NodulePipeline.detections` keeps at every threshold — a candidate whose
centre or most of whose mask lies in a nodule already reported, or that segments to less
than the minimum diameter, is not reported, so it is not a false positive of the task.  The
operating threshold and the operating-point numbers use the reported findings.
``output_level`` tests a reported finding at its candidate's centre,
``output_level_at_reported_centre`` at the location the task reports (its mask's centroid).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.card import ModelCard, sha256_file
from models.ct.blobs import INSCRIBED_OPENING
from models.ct.candidate_features import SecondStage
from models.ct.reconstruction import ReconstructionOffset
from models.ct.nodules import (FPR_PATCH, MODEL_NAME, TTA_FLIPS, WORK_ORIENTATION, NodulePipeline,
                               candidate_patches, sigmoid)
from models.ct.volume import resample_mask
from models.session import OrtModel
from training.ct.data import LungVolume, nodule_case, nodule_volumes
from training.ct.export import export_onnx, training_record
from training.ct.froc import dice, froc
from training.ct.fpr_data import lowres_copy
from training.ct.networks import MeanLogit, fpr_cnn

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
VERSION = "1.1.0"


def labels_on_work(labels: np.ndarray, vol, work) -> np.ndarray:
    """The case's label map on the pipeline's work grid (the pipeline may reorient or
    resample the study; nearest neighbour, same physical positions)."""
    same = (labels.shape == work.shape and np.allclose(vol.direction, work.direction)
            and np.allclose(vol.origin, work.origin) and np.allclose(vol.spacing, work.spacing))
    return labels if same else resample_mask(labels, vol, work)


def candidate_hits(x, labels: np.ndarray, specs: list[dict]) -> list[int | None]:
    """Lesion id (1-based, = label value) hit by each candidate, or None."""
    return point_hits([c.zyx for c in x.candidates], labels, specs, x.work.spacing)


def point_hits(points, labels: np.ndarray, specs: list[dict], spacing) -> list[int | None]:
    """Lesion id (1-based, = label value) hit by each work-grid point (in the lesion's mask or
    within its radius of its centre, LUNA16), or None."""
    sp = np.asarray(spacing)
    cents = {k: np.argwhere(labels == k).mean(0) for k in range(1, len(specs) + 1) if (labels == k).any()}
    out: list[int | None] = []
    for zyx in points:
        v = tuple(int(a) for a in np.clip(np.round(zyx), 0, np.asarray(labels.shape) - 1))
        hit = int(labels[v]) or None
        if hit is None:
            for k, ck in cents.items():
                if np.linalg.norm((np.asarray(zyx) - ck) * sp) <= specs[k - 1]["diameter_mm"] / 2:
                    hit = k
                    break
        out.append(hit)
    return out


@dataclass
class CaseRun:
    """One held-out or validation case run through the pipeline: the case (volume, label map
    on the work grid, specs), the pipeline's input, every candidate's logit and the lesion it
    hits, and what the task reports at every threshold (``kept`` candidate indices in
    descending logit order, ``reported_hits``: the lesion hit at each one's mask centroid)."""
    seed: int
    labels: np.ndarray
    specs: list[dict]
    x: object
    z: np.ndarray
    hits: list
    kept: list[int]
    reported_hits: list
    seconds: float


def run_case(pipe: NodulePipeline, lv: LungVolume, seed: int, n_nodules: int | None = None,
             lobes: bool = True) -> CaseRun:
    """The case of ``seed`` (``n_nodules`` inserted nodules, default 1 or 2 drawn from the
    seed's stream) through ``pre_process`` and the classifier, scored: shared by the
    evaluation, the threshold choice and the diagnostics (same seeds → same cases)."""
    rng = np.random.default_rng(seed)
    vol, labels, specs = nodule_case(lv, rng, n_nodules=n_nodules or int(rng.integers(1, 3)))
    t = time.time()
    x = pipe.pre_process(vol, lobes=lv.lobes if lobes else None)
    z = pipe.predict_logit(x)
    seconds = time.time() - t
    labels = labels_on_work(labels, vol, x.work)
    hits = candidate_hits(x, labels, specs)
    kept, centroids = [], []
    measured = pipe.measure_segmentation is not None
    hull = pipe.lung_hull(x)
    taken = np.zeros(x.work.shape, np.uint16) if measured else None
    for j, m, sl, _ in pipe.detections(z, x, hull=hull):
        kept.append(j)
        if measured:  # the reported location is the centroid of the mask the finding is measured on
            m, sl = pipe.measurement_mask(x, j, m, sl, hull, taken)
            taken[sl][m] = len(kept)
        centroids.append(np.argwhere(m).mean(0) + [b.start for b in sl])
    rep = point_hits(centroids, labels, specs, x.work.spacing)
    return CaseRun(seed, labels, specs, x, z, hits, kept, rep, seconds)


def case_measures(r: CaseRun, res: dict, reported: list[tuple[float, int | None, bool]], name: str) -> list[dict]:
    """One row per inserted nodule of a case: found (a reported finding at the operating
    threshold hits it) and, when found, the Dice, diameter, type and volume of the finding
    that covers most of it (``res``: ``post_process`` at the threshold; ``reported``:
    (logit, lesion hit, above the threshold) of each reported candidate)."""
    wl = res["_work_labels"]
    rows = []
    for k, spec in enumerate(r.specs, start=1):
        g = r.labels == k
        found = any(h == k and above for _, h, above in reported)
        row = {"set": name, "case": r.seed, "found": bool(found), **spec,
               "true_volume_mm3": float(g.sum() * r.x.work.voxel_volume_mm3)}
        ids = wl[g]
        ids = ids[ids > 0]
        if found and ids.size:
            fid = int(np.bincount(ids).argmax())
            f = res["findings"][fid - 1]
            row.update({"dice": dice(wl == fid, g), "pred_mean_diameter_mm": f["mean_diameter_mm"],
                        "pred_type": f["type"], "pred_volume_mm3": f["volume_mm3"]})
        rows.append(row)
    return rows


def measure_summary(measures: list[dict]) -> dict:
    """Sensitivity and measurement quality at the operating point from :func:`case_measures` rows."""
    found = [m for m in measures if m["found"]]
    meas = [m for m in found if "dice" in m]
    ge = [m for m in measures if m["diameter_mm"] >= 6]
    return {
        "sensitivity": len(found) / max(len(measures), 1),
        "sensitivity_ge_6mm": sum(m["found"] for m in ge) / max(len(ge), 1),
        "mean_dice_found": float(np.mean([m["dice"] for m in meas])) if meas else 0.0,
        "diameter_mae_mm": float(np.mean([abs(m["pred_mean_diameter_mm"] - m["diameter_mm"]) for m in meas]))
        if meas else None,
        "type_accuracy": float(np.mean([m["pred_type"] == m["type"] for m in meas])) if meas else None,
        "volume_rel_error_median": float(np.median([abs(m["pred_volume_mm3"] - m["true_volume_mm3"])
                                                    / m["true_volume_mm3"] for m in meas])) if meas else None,
        "by_type": {t: {"n": sum(m["type"] == t for m in measures),
                        "sensitivity": float(np.mean([m["found"] for m in measures if m["type"] == t] or [0])),
                        "mean_dice_found": float(np.mean([m["dice"] for m in meas if m["type"] == t] or [0]))}
                    for t in ("solid", "part-solid", "ground-glass")},
    }


def evaluate(pipe: NodulePipeline, sets: dict, n_cases: dict[str, int]) -> tuple[dict, list[dict]]:
    results: dict = {"output_level": {}, "output_level_at_reported_centre": {}}
    all_cases: list = []
    all_out: list = []
    all_rep: list = []
    n_les_all = 0
    measures: list[dict] = []
    t_total = 0.0
    n_cand: list[int] = []
    for name, (lv, seed0) in sets.items():
        cases = []
        out_cases = []
        rep_cases = []
        n_les = 0
        for i in range(n_cases[name]):
            r = run_case(pipe, lv, seed0 + i)
            x, z, hits = r.x, r.z, r.hits
            n_les += len(r.specs)
            t = time.time()
            prob = sigmoid(z)
            res = pipe.post_process(prob, x)
            t_total += r.seconds + time.time() - t
            n_cand.append(len(x.candidates))
            cases.append(list(zip(z.tolist(), hits)))  # ranked by logit (no ties from a saturated sigmoid)
            # what the task reports, at every threshold; hit tested at the candidate's centre and
            # at the reported location (the centroid of the finding's mask)
            out_cases.append([(float(z[j]), hits[j], bool(prob[j] >= pipe.threshold)) for j in r.kept])
            rep_cases.append([(float(z[j]), h) for j, h in zip(r.kept, r.reported_hits)])
            measures += case_measures(r, res, out_cases[-1], name)
        results[name] = froc(cases, n_les, len(cases))
        results["output_level"][name] = froc([[(zz, h) for zz, h, _ in c] for c in out_cases], n_les, len(cases))
        results["output_level_at_reported_centre"][name] = froc(rep_cases, n_les, len(cases))
        all_cases.extend(cases)
        all_out.extend(out_cases)
        all_rep.extend(rep_cases)
        n_les_all += n_les
    results["combined"] = froc(all_cases, n_les_all, len(all_cases))
    results["output_level"]["combined"] = froc([[(zz, h) for zz, h, _ in c] for c in all_out], n_les_all,
                                               len(all_out))
    results["output_level_at_reported_centre"]["combined"] = froc(all_rep, n_les_all, len(all_rep))
    results["operating_point"] = {
        "threshold": pipe.threshold,
        **measure_summary(measures),
        "fp_per_scan": sum(1 for c in all_out for _, h, reported in c if h is None and reported)
        / max(len(all_out), 1),
        "fp_per_scan_all_candidates": sum(1 for c in all_cases for z, h in c if h is None and sigmoid(z) >= pipe.threshold)
        / max(len(all_cases), 1),
    }
    results["candidates_per_case_mean"] = float(np.mean(n_cand)) if n_cand else 0.0
    results["inference_s_per_case_mean"] = t_total / max(len(all_cases), 1)
    return results, measures


def validation_volumes(train: LungVolume) -> dict[str, LungVolume]:
    """The validation volumes: the training region as reconstructed and degraded to 3 mm."""
    return {"validation_full": train, "validation_3mm": LungVolume(lowres_copy(train.vol), train.lungs)}


def threshold_at(fp_logits: list[float], n_cases: int, fp_per_scan: float = 1.0) -> float:
    """The lowest probability with at most ``fp_per_scan`` of these false-positive logits per
    case: just above the (k+1)-th highest, as a float64 probability (not rounded: with a
    second stage the logits reach far beyond sigmoid 0.9999); at least 0.05."""
    fps = sorted(fp_logits, reverse=True)
    k = int(fp_per_scan * n_cases)
    return max(float(sigmoid(fps[k] + 1e-3)) if len(fps) > k else 0.05, 0.05)


def choose_threshold(pipe: NodulePipeline, sets: list[LungVolume], n_cases: int = 10, seed0: int = 5000,
                     fp_per_scan: float = 1.0) -> dict:
    """Operating threshold from VALIDATION cases of the training region (seeds 5000+, each
    volume in ``sets``; never the held-out sets): the lowest probability with at most
    ``fp_per_scan`` false positives (reported findings) per scan.  Also returns the validation FROC (for
    comparing checkpoints without the held-out sets)."""
    fps: list[float] = []
    n = 0
    cases: list = []
    out_cases: list = []
    n_les = 0
    for lv in sets:
        for i in range(n_cases):
            r = run_case(pipe, lv, seed0 + i, n_nodules=2, lobes=False)
            z, hits, specs = r.z, r.hits, r.specs
            fps += [float(z[j]) for j in r.kept if hits[j] is None]  # what the task reports (see evaluate)
            cases.append(list(zip(z.tolist(), hits)))
            out_cases.append([(float(z[j]), hits[j]) for j in r.kept])
            n_les += len(specs)
            n += 1
    return {"threshold": threshold_at(fps, n, fp_per_scan), "validation_cases": n,
            "target_fp_per_scan": fp_per_scan,
            "validation_seeds": f"{seed0}..{seed0 + n_cases - 1} (training region, as reconstructed and at 3 mm)",
            "validation_froc": froc(cases, n_les, n),
            "validation_froc_output_level": froc(out_cases, n_les, n),
            "false_positives_counted": "reported findings (NodulePipeline.detections)"}


def _face_note(record: dict) -> str:
    """The card's words for the synthetic-face augmentation and an ONNX starting point."""
    out = ""
    if record.get("faces"):
        out += (f" A share {record['faces']:g} of the patches is cut as if the study ended at an axial plane "
                "0-10 voxels beyond the candidate (mirrored there, as the pipeline pads at a first or last slice).")
    if record.get("cut_sources"):
        out += (f" A share {record['cut_sources']:g} of the samples comes from the training region cut at axial "
                "planes, with the candidates the detector finds at the cut faces as negatives.")
    if record.get("small_share"):
        out += (f" A share {record['small_share']:g} of the nodules is drawn from 4-8 mm (log-uniform) instead of "
                "4-30 mm.")
    prev = record.get("fine_tuned_from") or {}
    if prev.get("version"):
        out += f" Fine-tuned from {prev.get('model')} {prev['version']} (weights recovered from its ONNX)."
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="training output folder (model.pt, train_info.json)")
    ap.add_argument("--ensemble-with", nargs="*", default=[],
                    help="further training output folders: the classifier is the mean logit of all the "
                         "networks (training.ct.networks.MeanLogit, one ONNX graph)")
    ap.add_argument("--cases-region", type=int, default=30)
    ap.add_argument("--cases-volume", type=int, default=15)
    ap.add_argument("--val-cases", type=int, default=10)
    ap.add_argument("--zoo", default=str(REPO / "models" / "zoo"))
    ap.add_argument("--version", default=VERSION)
    ap.add_argument("--second-stage", help="second_stage.json of training.ct.second_stage fit (its model goes "
                                           "into the card's extra.second_stage)")
    ap.add_argument("--max-logit", type=float, help="cap on the second stage's added logit (0: it can only lower "
                                                      "scores); stored in the card")
    ap.add_argument("--segmentation", choices=("blob-radius", "inscribed"), default="blob-radius",
                    help="segment_blob's opening: from the blob radius (1.6.0 and earlier) or from the mask's "
                         "inscribed radius (models.ct.blobs.INSCRIBED_OPENING); stored in the card's extra.segmentation")
    ap.add_argument("--measure-segmentation", choices=("same", "inscribed"), default="same",
                    help="measure reported findings on the mask that decided them (1.6.0 and earlier) or on their "
                         "own inscribed-radius segmentation (NodulePipeline.measure_segmentation); stored in the "
                         "card's extra.measurement_segmentation")
    ap.add_argument("--measurement-axes", choices=("voxel", "subvoxel"), default="voxel",
                    help="long/short axes from voxel extents (1.6.2 and earlier) or below the voxel size "
                         "(models.ct.findings.subvoxel_axes_mm); stored in the card's extra.measurement_axes")
    ap.add_argument("--reconstruction-offset", help="JSON of training.ct.reconstruction_offset (its "
                                                    "reconstruction_offset goes into the card's extra)")
    ap.add_argument("--touch-radius", type=float, default=0.0,
                    help="also suppress a candidate when a reported nodule lies within this many of its blob radii "
                         "(NodulePipeline.touch_radius); stored in the card's extra.duplicate_suppression")
    ap.add_argument("--recovered-from", help="the served model.onnx whose weights --ckpt holds (fpr_cnn_from_onnx); "
                                             "stated in the card")
    ap.add_argument("--validation-only", help="write the operating point and validation FROCs (choose_threshold) "
                                              "to this JSON file and stop: no held-out case is run")
    ap.add_argument("--results-only", help="write the metrics to this JSON file instead of a model version "
                                           "(the ONNX goes to a temporary folder)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    ck = Path(a.ckpt)
    ckpts = [ck, *(Path(p) for p in a.ensemble_with)]
    nets = []
    for c in ckpts:
        n = fpr_cnn()
        n.load_state_dict(torch.load(c / "model.pt", map_location="cpu"))
        nets.append(n)
    net = nets[0] if len(nets) == 1 else MeanLogit(nets)
    out_dir = Path(a.zoo) / MODEL_NAME / a.version
    if a.results_only:
        import tempfile

        out_dir = Path(tempfile.mkdtemp(prefix="fpr_eval_"))
    onnx_path = out_dir / "model.onnx"
    stage2 = json.loads(Path(a.second_stage).read_text()) if a.second_stage else None
    if stage2 and a.max_logit is not None:
        stage2["second_stage"]["max_logit"] = a.max_logit
    vs = nodule_volumes()
    tr = vs["train"]
    sample = candidate_patches(tr.vol.hu, np.array([[50.0, 60.0, 40.0], [30.0, 50.0, 80.0]]))[:, None]
    parity = export_onnx(net, onnx_path, 1, FPR_PATCH, sample)
    pipe = NodulePipeline(model=OrtModel(onnx_path, threads=1), threshold=0.5,
                          second_stage=SecondStage.from_dict(stage2["second_stage"]) if stage2 else None)
    pipe.version = a.version
    pipe.segmentation = dict(INSCRIBED_OPENING) if a.segmentation == "inscribed" else {}
    pipe.touch_radius = a.touch_radius
    pipe.measure_segmentation = dict(INSCRIBED_OPENING) if a.measure_segmentation == "inscribed" else None
    pipe.subvoxel_axes = a.measurement_axes == "subvoxel"
    recon = json.loads(Path(a.reconstruction_offset).read_text()) if a.reconstruction_offset else None
    if recon:
        pipe.reconstruction_offset = ReconstructionOffset.from_dict(recon["reconstruction_offset"])
    op = choose_threshold(pipe, list(validation_volumes(tr).values()), n_cases=a.val_cases)
    pipe.threshold = op["threshold"]
    if a.validation_only:
        Path(a.validation_only).write_text(json.dumps(op, indent=1, default=float))
        print(json.dumps({k: v for k, v in op.items() if k != "validation_froc"}, indent=1, default=float))
        return 0
    sets = {"heldout_region": (vs["heldout_region"], 10000), "heldout_volume": (vs["heldout_volume"], 20000)}
    res, measures = evaluate(pipe, sets, {"heldout_region": a.cases_region, "heldout_volume": a.cases_volume})
    if a.results_only:
        rec = {"version_evaluated": a.version, "checkpoint": str(ck), "ensemble_with": a.ensemble_with,
               "heldout_synthetic": res, "operating_point": op,
               "second_stage": stage2, "segmentation": pipe.segmentation,
               "touch_radius": pipe.touch_radius, "measurement_segmentation": pipe.measure_segmentation,
               "reconstruction_offset": recon, "measurement_axes": a.measurement_axes,
               "evaluated_by": "training/ct/evaluate_nodules.py --results-only"}
        Path(a.results_only).write_text(json.dumps(rec, indent=1, default=float))
        print(json.dumps(res, indent=1, default=float))
        return 0
    card = ModelCard(
        name=MODEL_NAME, version=a.version, task="ct-lung-nodule-candidate-classification",
        input={"name": "image", "size": FPR_PATCH, "channels": 1, "spacing_mm": [1.5, 1.5, 1.5],
               "orientation": WORK_ORIENTATION,
               "normalisation": "HU clipped to [-1000, 400] and scaled to [0, 1]; one 32^3 patch (48 mm) centred "
                                "on each candidate of models.ct.blobs.lung_candidates (mirrored at the volume "
                                "border), on the work grid reoriented to " + WORK_ORIENTATION},
        outputs={"logits": "[N, 1] nodule logit per candidate (sigmoid → probability)"},
        classes=["nodule"], thresholds={"nodule": pipe.threshold},
        training_data=("SYNTHETIC LESIONS IN ONE REAL PATIENT: positives = solid, part-solid and ground-glass "
                       "nodules (4-30 mm, lobulated, partial-volume edges) inserted into the real lungs of slices "
                       "0-99 of the TotalSegmentator contrast CT aortic crop (1.5 mm); negatives = the candidates "
                       "of models.ct.blobs.lung_candidates in that region (vessels, bifurcations, fissures, walls; "
                       "free-standing and wall-flattened passes); the region also as other reconstructions (3 mm "
                       "and 2 mm isotropic, 3 mm slices, soft kernel + noise, each resampled back to 1.5 mm); "
                       "flips, axis permutations, blur, contrast/offset, noise; online hard-negative mining."
                       + _face_note(training_record(ck)) +
                       " No real nodules were available; performance on real nodules is unmeasured."),
        metrics={
            "heldout_synthetic": res,
            "heldout_protocol": ("held-out inserted nodules: new random seeds (10000+, 20000+) and new locations, "
                                 "in a held-out region (slices >= 108 of the same crop) and a held-out volume (lung "
                                 "bases of another reconstruction, 3 mm resampled to 1.5 mm, real lobe masks); "
                                 "FROC over all blob candidates scored by the classifier; hit = candidate centre "
                                 "in the nodule mask or within its radius (LUNA16); operating threshold chosen on "
                                 "training-region validation cases only"),
            "real_data": "not measured: no labelled real nodule CT is available here",
        },
        sha256=sha256_file(onnx_path),
        extra={"export": parity, "training": training_record(ck),
               **({"ensemble": {"score": "mean logit of the networks (one ONNX graph)",
                                "members": [training_record(c) for c in ckpts]}} if len(ckpts) > 1 else {}),
               "operating_point": op,
               "candidates": {"floor": pipe.candidate_floor, "max_candidates": pipe.max_candidates,
                              "juxta_max": pipe.juxta_max, "work_orientation": WORK_ORIENTATION},
               "network": ("MONAI Convolution blocks 8-16-32-64 with max pooling, global average pooling, linear"
                           + (f"; {len(ckpts)} such networks, mean logit" if len(ckpts) > 1 else "")),
               "pipeline": "models.ct.blobs.lung_candidates (multiscale Hessian dot filter, free-standing and "
                           "wall-flattened passes, mirrored borders) → this classifier"
                           + (" + second stage (models.ct.candidate_features: Hessian shape, intensity, attachment, "
                              "lung-wall distance features; logistic regression logit added to the network's)"
                              if stage2 else "")
                           + (" + the study's reconstruction offset (models.ct.reconstruction: logit offset from "
                              "the image's edge gradient, fitted on validation by "
                              "training/ct/reconstruction_offset.py)" if recon else "")
                           + " → models.ct.blobs.segment_blob"
                           + (" (which candidates are reported) → models.ct.blobs.segment_blob with "
                              "extra.measurement_segmentation (what each finding is measured and exported on)"
                              if pipe.measure_segmentation is not None else ""),
               **({"second_stage": {**stage2["second_stage"],
                                    "fit": {k: v for k, v in stage2.items() if k != "second_stage"},
                                    "fitted_by": "training/ct/second_stage.py"}} if stage2 else {}),
               **({"segmentation": pipe.segmentation} if pipe.segmentation else {}),
               **({"duplicate_suppression": {"touch_radius": pipe.touch_radius}} if pipe.touch_radius else {}),
               **({"measurement_segmentation": pipe.measure_segmentation}
                  if pipe.measure_segmentation is not None else {}),
               **({"measurement_axes": "subvoxel"} if pipe.subvoxel_axes else {}),
               **({"reconstruction_offset": {**recon["reconstruction_offset"],
                                             "fit": {k: v for k, v in recon.items() if k != "reconstruction_offset"}}}
                  if recon else {}),
               **({"weights_recovered_from": a.recovered_from} if a.recovered_from else {}),
               "test_time_augmentation": ({"flipped_axes_zyx": [list(f) for f in TTA_FLIPS], "score": "mean logit"}
                                          if pipe.tta else None),
               "evaluated_by": "training/ct/evaluate_nodules.py"},
    )
    card.save(out_dir / "card.json")
    (ck / "eval_measures.json").write_text(json.dumps(measures, indent=1, default=float))
    print(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
