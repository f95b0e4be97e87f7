"""Numpy post-processing of the chest X-ray networks: probability maps -> findings.

For each class whose image-level probability reaches its operating point, the class
probability map is thresholded (absolute threshold, or half its peak when that is higher
so a positive class always yields a region), split into connected regions, and each
region becomes a finding with a box and contour in *source* pixels (exact letterbox
inverse, :meth:`models.geometry.Letterbox.to_source`), a laterality and a zone read from
the lung-field mask, and a plausibility check: a finding must overlap the (slightly
dilated) lung fields, else it is dropped and logged.

Conventions: frontal radiographs are displayed as if facing the patient, so the
patient's right is on the image left (PA and AP). Zones split each lung's
apex-to-base extent in thirds (upper/middle/lower).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from models.cxr.preprocess import CLASSES
from models.geometry import Letterbox

logger = logging.getLogger(__name__)

SEG_THRESHOLD = 0.5
MAX_REGIONS_PER_CLASS = 3
MIN_REGION_PX = 4  # model-grid pixels
LUNG_MARGIN_PX = 8  # dilation of the lung fields for the plausibility check (model px)
MIN_LUNG_OVERLAP = 0.2
MIN_LUNG_FRACTION = 0.03  # of the image content; below: no lung fields found


@dataclass
class Finding:
    """One finding in source-pixel coordinates."""

    label: str
    probability: float
    box: list[float]
    contour: list[list[float]]
    laterality: str
    zone: str

    def to_dict(self) -> dict:
        """JSON-ready dict (the ``medws infer cxr`` contract)."""
        return {
            "label": self.label,
            "probability": round(float(self.probability), 4),
            "box": [round(float(v), 1) for v in self.box],
            "contour": [[round(float(x), 1), round(float(y), 1)] for x, y in self.contour],
            "laterality": self.laterality,
            "zone": self.zone,
        }


@dataclass
class LungFields:
    """Lung-field mask on the model grid, split into the patient's right and left lung."""

    mask: np.ndarray
    right: np.ndarray  # patient's right lung = image left
    left: np.ndarray
    midline_x: float

    @property
    def found(self) -> bool:
        """Whether any lung field was segmented."""
        return bool(self.mask.any())


@dataclass
class CxrFindings:
    """Post-processed result for one radiograph."""

    abnormality: float
    scores: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    dropped: int = 0


def upsample(prob: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (h, w) stride-k probability map to (size, size), pixel-centre aligned."""
    if prob.shape == (size, size):
        return prob.astype(np.float32)
    img = Image.fromarray(np.ascontiguousarray(prob, dtype=np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def lung_fields(lung_prob: np.ndarray, threshold: float = 0.5) -> LungFields:
    """Split the lung probability map into the two lungs (largest components, by side)."""
    mask = lung_prob >= threshold
    lab, n = ndi.label(mask)
    size = mask.shape[1]
    if n == 0:
        empty = np.zeros_like(mask)
        return LungFields(mask, empty, empty.copy(), size / 2.0)
    sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1]
    keep = [k + 1 for k in order[:2] if sizes[k] >= 0.15 * sizes.max()]
    comps = sorted((lab == k for k in keep), key=lambda m: np.nonzero(m)[1].mean())
    clean = np.zeros_like(mask)
    for c in comps:
        clean |= c
    if len(comps) == 2:
        right, left = comps
        mid = (np.nonzero(right)[1].max() + np.nonzero(left)[1].min()) / 2.0
    else:
        xs = np.nonzero(clean)[1]
        mid = size / 2.0
        right = clean & (np.arange(size)[None, :] < mid) if xs.mean() < mid else np.zeros_like(clean)
        left = clean & ~right
    return LungFields(clean, right, left, float(mid))


def laterality(region: np.ndarray, lungs: LungFields) -> str:
    """``"right"``, ``"left"`` or ``"bilateral"`` (patient's side; image left = patient right)."""
    xs = np.nonzero(region)[1] + 0.5
    if xs.size == 0:
        return "bilateral"
    right_frac = float(np.mean(xs < lungs.midline_x))
    if 0.2 <= right_frac <= 0.8:
        return "bilateral"
    return "right" if right_frac > 0.5 else "left"


def zone(region: np.ndarray, lungs: LungFields, side: str) -> str:
    """``"upper"``, ``"middle"`` or ``"lower"`` by the region centroid within the lung's height."""
    ref = {"right": lungs.right, "left": lungs.left}.get(side, lungs.mask)
    if not ref.any():
        ref = lungs.mask if lungs.found else np.ones_like(region)
    rows = np.nonzero(ref)[0]
    top, bottom = rows.min(), rows.max() + 1
    cy = float(np.nonzero(region)[0].mean()) + 0.5
    t = (cy - top) / max(bottom - top, 1)
    return "upper" if t < 1 / 3 else ("middle" if t < 2 / 3 else "lower")


def region_contour(region: np.ndarray) -> np.ndarray:
    """Outer contour of a binary region as (N, 2) continuous model-pixel (x, y) points."""
    from skimage.measure import find_contours

    padded = np.pad(region.astype(np.float32), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        ys, xs = np.nonzero(region)
        return np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], dtype=np.float64)
    c = max(contours, key=len)
    # find_contours gives (row, col) in padded index space: pixel centres are at +0.5
    return np.stack([c[:, 1] - 1 + 0.5, c[:, 0] - 1 + 0.5], axis=1)


def _simplify(points: np.ndarray, max_points: int = 64) -> np.ndarray:
    if len(points) <= max_points:
        return points
    idx = np.linspace(0, len(points) - 1, max_points).round().astype(int)
    return points[idx]


def post_process(
    scores: np.ndarray,
    abnormality: float,
    seg: np.ndarray,
    lung_prob: np.ndarray,
    geometry: Letterbox,
    thresholds: dict[str, float],
    seg_threshold: float = SEG_THRESHOLD,
) -> CxrFindings:
    """Turn network outputs (one image) into findings in source-pixel coordinates.

    Parameters
    ----------
    scores : (5,) class probabilities; abnormality : float
    seg : (5, h, w) per-class probability maps on the model grid (any stride)
    lung_prob : (S, S) lung-field probability on the model grid
    geometry : letterbox of this image; thresholds : class -> operating point
    """
    size = geometry.size
    lungs = lung_fields(upsample(lung_prob, size))
    near_lung = ndi.binary_dilation(lungs.mask, iterations=LUNG_MARGIN_PX) if lungs.found else None
    result = CxrFindings(float(abnormality), {c: float(s) for c, s in zip(CLASSES, scores)})
    for ci, cls in enumerate(CLASSES):
        score = float(scores[ci])
        if score < thresholds.get(cls, 0.5):
            continue
        prob = upsample(seg[ci], size)
        peak = float(prob.max())
        region_all = prob >= max(min(seg_threshold, 0.5 * peak), 1e-6)
        lab, n = ndi.label(region_all)
        if n == 0:
            continue
        # per-region maximum over each region's bounding box (ndi.maximum sorts the whole map)
        peaks = np.array([float(prob[sl][lab[sl] == i + 1].max()) for i, sl in enumerate(ndi.find_objects(lab))])
        areas = ndi.sum(region_all, lab, index=np.arange(1, n + 1))
        order = [k for k in np.argsort(peaks)[::-1] if areas[k] >= MIN_REGION_PX or peaks[k] == peak]
        for k in order[:MAX_REGIONS_PER_CLASS]:
            region = lab == (k + 1)
            if near_lung is not None and float((region & near_lung).sum()) / float(region.sum()) < MIN_LUNG_OVERLAP:
                result.dropped += 1
                logger.info("dropped implausible %s region outside the lung fields", cls)
                continue
            ys, xs = np.nonzero(region)
            box = geometry.box_to_source([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            contour = geometry.to_source(_simplify(region_contour(region)))
            contour[:, 0] = np.clip(contour[:, 0], 0, geometry.src_w)
            contour[:, 1] = np.clip(contour[:, 1], 0, geometry.src_h)
            side = laterality(region, lungs)
            result.findings.append(
                Finding(cls, score * float(peaks[k]) / max(peak, 1e-6), box, contour.tolist(), side, zone(region, lungs, side))
            )
    return result


def lung_fraction(lung_prob: np.ndarray, content: tuple[int, int, int, int]) -> float:
    """Fraction of the image content segmented as lung (a plausibility check of the input)."""
    x0, y0, x1, y1 = content
    area = max((x1 - x0) * (y1 - y0), 1)
    return float((upsample(lung_prob, lung_prob.shape[0]) >= 0.5).sum()) / area
