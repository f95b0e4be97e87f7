"""Multi-phase liver task: phases identified, registered to the portal-venous phase,
liver and lesions segmented (ONNX Runtime, registry model ``ct-liver-lesion-seg``), per
lesion size, HU in every phase and enhancement pattern (arterial hyperenhancement,
washout, enhancing capsule — LI-RADS v2018 major features, as descriptive measurements).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from models.ct.errors import PhaseError
from models.ct.findings import describe
from models.ct.phases import PhaseCall, identify
from models.ct.volume import CTVolume, resample, resample_mask

logger = logging.getLogger(__name__)

MODEL_NAME = "ct-liver-lesion-seg"
SPACING = (1.5, 1.5, 1.5)
PATCH = 64
STRIDE = 48
CHANNEL_PHASES = ("arterial", "portal-venous", "delayed")
HU_LO, HU_HI = -100.0, 300.0
# the network was trained on this array orientation (the training CT's NIfTI grid: rows
# anterior→posterior reversed, columns right→left reversed); every study is reoriented to it
WORK_ORIENTATION = "RAS"
BODY_HU = -300.0
APHE_HU = 20.0
WASHOUT_HU = 10.0
CAPSULE_HU = 15.0


def normalise(hu: np.ndarray) -> np.ndarray:
    """[-100, 300] HU → [0, 1] (shared by training and inference)."""
    return np.clip((hu - HU_LO) / (HU_HI - HU_LO), 0.0, 1.0).astype(np.float32)


def enhancement_pattern(lesion_hu: dict[str, float], liver_hu: dict[str, float],
                        rim_hu: dict[str, float]) -> dict[str, bool]:
    """Descriptive LI-RADS major features from mean HU per phase.

    - arterial hyperenhancement: lesion ≥ liver + 20 HU in the arterial phase;
    - washout: lesion ≤ liver − 10 HU in the portal-venous or delayed phase, after an
      arterial phase in which it enhanced (lesion gained ≥ 20 HU over non-contrast when
      available, else showed arterial hyperenhancement);
    - capsule: the 1.5–3 mm rim ≥ liver + 15 HU and ≥ lesion + 15 HU in portal/delayed.
    """
    def diff(ph, a, b):
        return a.get(ph, np.nan) - b.get(ph, np.nan)

    aphe = bool(diff("arterial", lesion_hu, liver_hu) >= APHE_HU)
    enhanced = aphe
    if "non-contrast" in lesion_hu and "arterial" in lesion_hu:
        enhanced = enhanced or lesion_hu["arterial"] - lesion_hu["non-contrast"] >= 20
    wash = bool(enhanced and any(diff(p, lesion_hu, liver_hu) <= -WASHOUT_HU for p in ("portal-venous", "delayed")))
    cap = bool(any(diff(p, rim_hu, liver_hu) >= CAPSULE_HU and diff(p, rim_hu, lesion_hu) >= CAPSULE_HU
                   for p in ("portal-venous", "delayed")))
    return {"arterial_hyperenhancement": aphe, "washout": wash, "capsule": cap}


SUBTYPES = ("cyst_like", "hcc_like", "hypoenhancing", "indeterminate_enhancing")
"""The lesion ``type`` values (coded in SR by ``dicom_node.codes.FINDING_SUBTYPES``)."""


def subtype(pattern: dict[str, bool], lesion_hu: dict[str, float]) -> str:
    """The lesion's descriptive subtype, one of :data:`SUBTYPES` (not LI-RADS, which needs
    the at-risk population)."""
    if all(abs(v) < 20 for v in lesion_hu.values()) or (
            "portal-venous" in lesion_hu and lesion_hu["portal-venous"] < 20):
        return "cyst_like"
    if pattern["arterial_hyperenhancement"] and (pattern["washout"] or pattern["capsule"]):
        return "hcc_like"
    if not pattern["arterial_hyperenhancement"]:
        return "hypoenhancing"
    return "indeterminate_enhancing"


def suggestion(pattern: dict[str, bool], long_axis_mm: float, lesion_hu: dict[str, float]) -> str:
    """The descriptive category shown to the reader, from :func:`subtype`."""
    kind = subtype(pattern, lesion_hu)
    if kind == "cyst_like":
        return "cyst-like (water attenuation, no enhancement)"
    if kind == "hcc_like":
        return "HCC-like features" + (" (>= 10 mm)" if long_axis_mm >= 10 else " (< 10 mm)")
    if kind == "hypoenhancing":
        return "hypo-enhancing lesion (metastasis-like or other)"
    return "indeterminate enhancing lesion"


@dataclass
class LiverInput:
    reference: CTVolume  # portal-venous (native grid)
    work: CTVolume  # reference resampled to 1.5 mm
    channels: np.ndarray  # (3, z, y, x) HU on the work grid (arterial, PV, delayed)
    phase_hu: dict[str, np.ndarray]  # every available phase on the work grid (registered)
    calls: list[PhaseCall]
    registration: dict[str, dict]
    windows: list[tuple[int, int, int]]
    transforms: dict | None = None  # phase → SimpleITK transform (reference point → phase point)
    series_uids: list[str] = field(default_factory=list)  # of the volumes, in the order of ``calls``


def _windows(shape) -> list[tuple[int, int, int]]:
    from models.ct.nodules import window_starts

    return [(z, y, x) for z in window_starts(shape[0], PATCH, STRIDE) for y in window_starts(shape[1], PATCH, STRIDE)
            for x in window_starts(shape[2], PATCH, STRIDE)]


class LiverPipeline:
    """``pre_process`` (phases + registration) → ``predict`` (ONNX) → ``post_process``."""

    name = MODEL_NAME

    def __init__(self, model=None, threshold: float = 0.5, min_diameter_mm: float = 5.0,
                 threads: int | None = None, register_phases: bool = True,
                 grow_threshold: float | None = None, min_peak: float | None = None,
                 min_in_liver: float | None = None, edge_pad: int = 0) -> None:
        self._model = model
        self.threshold = threshold
        self.grow_threshold = grow_threshold
        self.min_peak = min_peak
        self.min_in_liver = min_in_liver
        self.edge_pad = edge_pad
        self.min_diameter_mm = min_diameter_mm
        self.threads = threads
        self.register_phases = register_phases
        self.version = None

    @property
    def model(self):
        if self._model is None:
            from models.registry import Registry

            self._model, card = Registry().load(MODEL_NAME, threads=self.threads)
            self.version = card.version
            th = card.thresholds
            self.threshold = float(th.get("lesion", self.threshold))
            self.grow_threshold = th.get("lesion_grow", self.grow_threshold)
            self.min_peak = th.get("lesion_min_peak", self.min_peak)
            self.min_in_liver = th.get("lesion_min_in_liver", self.min_in_liver)
            self.edge_pad = int(card.input.get("edge_pad_slices", self.edge_pad))
            self.min_diameter_mm = float((card.extra or {}).get("lesion_min_diameter_mm", self.min_diameter_mm))
        return self._model

    def pre_process(self, vols: list[CTVolume]) -> LiverInput:
        from models.ct.registration import register

        calls = identify(vols)
        by_phase: dict[str, CTVolume] = {}
        for v, c in zip(vols, calls):
            if c.phase in by_phase:
                logger.info("two series called %s; keeping the first", c.phase)
                continue
            by_phase[c.phase] = v
        contrast = [p for p in CHANNEL_PHASES if p in by_phase]
        if not contrast:
            raise PhaseError(f"no contrast-enhanced phase among {len(vols)} series (found "
                             f"{[c.phase for c in calls]}); the liver task needs at least the portal-venous phase")
        ref_phase = "portal-venous" if "portal-venous" in by_phase else contrast[-1]
        ref = by_phase[ref_phase]
        work = canonical(resample(ref, SPACING))
        phase_hu: dict[str, np.ndarray] = {ref_phase: work.hu}
        reg_info: dict[str, dict] = {}
        transforms: dict = {}
        for ph, v in by_phase.items():
            if ph == ref_phase:
                continue
            if self.register_phases:
                r = register(ref, v)
                moved = r.moved
                transforms[ph] = r.transform
                reg_info[ph] = {"metric": r.metric, "parameters": list(r.transform.GetParameters())
                                if hasattr(r.transform, "GetParameters") else None}
            else:
                moved = v
            phase_hu[ph] = _onto(moved, work)
        chans = np.stack([phase_hu.get(p, phase_hu[ref_phase]) for p in CHANNEL_PHASES])
        return LiverInput(ref, work, chans, phase_hu, calls, reg_info, _windows([max(n, PATCH) for n in work.shape]),
                          transforms, [str(v.meta.get("series_instance_uid", "")) for v in vols])

    def predict(self, x: LiverInput, batch: int = 2) -> np.ndarray:
        """(2, z, y, x) probabilities: liver, lesion.  With ``edge_pad`` the first and last
        slices are mirrored ``edge_pad`` voxels outwards first, so that a lesion cut by the
        scan range is seen whole rather than against an empty border."""
        img = normalise(x.channels)
        e = int(self.edge_pad)
        if e:
            img = np.pad(img, [(0, 0), (min(e, img.shape[1] - 1),) * 2, (0, 0), (0, 0)], mode="reflect")
        pad = [(0, 0)] + [(0, max(0, PATCH - n)) for n in img.shape[1:]]
        img = np.pad(img, pad)
        windows = _windows(img.shape[1:]) if e else x.windows
        acc = np.zeros((2,) + img.shape[1:], np.float32)
        cnt = np.zeros(img.shape[1:], np.float32)
        from models.ct.nodules import _window_weight

        w = _window_weight()
        model = self.model
        name = model.input_names[0] if hasattr(model, "input_names") else "image"
        for i in range(0, len(windows), batch):
            ws = windows[i:i + batch]
            arr = np.stack([img[:, z:z + PATCH, y:y + PATCH, xx:xx + PATCH] for z, y, xx in ws])
            out = model.run({name: arr})
            logits = next(iter(out.values())) if isinstance(out, dict) else out[0]
            prob = 1.0 / (1.0 + np.exp(-logits))
            for (z, y, xx), p in zip(ws, prob):
                acc[:, z:z + PATCH, y:y + PATCH, xx:xx + PATCH] += p * w
                cnt[z:z + PATCH, y:y + PATCH, xx:xx + PATCH] += w
        prob = acc / np.maximum(cnt, 1e-6)
        s = x.work.shape
        z0 = min(e, s[0] - 1) if e else 0
        return prob[:, z0:z0 + s[0], :s[1], :s[2]]

    def segment(self, prob: np.ndarray, body: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(liver mask, lesion label map) on the work grid: ``liver_region`` then ``candidates``."""
        liver, near = liver_region(prob[0], body)
        lesions = self.candidates(prob[1], near, liver)
        liver = np.stack([ndimage.binary_fill_holes(sl) for sl in (liver | (lesions > 0))])
        return liver, lesions

    def candidates(self, lesion_prob: np.ndarray, near: np.ndarray, liver: np.ndarray | None = None) -> np.ndarray:
        """Lesion label map: components of probability ≥ ``threshold`` inside ``near``; with
        ``grow_threshold`` (hysteresis) each is the region ≥ ``grow_threshold`` connected to
        such seed voxels; components whose peak is below ``min_peak`` or whose
        volume-equivalent diameter is below ``min_diameter_mm`` are dropped; with
        ``min_in_liver`` (and ``liver``) also those of which less than that fraction lies in
        the liver or less than that fraction of the 1.5–4.5 mm shell around is liver (a
        liver lesion lies in the liver; adjacent hypodense structures — gallbladder, IVC,
        bowel — lie beside it)."""
        seeds = (lesion_prob >= self.threshold) & near
        if self.grow_threshold is not None and self.grow_threshold < self.threshold:
            lab, n = ndimage.label((lesion_prob >= self.grow_threshold) & near)
            hit = np.zeros(n + 1, bool)
            hit[np.unique(lab[seeds])] = True
            hit[0] = False
            lesion = hit[lab]
        else:
            lesion = seeds
        lab, n = ndimage.label(lesion)
        if not n:
            return np.zeros(lesion.shape, np.uint16)
        idx = np.arange(1, n + 1)
        count = ndimage.sum_labels(lesion, lab, idx)
        keep = (6 * count * float(np.prod(SPACING)) / np.pi) ** (1 / 3) >= self.min_diameter_mm
        if self.min_peak is not None:
            high = np.zeros(n + 1, bool)
            high[np.unique(lab[lesion_prob >= self.min_peak])] = True
            keep &= high[1:]
        if self.min_in_liver is not None and liver is not None:
            inside = ndimage.sum_labels(liver, lab, idx) / np.maximum(count, 1)
            keep &= inside >= self.min_in_liver
            for i, sl in enumerate(ndimage.find_objects(lab), start=1):
                if sl is None or not keep[i - 1]:
                    continue
                sl = tuple(slice(max(0, s.start - 3), min(dim, s.stop + 3)) for s, dim in zip(sl, lab.shape))
                m = lab[sl] == i
                ring = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m)
                keep[i - 1] = bool(ring.any()) and float(liver[sl][ring].mean()) >= self.min_in_liver
        new = np.zeros(n + 1, np.uint16)
        new[idx[keep]] = np.arange(1, int(keep.sum()) + 1)
        return new[lab]

    def post_process(self, prob: np.ndarray, x: LiverInput) -> dict[str, Any]:
        from models.ct.findings import grow

        liver, lesions = self.segment(prob, body_mask(x.work.hu))
        work = x.work
        findings = []
        occupied = lesions > 0
        for k, sl0 in enumerate(ndimage.find_objects(lesions), start=1):
            if sl0 is None:
                continue
            sl = grow(sl0, 12, lesions.shape)
            m = lesions[sl] == k
            off = [s.start for s in sl]
            d = describe(m, work.hu[sl], work, off)
            ring = ndimage.binary_dilation(m, iterations=2) & ~m
            bg = (ndimage.binary_dilation(m, iterations=10) & liver[sl]
                  & ~ndimage.binary_dilation(occupied[sl], iterations=3))
            les_hu = {p: round(float(a[sl][m].mean()), 1) for p, a in x.phase_hu.items()}
            liv_hu = {p: round(float(a[sl][bg].mean()), 1) for p, a in x.phase_hu.items()} if bg.any() else {}
            rim_hu = {p: round(float(a[sl][ring].mean()), 1) for p, a in x.phase_hu.items()}
            pat = enhancement_pattern(les_hu, liv_hu, rim_hu)
            d["centre_voxel_zyx"] = [round(float(v), 2) for v in x.reference.patient_to_voxel(d["centre_patient_mm"])]
            findings.append({"label": "liver lesion", "probability": round(float(prob[1][sl][m].max()), 4), **d,
                             "hu_by_phase": les_hu, "liver_hu_by_phase": liv_hu, "rim_hu_by_phase": rim_hu,
                             **pat, "type": subtype(pat, les_hu),
                             "category": suggestion(pat, d["long_axis_mm"], les_hu), "segment": None,
                             "mask_label": k})
        liver_ml = float(liver.sum() * np.prod(SPACING) / 1000)
        mask = resample_mask(lesions, work, x.reference) if findings else np.zeros(x.reference.shape, np.uint16)
        return {"task": "liver", "model": self.name, "version": self.version,
                "phases": [{"phase": c.phase, "source": c.source, "evidence": c.evidence, "series_uid": uid}
                           for c, uid in zip(x.calls, x.series_uids)],
                "reference_series_uid": str(x.reference.meta.get("series_instance_uid", "")),
                "registration": x.registration, "liver_volume_ml": round(liver_ml, 1),
                "n_lesions": len(findings), "findings": findings,
                "_mask": mask, "_liver": resample_mask(liver.astype(np.uint8), work, x.reference), "_prob": prob,
                "_planes": x.reference.meta.get("sop_instance_uids")}

    def __call__(self, vols: list[CTVolume]) -> dict[str, Any]:
        x = self.pre_process(vols)
        return self.post_process(self.predict(x), x)


def liver_region(liver_prob: np.ndarray, body: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(liver, where lesions may lie).  Liver = largest component of probability ≥ 0.5
    inside ``body``; lesions must lie inside the body within 3 voxels (4.5 mm) of the liver
    with its holes filled (in 3-D and per axial slice, so that a lesion the liver channel
    leaves out, also one cut by the first or last slice, still counts as inside)."""
    liver = liver_prob >= 0.5
    if body is not None:
        liver &= body
    lab, n = ndimage.label(liver)
    if n:
        sizes = ndimage.sum_labels(liver, lab, np.arange(1, n + 1))
        liver = lab == (int(np.argmax(sizes)) + 1)
    filled = ndimage.binary_fill_holes(liver) | np.stack([ndimage.binary_fill_holes(sl) for sl in liver])
    near = ndimage.binary_dilation(filled, iterations=3)
    if body is not None:
        near &= body
    return liver, near


def canonical(v: CTVolume) -> CTVolume:
    """The volume with its array axes permuted/flipped to ``WORK_ORIENTATION`` (same
    physical grid points; SimpleITK DICOMOrient), the orientation the network learnt."""
    import SimpleITK as sitk

    img = v.to_sitk()
    if sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(img.GetDirection()) == WORK_ORIENTATION:
        return v
    return CTVolume.from_sitk(sitk.DICOMOrient(img, WORK_ORIENTATION), v.meta)


def body_mask(hu: np.ndarray, level: float = BODY_HU) -> np.ndarray:
    """The patient: largest 3-D component above ``level`` HU, holes filled per axial slice
    (excludes outside air, the table's separate parts and noise outside the body)."""
    m = hu > level
    lab, n = ndimage.label(m)
    if not n:
        return m
    sizes = ndimage.sum_labels(m, lab, np.arange(1, n + 1))
    m = lab == (int(np.argmax(sizes)) + 1)
    return np.stack([ndimage.binary_fill_holes(sl) for sl in m])


def _onto(v: CTVolume, ref: CTVolume) -> np.ndarray:
    """Resample ``v`` onto ``ref``'s grid (linear, nearest extrapolation)."""
    import SimpleITK as sitk

    out = sitk.Resample(v.to_sitk(), ref.to_sitk(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32,
                        useNearestNeighborExtrapolator=True)
    return sitk.GetArrayFromImage(out)
