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
    _rows: dict = field(default_factory=dict, repr=False)

    @property
    def found(self) -> bool:
        """Whether any lung field was segmented."""
        return bool(self.mask.any())

    def row_extent(self, side: str) -> tuple[int, int] | None:
        """(top, bottom exclusive) rows of ``side`` ("right", "left", else both lungs); None when empty."""
        if side not in self._rows:
            ref = {"right": self.right, "left": self.left}.get(side, self.mask)
            rows = np.flatnonzero(ref.any(axis=1))
            self._rows[side] = (int(rows[0]), int(rows[-1]) + 1) if rows.size else None
        return self._rows[side]


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


def _mean_column(mask: np.ndarray) -> float:
    """Mean column index of the pixels of ``mask`` (from its column histogram)."""
    counts = mask.sum(axis=0)
    return float((counts * np.arange(mask.shape[1])).sum() / max(counts.sum(), 1))


def lung_fields(lung_prob: np.ndarray, threshold: float = 0.5) -> LungFields:
    """Split the lung probability map into the two lungs (largest components, by side)."""
    mask = lung_prob >= threshold
    lab, n = ndi.label(mask)
    size = mask.shape[1]
    if n == 0:
        empty = np.zeros_like(mask)
        return LungFields(mask, empty, empty.copy(), size / 2.0)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes, kind="stable")[::-1]
    keep = [k + 1 for k in order[:2] if sizes[k] >= 0.15 * sizes.max()]
    boxes = ndi.find_objects(lab, max_label=max(keep))
    # mean column of each kept component from its bounding box (the same integer sums)
    centre = {k: _mean_column(lab[boxes[k - 1]] == k) + boxes[k - 1][1].start for k in keep}
    keep.sort(key=centre.__getitem__)
    comps = [lab == k for k in keep]
    clean = comps[0] | comps[1] if len(comps) == 2 else comps[0].copy()
    if len(comps) == 2:
        right, left = comps
        # last column of the right lung, first column of the left one: their bounding boxes
        mid = ((boxes[keep[0] - 1][1].stop - 1) + boxes[keep[1] - 1][1].start) / 2.0
    else:
        mid = size / 2.0
        right = clean & (np.arange(size)[None, :] < mid) if _mean_column(clean) < mid else np.zeros_like(clean)
        left = clean & ~right
    return LungFields(clean, right, left, float(mid))


def laterality(region: np.ndarray, lungs: LungFields, x0: int = 0) -> str:
    """``"right"``, ``"left"`` or ``"bilateral"`` (patient's side; image left = patient right).

    ``region`` may be a crop of the model grid whose first column is ``x0``.
    """
    xs = np.nonzero(region)[1] + (x0 + 0.5)
    if xs.size == 0:
        return "bilateral"
    right_frac = float(np.mean(xs < lungs.midline_x))
    if 0.2 <= right_frac <= 0.8:
        return "bilateral"
    return "right" if right_frac > 0.5 else "left"


def zone(region: np.ndarray, lungs: LungFields, side: str, y0: int = 0) -> str:
    """``"upper"``, ``"middle"`` or ``"lower"`` by the region centroid within the lung's height.

    ``region`` may be a crop of the model grid whose first row is ``y0``.
    """
    extent = lungs.row_extent(side) or lungs.row_extent("both")
    top, bottom = extent if extent is not None else (0, lungs.mask.shape[0])
    cy = float(np.nonzero(region)[0].mean()) + y0 + 0.5
    t = (cy - top) / max(bottom - top, 1)
    return "upper" if t < 1 / 3 else ("middle" if t < 2 / 3 else "lower")


def region_contour(region: np.ndarray) -> np.ndarray:
    """Outer contour of a binary region as (N, 2) continuous model-pixel (x, y) points."""
    from skimage.measure import find_contours

    padded = np.zeros((region.shape[0] + 2, region.shape[1] + 2), np.float64)
    padded[1:-1, 1:-1] = region
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
    result = CxrFindings(float(abnormality), {c: float(s) for c, s in zip(CLASSES, scores)})
    for ci, cls in enumerate(CLASSES):
        score = float(scores[ci])
        if score < thresholds.get(cls, 0.5):
            continue  # maps are only read for classes at their operating point
        prob = upsample(seg[ci], size)
        peak = float(prob.max())
        region_all = prob >= max(min(seg_threshold, 0.5 * peak), 1e-6)
        # label only the bounding box of the thresholded pixels: the same components, numbered
        # in the same (raster) order, at a fraction of the cost of labelling the whole map
        rows, cols = np.flatnonzero(region_all.any(axis=1)), np.flatnonzero(region_all.any(axis=0))
        if rows.size == 0:
            continue
        cy, cx = int(rows[0]), int(cols[0])
        crop = (slice(cy, int(rows[-1]) + 1), slice(cx, int(cols[-1]) + 1))
        lab, n = ndi.label(region_all[crop])
        prob_crop = prob[crop]
        boxes = ndi.find_objects(lab)
        # per-region maximum over each region's bounding box (ndi.maximum sorts the whole map)
        peaks = np.array([float(prob_crop[sl][lab[sl] == i + 1].max()) for i, sl in enumerate(boxes)])
        areas = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        order = [k for k in np.argsort(peaks)[::-1] if areas[k] >= MIN_REGION_PX or peaks[k] == peak]
        for k in order[:MAX_REGIONS_PER_CLASS]:
            # everything below works on the region's bounding box (offset y0, x0 in the model grid)
            sl = boxes[k]
            region = lab[sl] == (k + 1)
            y0, x0 = sl[0].start + cy, sl[1].start + cx
            sl = (slice(y0, sl[0].stop + cy), slice(x0, sl[1].stop + cx))
            if lungs.found and _lung_overlap(region, lungs.mask, y0, x0) < MIN_LUNG_OVERLAP:
                result.dropped += 1
                logger.info("dropped implausible %s region outside the lung fields", cls)
                continue
            box = geometry.box_to_source([x0, y0, sl[1].stop, sl[0].stop])
            contour = geometry.to_source(_simplify(region_contour(region) + np.array([x0, y0])))
            contour[:, 0] = np.clip(contour[:, 0], 0, geometry.src_w)
            contour[:, 1] = np.clip(contour[:, 1], 0, geometry.src_h)
            side = laterality(region, lungs, x0)
            result.findings.append(
                Finding(cls, score * float(peaks[k]) / max(peak, 1e-6), box, contour.tolist(), side,
                        zone(region, lungs, side, y0))
            )
    return result


def _lung_overlap(region: np.ndarray, lung_mask: np.ndarray, y0: int, x0: int) -> float:
    """Fraction of ``region`` (a crop at y0, x0) within the lung fields dilated by LUNG_MARGIN_PX.

    The dilation (LUNG_MARGIN_PX iterations of the 4-connected cross) reaches the pixels
    within that city-block distance of the lungs, so it is computed on the crop grown by
    that margin, as the crop's city-block distance transform (one pass instead of one per
    iteration; a monotone path between two pixels stays in their rectangle, so the two agree).
    """
    m = LUNG_MARGIN_PX
    h, w = region.shape
    ya, xa = max(y0 - m, 0), max(x0 - m, 0)
    yb, xb = min(y0 + h + m, lung_mask.shape[0]), min(x0 + w + m, lung_mask.shape[1])
    crop = lung_mask[ya:yb, xa:xb]
    if not crop.any():
        return 0.0
    near = ndi.distance_transform_cdt(~crop, metric="taxicab")[y0 - ya:y0 - ya + h, x0 - xa:x0 - xa + w] <= m
    return float((region & near).sum()) / float(max(region.sum(), 1))


def lung_fraction(lung_prob: np.ndarray, content: tuple[int, int, int, int]) -> float:
    """Fraction of the image content segmented as lung (a plausibility check of the input)."""
    x0, y0, x1, y1 = content
    area = max((x1 - x0) * (y1 - y0), 1)
    if lung_prob.ndim == 2 and lung_prob.shape[0] == lung_prob.shape[1]:
        lung = np.asarray(lung_prob, dtype=np.float32)  # what upsample() returns for a square map
    else:
        lung = upsample(lung_prob, lung_prob.shape[0])
    return float(np.count_nonzero(lung >= 0.5)) / area
