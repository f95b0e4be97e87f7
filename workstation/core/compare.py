"""Original vs derived (denoised) series side by side, and CT findings placed on their slices (Qt-free).

Pairing follows :func:`models.denoise.series.pair_with_derived`, on display series: a
derived slice belongs to the original slice its Source Image Sequence references
(PS3.3 C.7.6.1.1.4); without that reference, slices pair by position along the slice
normal (a medws derived series keeps the original's geometry).  Both panes then share
one window, one view transform and the slice index of the original.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from workstation.core.study import DisplaySeries, LoadedStudy

logger = logging.getLogger(__name__)

_POS_DECIMALS = 3


@dataclass(frozen=True)
class SeriesPair:
    """An original series and the derived series shown beside it, slice by slice."""

    original: int  # index in ``LoadedStudy.series``
    derived: int
    slice_map: tuple[int | None, ...]  # original frame index → derived frame index (None: no match)

    def derived_index(self, original_frame: int) -> int | None:
        if 0 <= original_frame < len(self.slice_map):
            return self.slice_map[original_frame]
        return None


def slice_map(original: DisplaySeries, derived: DisplaySeries) -> list[int | None]:
    """For each original frame, the derived frame showing the same slice (None where none does)."""
    by_source = {uid: j for j, uid in enumerate(derived.source_sops) if uid}
    by_pos = {round(p, _POS_DECIMALS): j for j, p in enumerate(derived.positions) if p is not None}
    out: list[int | None] = []
    for i, uid in enumerate(original.sop_uids):
        if uid in by_source:
            out.append(by_source[uid])
            continue
        p = original.positions[i]
        out.append(by_pos.get(round(p, _POS_DECIMALS)) if p is not None else None)
    return out


def find_pairs(study: LoadedStudy) -> dict[int, SeriesPair]:
    """Original series index → its derived series, for every derived series of the study that pairs up.

    A derived series pairs with the series holding the images it references; a derived
    series without references pairs with a non-derived series of the same modality and
    size whose slice positions it matches.  An original with several derived series
    gets the first one in study order.
    """
    pairs: dict[int, SeriesPair] = {}
    for j, d in enumerate(study.series):
        if not d.derived:
            continue
        refs = {u for u in d.source_sops if u}
        for i, o in enumerate(study.series):
            if i == j or o.derived or i in pairs or o.shape != d.shape or o.modality != d.modality:
                continue
            if refs and not refs & set(o.sop_uids):
                continue
            m = slice_map(o, d)
            if sum(x is not None for x in m) * 2 < o.n:  # under half the slices match: not this series
                continue
            pairs[i] = SeriesPair(i, j, tuple(m))
            break
    return pairs


# ------------------------------------------------------------------ CT findings on their slices
def _normal(series_iop: np.ndarray) -> np.ndarray:
    return np.cross(series_iop[:3], series_iop[3:])


def slice_for_position(series: DisplaySeries, z_mm: float, tolerance_mm: float | None = None) -> int | None:
    """The frame whose position along the normal is nearest ``z_mm`` (None if farther than ``tolerance_mm``)."""
    pos = [(i, p) for i, p in enumerate(series.positions) if p is not None]
    if not pos:
        return None
    i, p = min(pos, key=lambda ip: abs(ip[1] - z_mm))
    if tolerance_mm is None and len(pos) > 1:
        tolerance_mm = float(np.median(np.abs(np.diff(sorted(q for _, q in pos))))) or 1.0
    if tolerance_mm is not None and abs(p - z_mm) > tolerance_mm:
        return None
    return i


def ct_box(centre_rc: tuple[float, float], diameter_mm: float, spacing: tuple[float, float] | None,
           margin: float = 1.25) -> list[float]:
    """A square-in-mm box ``[x1, y1, x2, y2]`` (pixels) around a lesion centre (row, col) of a given size."""
    r, c = centre_rc
    sr, sc = spacing or (1.0, 1.0)
    hx, hy = margin * diameter_mm / 2.0 / sc, margin * diameter_mm / 2.0 / sr
    return [float(c - hx), float(r - hy), float(c + hx), float(r + hy)]


def to_pixel(series: DisplaySeries, xyz_mm: tuple[float, float, float]) -> tuple[float, float, float] | None:
    """(row, col, position along the normal) of a patient point in a series (PS3.3 C.7.6.2.1.1)."""
    if series.origin is None or series.iop is None or series.spacing is None:
        return None
    iop = np.asarray(series.iop, float)
    p = np.asarray(xyz_mm, float)
    d = p - np.asarray(series.origin, float)
    col = float(np.dot(d, iop[:3]) / series.spacing[1])
    row = float(np.dot(d, iop[3:]) / series.spacing[0])
    return row, col, float(np.dot(p, _normal(iop)))


def place_ct_finding(finding: dict, series: DisplaySeries) -> dict | None:
    """Slice and box of a CT task finding that has a centre but no image reference.

    ``models.ct`` findings carry ``centre_patient_mm`` (x, y, z) and ``long_axis_mm``
    (``medws infer ct-nodule|liver --json``).  Returns ``{"frame", "sop_uid", "box"}`` on the
    series' slice nearest the centre, or None when the centre is outside the series.
    """
    centre = finding.get("centre_patient_mm")
    if centre is None or len(centre) != 3:
        return None
    rcz = to_pixel(series, (float(centre[0]), float(centre[1]), float(centre[2])))
    if rcz is None:
        return None
    row, col, z = rcz
    frame = slice_for_position(series, z)
    if frame is None or not (0 <= row < series.shape[0] and 0 <= col < series.shape[1]):
        return None
    size = float(finding.get("long_axis_mm") or finding.get("mean_diameter_mm") or 10.0)
    return {"frame": frame, "sop_uid": series.sop_uids[frame], "box": ct_box((row, col), size, series.spacing)}


def place_ct_findings(study: LoadedStudy, items: list) -> int:
    """Give CT task findings without geometry (``models.ct`` JSON) their slice and box; returns how many.

    Each item keeps what it has: a finding with a box or outline (e.g. edited by the
    radiologist) is left as it is.  The series is the one holding the finding's source
    image, else the first original CT series.
    """
    n = 0
    for it in items:
        if it.box or it.contour or "centre_patient_mm" not in (it.ai or {}):
            continue
        hit = study.series_for(it.sop_uid) if it.sop_uid else None
        series = hit[0] if hit else next((s for s in study.series if s.modality == "CT" and not s.derived), None)
        if series is None:
            continue
        placed = place_ct_finding(it.ai, series)
        if placed is None:
            logger.info("CT finding %s: centre outside the displayed series; not drawn", it.ref)
            continue
        it.box, it.frame, it.sop_uid = placed["box"], placed["frame"], placed["sop_uid"]
        n += 1
    return n
