"""Lung-nodule task: chest CT → nodules with measurements and a Lung-RADS-style category.

Two-stage CAD (as LUNA16 systems): ``pre_process``: resample to 1.5 mm isotropic, lung
mask (HU threshold; real lobe masks optional), blob candidates from a multiscale Hessian
dot-enhancement filter on the (dilated) lungs (:mod:`models.ct.blobs`).  ``predict``: the
false-positive-reduction classifier (ONNX Runtime, registry model ``ct-nodule-fpr``) on a
32³ patch around each candidate → nodule logit; when the card has a second stage
(``extra.second_stage``, :mod:`models.ct.candidate_features`: Hessian shape, intensity,
attachment and lung-wall features → a small numpy network) its logit is added → nodule
probability.  ``post_process``: candidates with
probability ≥ the card's threshold are segmented inside a sphere sized from the blob
scale (threshold halfway between nodule and lung level, opening to cut vessels,
ground-glass halo test for part-solid nodules), de-duplicated and measured: centre,
long/short axis, volume, mean HU, type (solid / part-solid / ground-glass from the
solid-component fraction), solid-core size, lobe and Lung-RADS v2022 category
suggestion; the label mask on the original grid.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.ct.blobs import Candidate, closed_lungs, lung_candidates, segment_blob
from models.ct.candidate_features import FEATURE_NAMES, SecondStage, candidate_features
from models.ct.findings import describe, subvoxel_axes_mm
from models.ct.lungs import approximate_lobe, lung_mask
from models.ct.reconstruction import ReconstructionOffset, describe_reconstruction, edge_gradient
from models.ct.volume import CTVolume, mask_box, resample, resample_mask

logger = logging.getLogger(__name__)

MODEL_NAME = "ct-nodule-fpr"
MAX_CANDIDATES = 1500
CANDIDATE_FLOOR = 4.0
JUXTA_MAX = 300  # wall-flattened (juxtapleural) candidates per study, see models.ct.blobs.lung_candidates
# array orientation of the work grid: the FPR classifier's training CT (and axial DICOM) is
# LPS (columns → patient left, rows → posterior, slices → head); a study in another
# orientation (e.g. a RAS NIfTI) is reoriented to it so the network sees what it learnt
WORK_ORIENTATION = "LPS"
TTA_FLIPS = ((), (2,), (1,), (0,))  # flipped axes (z, y, x) of the classifier's test-time augmentation
SPACING = (1.5, 1.5, 1.5)
PATCH = 64
STRIDE = 48
HU_LO, HU_HI = -1000.0, 400.0
SOLID_HU = -300.0  # voxels above this are the solid component (Lung-RADS "solid" part)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function in float64 (numerically stable for large |z|)."""
    z = np.asarray(z, np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def normalise(hu: np.ndarray) -> np.ndarray:
    """Network input scaling shared by training and inference: [-1000, 400] HU → [0, 1]."""
    return np.clip((hu - HU_LO) / (HU_HI - HU_LO), 0.0, 1.0).astype(np.float32)


FPR_PATCH = 32  # candidate patch of the false-positive-reduction classifier (48 mm at 1.5 mm)


def cut_patches(arr: np.ndarray, centres: np.ndarray, size: int = FPR_PATCH, empty: float = HU_LO) -> np.ndarray:
    """``[N, size, size, size]`` float32 cuts of ``arr`` centred on rounded voxel ``centres``
    (mirrored at the volume border; ``empty`` where a centre lies outside the volume)."""
    out = np.empty((len(centres), size, size, size), np.float32)
    shape = np.asarray(arr.shape)
    for i, c in enumerate(np.asarray(centres, float).reshape(-1, 3)):
        lo = np.round(c).astype(int) - size // 2
        hi = lo + size
        a = np.clip(lo, 0, shape)
        b = np.clip(hi, 0, shape)
        sub = arr[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        pad = [(int(x - y), int(z - w)) for x, y, z, w in zip(a, lo, hi, b)]
        if sub.size == 0:
            out[i] = empty
            continue
        if any(p != (0, 0) for p in pad):
            sub = np.pad(sub, pad, mode="symmetric")
        out[i] = sub
    return out


def candidate_patches(hu: np.ndarray, centres: np.ndarray, size: int = FPR_PATCH) -> np.ndarray:
    """``[N, size, size, size]`` normalised patches centred on rounded voxel ``centres``
    (mirrored at the volume border, so a nodule cut by the first or last slice shows as a
    whole one); shared by training and inference."""
    return normalise(cut_patches(hu, centres, size))


def window_starts(n: int, patch: int = PATCH, stride: int = STRIDE) -> list[int]:
    """Start indices of windows covering ``n`` voxels (last window flush with the end)."""
    if n <= patch:
        return [0]
    starts = list(range(0, n - patch, stride))
    starts.append(n - patch)
    return sorted(set(starts))


def nodule_type(hu_values: np.ndarray) -> tuple[str, float]:
    """Type from the fraction of voxels above -300 HU: ≥ 0.5 solid, ≤ 0.05 ground-glass,
    else part-solid.  Returns (type, solid fraction)."""
    frac = float(np.mean(hu_values > SOLID_HU)) if hu_values.size else 0.0
    if frac >= 0.5:
        return "solid", frac
    if frac <= 0.05:
        return "ground-glass", frac
    return "part-solid", frac


def lung_rads(kind: str, diameter_mm: float, solid_mm: float) -> str:
    """Lung-RADS v2022 baseline category suggestion from type and mean diameter (mm).

    solid: < 6 → 2, 6–< 8 → 3, 8–< 15 → 4A, ≥ 15 → 4B; part-solid: < 6 → 2, solid part
    < 6 → 3, 6–< 8 → 4A, ≥ 8 → 4B; ground-glass: < 30 → 2, ≥ 30 → 3.
    """
    if kind == "solid":
        return "2" if diameter_mm < 6 else "3" if diameter_mm < 8 else "4A" if diameter_mm < 15 else "4B"
    if kind == "part-solid":
        if diameter_mm < 6:
            return "2"
        return "3" if solid_mm < 6 else "4A" if solid_mm < 8 else "4B"
    return "2" if diameter_mm < 30 else "3"


@dataclass
class NoduleInput:
    volume: CTVolume  # original
    work: CTVolume  # resampled 1.5 mm
    lungs: np.ndarray  # on work grid
    box: tuple[slice, slice, slice]
    lobes: np.ndarray | None = None  # optional real lobe label map on the work grid
    candidates: list[Candidate] = field(default_factory=list)  # work-grid voxel centres
    # set by predict_logit: the network's (and second stage's) logits before the reconstruction
    # offset, the study's edge gradient and the offset added (0 without a ReconstructionOffset)
    network_logits: np.ndarray | None = None
    edge_gradient: float | None = None
    score_offset: float = 0.0


def _touches(label_map: np.ndarray, zyx, radius_mm: float, spacing) -> bool:
    """Whether a labelled voxel lies within ``radius_mm`` of ``zyx`` (voxel coordinates)."""
    ball, sl = sphere_mask(zyx, radius_mm, spacing, label_map.shape)
    return bool((label_map[sl][ball] > 0).any())


class NodulePipeline:
    """``pre_process → predict → post_process``; only ``predict`` touches ONNX Runtime.

    ``pre_process``: 1.5 mm grid, lungs, blob candidates (:func:`models.ct.blobs.detect`).
    ``predict``: nodule probability of each candidate from the false-positive-reduction
    classifier (registry model ``ct-nodule-fpr``, 32³ patches).  ``post_process``:
    candidates with probability ≥ ``threshold`` are segmented
    (:func:`models.ct.blobs.segment_blob`), de-duplicated and measured.
    """

    name = MODEL_NAME

    def __init__(self, model=None, threshold: float = 0.5, min_diameter_mm: float = 3.0,
                 threads: int | None = None, max_candidates: int = MAX_CANDIDATES,
                 candidate_floor: float = CANDIDATE_FLOOR, tta: bool = True,
                 juxta_max: int = JUXTA_MAX, second_stage: SecondStage | None = None,
                 segmentation: dict | None = None, touch_radius: float = 0.0,
                 measure_segmentation: dict | None = None,
                 reconstruction_offset: ReconstructionOffset | None = None,
                 subvoxel_axes: bool = False) -> None:
        # measure long/short axes below the voxel size (models.ct.findings.subvoxel_axes_mm; from
        # the card's extra.measurement_axes == "subvoxel")
        self.subvoxel_axes = subvoxel_axes
        # a per-study logit offset for soft / thick reconstructions estimated from the image
        # (models.ct.reconstruction; from the card's extra.reconstruction_offset)
        self.reconstruction_offset = reconstruction_offset
        self.juxta_max = juxta_max
        # keyword options of segment_blob (set from the card's extra.segmentation when the
        # registry loads: a card's numbers were measured with its own segmentation)
        self.segmentation = dict(segmentation or {})
        # > 0: a candidate is also a duplicate when a reported nodule lies within this many
        # of its blob radii of its centre (from the card's extra.duplicate_suppression)
        self.touch_radius = float(touch_radius)
        # None: a finding is measured (and exported) on the mask that decided which candidates
        # are reported; else the keyword options of segment_blob for a separate measurement mask
        # (card extra.measurement_segmentation): which findings are reported, and so the FROC and
        # the operating point, do not change, only their masks and sizes
        self.measure_segmentation = None if measure_segmentation is None else dict(measure_segmentation)
        self.second_stage = second_stage  # set from the card's extra.second_stage when the registry loads
        self._model = model
        self.tta = tta
        self.threshold = threshold
        self.min_diameter_mm = min_diameter_mm
        self.threads = threads
        self.max_candidates = max_candidates
        self.candidate_floor = candidate_floor
        self.version = getattr(model, "version", None)

    @property
    def model(self):
        if self._model is None:
            from models.registry import Registry

            self._model, card = Registry().load(MODEL_NAME, threads=self.threads)
            self.apply_card(card)
        return self._model

    def apply_card(self, card) -> None:
        """Run as ``card`` was measured: its version, threshold, second stage, segmentation
        options and duplicate suppression."""
        self.version = card.version
        self.threshold = float(card.thresholds.get("nodule", self.threshold))
        st = card.extra.get("second_stage")
        self.second_stage = SecondStage.from_dict(st) if st else None
        self.segmentation = dict(card.extra.get("segmentation") or {})
        self.touch_radius = float((card.extra.get("duplicate_suppression") or {}).get("touch_radius", 0.0))
        ro = card.extra.get("reconstruction_offset")
        self.reconstruction_offset = ReconstructionOffset.from_dict(ro) if ro else None
        ms = card.extra.get("measurement_segmentation")
        self.measure_segmentation = None if ms is None else dict(ms)
        self.subvoxel_axes = card.extra.get("measurement_axes") == "subvoxel"

    def measurement_mask(self, x: NoduleInput, i: int, m: np.ndarray, sl: tuple, hull: np.ndarray,
                         taken: np.ndarray | None = None, info: dict | None = None) -> tuple[np.ndarray, tuple]:
        """The mask a reported candidate ``i`` is measured on: ``(m, sl)`` from
        :meth:`detections`, or with ``measure_segmentation`` set its own segmentation with those
        options, less voxels already ``taken`` by earlier findings (falls back to ``m`` when
        that leaves nothing).  ``info`` receives the segmentation's HU ``level``."""
        c = x.candidates[i]
        if self.measure_segmentation is None:
            if info is not None:  # the level of the deciding segmentation
                segment_blob(x.work.hu, c.zyx, c.radius_mm, x.work.spacing, hull, **self.segmentation, info=info)
            return m, sl
        m2, sl2 = segment_blob(x.work.hu, c.zyx, c.radius_mm, x.work.spacing, hull, **self.measure_segmentation,
                               info=info)
        if taken is not None and m2.any():
            m2 = m2 & (taken[sl2] == 0)
        if not m2.any() and info is not None:
            info["level"] = None  # measured on the deciding mask, whose level is not this one
        return (m2, sl2) if m2.any() else (m, sl)

    def pre_process(self, vol: CTVolume, lungs: np.ndarray | None = None,
                    lobes: np.ndarray | None = None) -> NoduleInput:
        """``lungs``/``lobes`` (optional) are on ``vol``'s grid; lobes use 1..5 = LOBES order.
        Lungs: ``lungs`` if given, else the union of ``lobes`` if given, else :func:`lung_mask`."""
        work = canonical(resample(vol, SPACING, order=1))
        lb = resample_mask(lobes.astype(np.uint8), vol, work) if lobes is not None else None
        if lungs is not None:
            lm = resample_mask(lungs.astype(np.uint8), vol, work) > 0
        elif lb is not None and lb.any():  # real lobe masks define the lungs
            lm = lb > 0
        else:
            lm = lung_mask(work.hu, work.spacing)
        if not lm.any():
            from models.ct.errors import CTError

            raise CTError("no lung found in the series (is it a chest CT?)")
        box = mask_box(lm, 6)
        lo = [b.start for b in box]
        cands = lung_candidates(work.hu[box], work.spacing, lm[box], floor=self.candidate_floor,
                                max_candidates=self.max_candidates, juxta_max=self.juxta_max)
        for c in cands:
            c.zyx = tuple(float(v + o) for v, o in zip(c.zyx, lo))
        return NoduleInput(vol, work, lm, box, lb, cands)  # type: ignore[arg-type]

    def predict(self, x: NoduleInput, batch: int = 64) -> np.ndarray:
        """Nodule probability of each candidate (``x.candidates`` order, float64: a float32
        sigmoid is exactly 1 above logit ≈ 17 and would tie the top candidates)."""
        return sigmoid(self.predict_logit(x, batch))

    def predict_logit(self, x: NoduleInput, batch: int = 64) -> np.ndarray:
        """Nodule logit of each candidate: the network's mean logit over the test-time
        flips, plus the second stage's logit when the card has one
        (:mod:`models.ct.candidate_features`), plus the study's reconstruction offset when
        the card has one (:mod:`models.ct.reconstruction`; the same for every candidate of
        the study).  The FROC ranks candidates by it."""
        logits, feats = self.predict_parts(x, batch)
        z = logits.mean(1).astype(np.float64) if logits.size else np.zeros(0, np.float64)
        if self.second_stage is not None and len(z):
            z = self.second_stage.combined_logit(feats).astype(np.float64)
        x.network_logits = z
        if self.reconstruction_offset is not None:
            x.edge_gradient = edge_gradient(x.work.hu, x.lungs, x.work.spacing)
            x.score_offset = self.reconstruction_offset(x.edge_gradient)
            z = z + x.score_offset
        return z

    def predict_parts(self, x: NoduleInput, batch: int = 64, features: bool | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """(``[N, flips]`` network logits, ``[N, F]`` candidate features or None).
        ``features``: compute them (default: when a second stage is loaded)."""
        model = self.model
        flips = TTA_FLIPS if self.tta else ((),)
        if features is None:
            features = self.second_stage is not None
        if not x.candidates:
            return np.zeros((0, len(flips)), np.float32), (np.zeros((0, len(FEATURE_NAMES)), np.float32)
                                                           if features else None)
        name = getattr(model, "input_names", ["image"])[0] if hasattr(model, "input_names") else "image"
        centres = np.array([c.zyx for c in x.candidates])
        out, feats = [], []
        for i in range(0, len(centres), batch):
            arr = candidate_patches(x.work.hu, centres[i:i + batch])[:, None]
            lg = np.zeros((len(arr), len(flips)), np.float32)
            for j, axes in enumerate(flips):  # test-time augmentation: mean logit over flips
                a = np.ascontiguousarray(np.flip(arr, tuple(ax + 2 for ax in axes))) if axes else arr
                res = model.run({name: a})
                logits = next(iter(res.values())) if isinstance(res, dict) else res[0]
                lg[:, j] = np.asarray(logits, np.float32).reshape(-1)
            out.append(lg)
            if features:
                cs = x.candidates[i:i + batch]
                lungs = cut_patches(x.lungs.astype(np.float32), centres[i:i + batch], FPR_PATCH, 0.0)
                feats.append(candidate_features(
                    arr[:, 0], lungs, centres[i:i + batch], x.work.shape,
                    np.array([c.radius_mm for c in cs]), np.array([c.sigma_mm for c in cs]),
                    np.array([c.response for c in cs]), np.array([c.source == "juxta" for c in cs]), lg,
                    float(np.mean(x.work.spacing))))
        return np.concatenate(out), (np.concatenate(feats) if features else None)

    def segment(self, x: NoduleInput, hull: np.ndarray | None = None) -> list[tuple[int, np.ndarray, tuple]]:
        """(candidate index, mask, box) of each candidate (all of them, for evaluation)."""
        if hull is None:
            hull = self.lung_hull(x)
        return [(i, *segment_blob(x.work.hu, c.zyx, c.radius_mm, x.work.spacing, hull, **self.segmentation))
                for i, c in enumerate(x.candidates)]

    def lung_hull(self, x: NoduleInput) -> np.ndarray:
        """Where a nodule may be segmented: the lungs closed with a 9 mm ball (wall nodules in)."""
        return closed_lungs(x.lungs, x.work.spacing) | x.lungs

    def detections(self, score: np.ndarray, x: NoduleInput, threshold: float | None = None,
                   hull: np.ndarray | None = None):
        """The candidates the task reports, in descending ``score`` order, as
        ``(candidate index, mask, box, label map)``: those scoring at least ``threshold``
        (None: all of them), segmented, less those whose centre lies in a nodule already
        reported or whose mask mostly does (a second candidate on the same nodule), with
        ``touch_radius`` > 0 also those with a reported nodule within that many blob radii of
        their centre, and those smaller than ``min_diameter_mm``.  ``post_process`` reports these at the card's
        threshold; the evaluation's FROC ranks all of them (the task's output at every
        threshold: a candidate is only ever suppressed by higher-scoring ones)."""
        work = x.work
        hull = self.lung_hull(x) if hull is None else hull
        label_map = np.zeros(work.shape, np.uint16)
        k = 0
        for i in np.argsort(-np.asarray(score), kind="stable"):
            if threshold is not None and score[i] < threshold:
                break
            c = x.candidates[i]
            cz0 = tuple(int(v) for v in np.clip(np.round(c.zyx), 0, np.asarray(work.shape) - 1))
            if label_map[cz0] > 0:  # a second candidate on a nodule already reported
                continue
            if self.touch_radius > 0 and _touches(label_map, c.zyx, self.touch_radius * c.radius_mm, work.spacing):
                continue  # its blob touches a reported nodule: an edge, lobulation or vessel stub of it
            m, sl = segment_blob(work.hu, c.zyx, c.radius_mm, work.spacing, hull, **self.segmentation)
            if not m.any():
                m, sl = sphere_mask(c.zyx, c.radius_mm, work.spacing, work.shape)
            if (label_map[sl][m] > 0).mean() > 0.3:
                continue
            m = m & (label_map[sl] == 0)
            vol_mm3 = float(m.sum()) * work.voxel_volume_mm3
            if (6 * vol_mm3 / np.pi) ** (1 / 3) < self.min_diameter_mm:
                continue
            k += 1
            label_map[sl][m] = k
            yield int(i), m, sl, label_map

    def post_process(self, prob: np.ndarray, x: NoduleInput) -> dict[str, Any]:
        work = x.work
        from models.ct.lungs import LOBES, lung_extent

        extent = lung_extent(x.lungs)
        findings = []
        label_map = np.zeros(work.shape, np.uint16)  # the reported masks (measurement masks when set)
        hull = self.lung_hull(x)
        for i, m, sl, _ in self.detections(prob, x, self.threshold, hull):
            k = len(findings) + 1
            info: dict = {}
            m, sl = self.measurement_mask(x, i, m, sl, hull, label_map, info if self.subvoxel_axes else None)
            label_map[sl][m] = k
            off = [s.start for s in sl]
            h = work.hu[sl]
            d = describe(m, h, work, off)
            if self.subvoxel_axes and info.get("level") is not None:
                la, sa = subvoxel_axes_mm(m, h, info["level"], work.spacing)
                d["long_axis_mm"], d["short_axis_mm"] = round(la, 1), round(sa, 1)
            kind, frac = nodule_type(h[m])
            solid = m & (h > SOLID_HU)
            solid_mm = float((6 * solid.sum() * work.voxel_volume_mm3 / np.pi) ** (1 / 3)) if solid.any() else 0.0
            mean_d = (d["long_axis_mm"] + d["short_axis_mm"]) / 2
            cz = tuple(int(v) for v in np.clip(np.round(d["centre_voxel_zyx"]), 0, np.asarray(work.shape) - 1))
            if x.lobes is not None and x.lobes[cz] > 0:
                lobe = LOBES[int(x.lobes[cz]) - 1]
            else:
                lobe = approximate_lobe(np.asarray(cz), x.lungs, work.direction, extent)
            d["centre_voxel_zyx"] = [round(float(v), 2) for v in x.volume.patient_to_voxel(d["centre_patient_mm"])]
            findings.append({
                "label": "lung nodule", "probability": round(float(prob[i]), 4),
                **({"network_probability": round(float(sigmoid(x.network_logits[i])), 4)}
                   if self.reconstruction_offset is not None and x.network_logits is not None else {}), **d,
                "mean_diameter_mm": round(mean_d, 1), "type": kind, "solid_fraction": round(frac, 3),
                "solid_component_mm": round(solid_mm if kind != "ground-glass" else 0.0, 1),
                "lobe": lobe, "category": "Lung-RADS " + lung_rads(kind, mean_d, solid_mm), "mask_label": k,
            })
        mask = resample_mask(label_map, work, x.volume) if findings else np.zeros(x.volume.shape, np.uint16)
        if x.edge_gradient is None:
            x.edge_gradient = edge_gradient(work.hu, x.lungs, work.spacing)
        recon, warnings = describe_reconstruction(x.edge_gradient, x.volume.spacing,
                                                  x.volume.meta.get("slice_thickness"))
        if self.reconstruction_offset is not None:
            recon["score_offset"] = round(x.score_offset, 3)
        cats = [f["category"].split()[-1] for f in findings]
        order_c = ["2", "3", "4A", "4B", "4X"]
        overall = max(cats, key=order_c.index) if cats else "1"
        return {"task": "ct-nodule", "model": self.name, "version": self.version, "n_nodules": len(findings),
                "n_candidates": len(x.candidates), "lung_rads_suggestion": overall, "findings": findings,
                "reconstruction": recon, "warnings": warnings,
                "_mask": mask, "_work_labels": label_map, "_planes": x.volume.meta.get("sop_instance_uids")}

    def __call__(self, vol: CTVolume, lungs: np.ndarray | None = None, lobes: np.ndarray | None = None
                 ) -> dict[str, Any]:
        x = self.pre_process(vol, lungs, lobes)
        return self.post_process(self.predict(x), x)


def canonical(v: CTVolume, code: str = WORK_ORIENTATION) -> CTVolume:
    """``v`` with its array axes permuted/flipped to ``code`` (the same physical grid points;
    SimpleITK DICOMOrient); returned unchanged when already so."""
    import SimpleITK as sitk

    img = v.to_sitk()
    if sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(img.GetDirection()) == code:
        return v
    return CTVolume.from_sitk(sitk.DICOMOrient(img, code), v.meta)


def sphere_mask(zyx, radius_mm: float, spacing, shape) -> tuple[np.ndarray, tuple[slice, ...]]:
    """A ball of ``radius_mm`` at voxel ``zyx`` (fallback mask when segmentation finds nothing)."""
    sp = np.asarray(spacing, float)
    c = np.asarray(zyx, float)
    half = np.ceil(radius_mm / sp).astype(int) + 1
    lo = np.maximum(np.round(c).astype(int) - half, 0)
    hi = np.minimum(np.round(c).astype(int) + half + 1, shape)
    g = np.meshgrid(*[(np.arange(a, b) - cc) * s for a, b, cc, s in zip(lo, hi, c, sp)], indexing="ij")
    return sum(v * v for v in g) <= radius_mm ** 2, tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _window_weight() -> np.ndarray:
    """Separable taper so window borders count less when windows overlap."""
    t = np.minimum(np.arange(PATCH) + 1, PATCH - np.arange(PATCH)).astype(np.float32)
    t = np.minimum(t / 8.0, 1.0)
    return t[:, None, None] * t[None, :, None] * t[None, None, :]
