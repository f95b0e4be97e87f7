"""How sharp a study's reconstruction is, measured on its image, and the nodule-score offset
that goes with it.

The nodule classifier scores nodules in soft or thick-slice reconstructions lower than in
sharp thin-slice ones, while its false positives move less, so pooled over studies (and at
one operating threshold) a thick-slice study's nodules rank below a thin-slice study's
false positives. CAD systems are validated per reconstruction; here the reconstruction is
estimated from the image, because the pipeline may get a study already resampled and
because the estimate must not depend on how much lung the study covers.

``edge_gradient``: the median HU gradient magnitude (HU/mm) at the soft-tissue voxels that
touch air-filled lung (below ``EDGE_HU``), in and around the lungs: vessel walls, fissures,
the pleura. A blurred reconstruction spreads these edges and lowers it; it is a median
over edges, not a count, so coverage does not enter.

``ReconstructionOffset``: a logit offset ``delta * clip((g_sharp - g) / (g_sharp - g_soft),
0, 1)``, fitted on validation cases (``training/ct/reconstruction_offset.py``), added to
every candidate of the study: a per-study constant, so the study's own ranking is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.ct.volume import mask_box

EDGE_HU = -400.0
MIN_EDGE_VOXELS = 200
# the validation cases of training/ct/reconstruction_offset.py (served classifier; training
# region, seeds 7000-7019; benchmarks/results/ct_nodule_reconstruction_offset.json): median
# edge gradient as reconstructed (1.5 mm) and degraded to 3 mm, and the CPM of each class
SHARP_EDGE_GRADIENT = 311.1
SOFT_EDGE_GRADIENT = 247.3
SHARP_CPM, SOFT_CPM = 0.918, 0.829
MAX_SLICE_MM = 2.5  # thicker slices than the classifier was validated on


def edge_gradient(hu: np.ndarray, lungs: np.ndarray, spacing) -> float:
    """Median |∇HU| (HU/mm) at soft-tissue voxels (≥ ``EDGE_HU``) 6-adjacent to air-filled
    voxels, within the lungs dilated by 2 voxels; NaN when there are fewer than
    ``MIN_EDGE_VOXELS`` such voxels (no lung to measure)."""
    if not lungs.any():
        return float("nan")
    box = mask_box(lungs, 3)
    h = np.asarray(hu[box], np.float32)
    region = ndimage.binary_dilation(lungs[box], iterations=2)
    air = h < EDGE_HU
    edge = region & ~air & ndimage.binary_dilation(air)
    if edge.sum() < MIN_EDGE_VOXELS:
        return float("nan")
    grads = np.gradient(h, *[float(s) for s in spacing])
    g = np.sqrt(sum(gi.astype(np.float64) ** 2 for gi in grads))
    return float(np.median(g[edge]))


@dataclass
class ReconstructionOffset:
    """Logit offset for a study from its :func:`edge_gradient` ``g``: 0 at or above
    ``sharp_gradient`` (the validation studies as reconstructed), ``delta`` at or below
    ``soft_gradient`` (the same studies degraded to 3 mm), linear between; 0 when ``g`` is
    NaN."""
    sharp_gradient: float
    soft_gradient: float
    delta: float

    def __post_init__(self) -> None:
        if not self.sharp_gradient > self.soft_gradient:
            raise ValueError(f"sharp_gradient ({self.sharp_gradient}) must exceed soft_gradient "
                             f"({self.soft_gradient})")

    def __call__(self, g: float) -> float:
        if not np.isfinite(g):
            return 0.0
        t = (self.sharp_gradient - g) / (self.sharp_gradient - self.soft_gradient)
        return float(self.delta * np.clip(t, 0.0, 1.0))

    def to_dict(self) -> dict:
        return {"sharp_gradient": self.sharp_gradient, "soft_gradient": self.soft_gradient, "delta": self.delta}

    @classmethod
    def from_dict(cls, d: dict) -> "ReconstructionOffset":
        return cls(float(d["sharp_gradient"]), float(d["soft_gradient"]), float(d["delta"]))


def reconstruction_warnings(g: float, slice_mm: float) -> list[dict[str, str]]:
    """What the radiologist should know about a study the nodule CAD reads less well, as
    ``{"code", "message"}``: a soft or thick reconstruction (``soft_reconstruction``: edge
    gradient nearer the validation's 3 mm class than its sharp one) or slices (thickness or
    spacing, ``slice_mm``) over ``MAX_SLICE_MM`` (``thick_slices``).  The draft report words
    the codes in its own language (``dicom_node.report``)."""
    out = []
    if np.isfinite(g) and g < 0.5 * (SHARP_EDGE_GRADIENT + SOFT_EDGE_GRADIENT):
        out.append({"code": "soft_reconstruction", "message": f"soft or thick reconstruction (edge gradient {g:.0f} HU/mm, sharp 1.5 mm studies "
                   f"~{SHARP_EDGE_GRADIENT:.0f}): nodule sensitivity is lower on such studies (validation CPM "
                   f"{SOFT_CPM:.2f} against {SHARP_CPM:.2f}); prefer a thin-slice sharp-kernel series"})
    if slice_mm > MAX_SLICE_MM:
        out.append({"code": "thick_slices", "message": f"slices {slice_mm:.1f} mm thick or apart (> {MAX_SLICE_MM} "
                    "mm): small nodules may be missed; prefer a series of <= 1.5 mm slices"})
    return out


def describe_reconstruction(g: float, spacing, thickness_mm: float | None) -> tuple[dict, list[dict[str, str]]]:
    """(the study's ``reconstruction`` record, its :func:`reconstruction_warnings`) from its
    edge gradient ``g``, voxel ``spacing`` (mm) and header slice thickness (None: unknown;
    thick slices are sometimes reconstructed overlapping, so the larger of the two counts)."""
    spacing_mm = float(max(spacing))
    slice_mm = max(spacing_mm, float(thickness_mm)) if thickness_mm else spacing_mm
    rec = {"edge_gradient_hu_per_mm": round(float(g), 1) if np.isfinite(g) else None,
           "slice_spacing_mm": round(spacing_mm, 2),
           "slice_thickness_mm": round(float(thickness_mm), 2) if thickness_mm else None}
    return rec, reconstruction_warnings(g, slice_mm)
