"""Contrast-phase identification of the series of a study: non-contrast, arterial,
portal-venous, delayed.

Headers first (PS3.3 C.7.6.4 Contrast/Bolus module and the series description):
- description keywords (``arterial``/``art``, ``portal``/``venous``/``pv``, ``delay``/
  ``equilibrium``/``late``, ``non-contrast``/``native``/``plain``/``pre``/``nc``);
- ContrastBolusAgent empty with no keyword → non-contrast;
- time after contrast start (AcquisitionTime − ContrastBolusStartTime): < 50 s arterial,
  50–120 s portal venous, > 120 s delayed.
Content otherwise (or to confirm): the aortic HU (the brightest round structure in front
of the spine, or a given aorta mask) and, when a liver mask is given, the liver and the
portal/hepatic-vessel HU: aorta < 90 HU → non-contrast; aorta ≥ 200 HU and aorta − portal
vessels ≥ 80 HU → arterial; otherwise portal venous, or delayed when the aorta is < 130 HU
and the series is acquired after another contrast phase.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from models.ct.volume import CTVolume

logger = logging.getLogger(__name__)

PHASES = ("non-contrast", "arterial", "portal-venous", "delayed")
_KEYWORDS = [
    ("non-contrast", r"\b(non[- ]?con(trast)?|native|plain|pre[- ]?con(trast)?|nc|w/?o|without)\b"),
    ("arterial", r"\b(arterial|art|early|hepatic arterial|ha|late arterial|angio|cta)\b"),
    ("portal-venous", r"\b(portal|venous|pv|pvp|porto[- ]?venous|ven)\b"),
    ("delayed", r"\b(delay(ed)?|equilibrium|eq|late|transitional|hepatobiliary|hbp|\d+ ?min)\b"),
]


@dataclass
class PhaseCall:
    phase: str
    source: str  # "header:description", "header:timing", "header:contrast", "content", ...
    evidence: dict[str, Any]


def from_header(meta: dict[str, Any]) -> PhaseCall | None:
    """Phase from series attributes alone (None when they say nothing)."""
    desc = (meta.get("series_description") or "").lower()
    for phase, pat in _KEYWORDS:
        if phase == "delayed" and re.search(r"late arterial", desc):
            continue
        if re.search(pat, desc):
            return PhaseCall(phase, "header:description", {"series_description_match": phase})
    t0, t = meta.get("contrast_bolus_start_time"), meta.get("acquisition_time")
    agent = (meta.get("contrast_bolus_agent") or "").strip()
    if t0 is not None and t is not None:
        dt = (t - t0) % 86400
        phase = "arterial" if dt < 50 else "portal-venous" if dt <= 120 else "delayed"
        return PhaseCall(phase, "header:timing", {"seconds_after_contrast": round(dt, 1)})
    if not agent and "contrast_bolus_agent" in meta:
        return PhaseCall("non-contrast", "header:contrast", {"contrast_bolus_agent": ""})
    return None


def aorta_hu(vol: CTVolume, aorta: np.ndarray | None = None) -> float | None:
    """Aortic attenuation: median HU in a given mask, else the brightest round 15–35 mm
    structure (≥ 85 HU) in the central slices (None when none is found: non-contrast)."""
    if aorta is not None and aorta.any():
        return float(np.median(vol.hu[aorta.astype(bool)]))
    hu = vol.hu
    pix = vol.spacing[1] * vol.spacing[2]
    vals = []
    it = max(1, int(round(3.0 / vol.spacing[1])))  # a 3 mm opening parts the aorta from the spine
    for z in range(hu.shape[0] // 4, max(hu.shape[0] // 4 + 1, 3 * hu.shape[0] // 4)):
        m = ndimage.binary_opening((hu[z] >= 85) & (hu[z] < 600), iterations=it)
        lab, n = ndimage.label(m)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            comp = lab[sl] == i
            area = comp.sum() * pix
            if not (np.pi * 7.5 ** 2 <= area <= np.pi * 17.5 ** 2):
                continue
            h = (sl[0].stop - sl[0].start) * vol.spacing[1]
            w = (sl[1].stop - sl[1].start) * vol.spacing[2]
            fill = area / (h * w)
            if fill < 0.65 or not (0.75 < h / w < 1.33):
                continue  # not round
            v = hu[z][sl][comp]
            if v.std() > 60:
                continue  # bone is inhomogeneous; contrast blood is not
            vals.append(float(np.median(v)))
    return float(np.median(sorted(vals)[-max(1, len(vals) // 2):])) if vals else None


def from_content(vol: CTVolume, aorta: np.ndarray | None = None, liver: np.ndarray | None = None
                 ) -> PhaseCall:
    """Phase from image content (aorta, portal/hepatic vessels when a liver mask is given)."""
    a = aorta_hu(vol, aorta)
    ev: dict[str, Any] = {"aorta_hu": a}
    vessels = None
    if liver is not None and liver.any():
        lv = vol.hu[liver.astype(bool)]
        med = float(np.median(lv))
        ev["liver_hu"] = med
        hi = lv[lv > med + 30]
        vessels = float(np.median(hi)) if hi.size > 20 else med
        ev["portal_vessels_hu"] = vessels
    if a is None or a < 90:
        return PhaseCall("non-contrast", "content", ev)
    if a >= 200 and (vessels is None or a - vessels >= 80):
        return PhaseCall("arterial", "content", ev)
    if a < 130:
        return PhaseCall("delayed", "content", ev)
    return PhaseCall("portal-venous", "content", ev)


def identify(vols: list[CTVolume], aortas: list[np.ndarray | None] | None = None) -> list[PhaseCall]:
    """One call per volume: header when it speaks, else content; content ties broken by
    acquisition order (of two contrast phases without arterial aorta, the later is delayed)."""
    calls: list[PhaseCall] = []
    for i, v in enumerate(vols):
        h = from_header(v.meta)
        c = from_content(v, aortas[i] if aortas else None)
        if h is not None:
            h.evidence["content"] = c.phase
            h.evidence.update({k: v_ for k, v_ in c.evidence.items() if k not in h.evidence})
            calls.append(h)
        else:
            calls.append(c)
    content_pv = [i for i, c in enumerate(calls) if c.source == "content" and c.phase in ("portal-venous", "delayed")]
    if len(content_pv) >= 2:
        def _key(i):
            t = vols[i].meta.get("acquisition_time")
            return (t if t is not None else 0.0, -(calls[i].evidence.get("aorta_hu") or 0.0))
        order = sorted(content_pv, key=_key)
        calls[order[0]].phase = "portal-venous"
        for i in order[1:]:
            calls[i].phase = "delayed"
    return calls
