"""Does a CT series look low dose?  Configurable heuristics on DICOM dose attributes.

Checked in order, the first that decides wins:

1. CTDIvol (0018,9345) in mGy at or below ``ctdivol_max_mgy`` (PS3.3 C.8.15.3.8;
   screening low-dose chest CT runs at about 1-3 mGy, routine chest at 8-15 mGy).
2. Exposure (0018,1152) in mAs at or below ``exposure_max_mas``.
3. Series Description / Protocol Name containing one of ``description_keywords``.

Configuration is layered: defaults < ``from_mapping`` (a config file's section) <
environment (``MEDWS_DENOISE_CTDIVOL_MAX``, ``MEDWS_DENOISE_EXPOSURE_MAX``,
``MEDWS_DENOISE_KEYWORDS`` comma-separated).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.dataset import Dataset

from models.denoise.errors import DenoiseError


@dataclass(frozen=True)
class LowDoseCriteria:
    """Thresholds of the low-dose heuristic."""

    ctdivol_max_mgy: float = 5.0
    exposure_max_mas: float = 60.0
    description_keywords: tuple[str, ...] = field(
        default=("low dose", "low-dose", "lowdose", "ldct", "ultra low", "screening"))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: "LowDoseCriteria | None" = None) -> "LowDoseCriteria":
        base = base or cls()
        known = {"ctdivol_max_mgy", "exposure_max_mas", "description_keywords"}
        unknown = set(data) - known
        if unknown:
            raise DenoiseError(f"unknown low-dose setting(s) {sorted(unknown)}; known: {sorted(known)}")
        kw: dict[str, Any] = {}
        try:
            if "ctdivol_max_mgy" in data:
                kw["ctdivol_max_mgy"] = float(data["ctdivol_max_mgy"])
            if "exposure_max_mas" in data:
                kw["exposure_max_mas"] = float(data["exposure_max_mas"])
        except (TypeError, ValueError) as e:
            raise DenoiseError(f"low-dose thresholds must be numbers: {e}") from e
        if "description_keywords" in data:
            words = data["description_keywords"]
            if isinstance(words, str):
                words = [w for w in words.split(",")]
            kw["description_keywords"] = tuple(w.strip().lower() for w in words if w.strip())
        return replace(base, **kw)

    @classmethod
    def from_env(cls, base: "LowDoseCriteria | None" = None, env: Mapping[str, str] | None = None) -> "LowDoseCriteria":
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        for key, name in (("ctdivol_max_mgy", "MEDWS_DENOISE_CTDIVOL_MAX"),
                          ("exposure_max_mas", "MEDWS_DENOISE_EXPOSURE_MAX"),
                          ("description_keywords", "MEDWS_DENOISE_KEYWORDS")):
            if env.get(name, "").strip():
                data[key] = env[name]
        return cls.from_mapping(data, base)


def _number(ds: Dataset, keyword: str) -> float | None:
    v = getattr(ds, keyword, None)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def low_dose_reason(datasets: Sequence[Dataset], criteria: LowDoseCriteria | None = None) -> str | None:
    """Why the series looks low dose, or ``None`` when it does not.

    Uses the median CTDIvol / Exposure over the series (tube current modulation varies
    them per slice).
    """
    c = criteria or LowDoseCriteria()
    if not datasets:
        return None
    for keyword, limit, unit in (("CTDIvol", c.ctdivol_max_mgy, "mGy"), ("Exposure", c.exposure_max_mas, "mAs")):
        values = sorted(v for v in (_number(d, keyword) for d in datasets) if v is not None)
        if values:
            med = values[len(values) // 2]
            if med <= limit:
                return f"{keyword} {med:.2f} {unit} <= {limit:g} {unit}"
            return None
    ds = datasets[0]
    text = " ".join(str(getattr(ds, k, "") or "") for k in ("SeriesDescription", "ProtocolName")).lower()
    for word in c.description_keywords:
        if word in text:
            return f"description contains {word!r}"
    return None


def looks_low_dose(datasets: Sequence[Dataset], criteria: LowDoseCriteria | None = None) -> bool:
    """True when :func:`low_dose_reason` finds a reason."""
    return low_dose_reason(datasets, criteria) is not None
