"""Routing by content: which analysis tasks a stable study gets.

Decided from the series' headers, never from the sending AE title alone: Modality,
Body Part Examined, View Position, Image Type, Series/Study Description, contrast
(Contrast/Bolus Agent, descriptions) and cardiac gating (Cardiac Synchronization
Technique, trigger attributes, descriptions) -- PS3.3 C.7.3.1, C.7.6.1, C.8.19.x.

Default rules (override in ``<root>/medws.toml``, ``[[routing.rules]]``):

========== =========================================================================
task       when
========== =========================================================================
cxr        CR/DX, chest (or body part absent), frontal view (PA/AP or blank), not secondary capture
ct-nodule  CT, chest/lung/thorax, axial ORIGINAL series, >= 20 slices, not gated
ct-denoise as ct-nodule and the series looks low dose (CTDIvol, mAs or description)
cac        CT, gated, non-contrast, heart/chest/calcium, >= 10 slices
liver      CT, abdomen/liver, >= 2 phases in the study (multi-phase), >= 10 slices each
========== =========================================================================

A study with nothing applicable gets :attr:`RoutingDecision.not_applicable`
with the reason per series, so it is recorded rather than silently dropped.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.errors import ConfigError

logger = logging.getLogger(__name__)

#: SOP classes / modalities that are results or documents, never analysed
NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "PR", "KO", "DOC", "REG", "RTSTRUCT", "OT"})

_CONTRAST_WORDS = ("contrast", "c+", "arterial", "portal", "venous", "delayed", "enhanced", "cta", "angio")
_NONCONTRAST_WORDS = ("non-contrast", "noncontrast", "non contrast", "without contrast", "w/o", "c-", "plain",
                      "native", "unenhanced", "nc ")
_GATED_WORDS = ("gated", "ecg", "cardiac", "calcium", "cac", "ca score", "cascore", "heart")
_LOW_DOSE_WORDS = ("low dose", "low-dose", "lowdose", "ldct", "ld ", "screening", "ultra-low", "uldct")


@dataclass(frozen=True)
class SeriesInfo:
    """What routing looks at for one series (from one representative header)."""

    series_uid: str
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    image_type: str = ""
    series_description: str = ""
    study_description: str = ""
    contrast_agent: str = ""
    gated: bool = False
    ctdi_vol: float | None = None
    exposure_mas: float | None = None
    num_instances: int = 1
    priority: str = ""

    @property
    def text(self) -> str:
        """Lower-case series + study description (for keyword rules)."""
        return f" {self.series_description} {self.study_description} ".lower()

    @property
    def has_contrast(self) -> bool | None:
        """True/False when the header says so, None when it does not."""
        if self.contrast_agent.strip() and self.contrast_agent.strip().upper() not in ("NONE", "NO", "N/A"):
            return True
        text = self.text
        if any(w in text for w in _NONCONTRAST_WORDS):
            return False
        if any(w in text for w in _CONTRAST_WORDS):
            return True
        return None

    @property
    def low_dose(self) -> bool:
        """Looks like a low-dose acquisition: CTDIvol <= 3 mGy, <= 40 mAs, or so described."""
        if self.ctdi_vol is not None and 0 < self.ctdi_vol <= 3.0:
            return True
        if self.exposure_mas is not None and 0 < self.exposure_mas <= 40:
            return True
        return any(w in self.text for w in _LOW_DOSE_WORDS)


@dataclass(frozen=True)
class Rule:
    """One routing rule: every given condition must hold for a series.

    Parameters
    ----------
    task
        Task name run for matching series (e.g. ``cxr``).
    modalities
        Accepted Modality values.
    body_parts
        Words of Body Part Examined or the descriptions that qualify (any); an
        absent body part is accepted when ``allow_missing_body_part``.
    views
        Accepted View Position values (``""`` = blank accepted).
    exclude_image_types
        Image Type values that disqualify (e.g. LOCALIZER, DERIVED).
    exclude_words
        Description words that disqualify (e.g. ``lateral``, ``scout``).
    contrast
        True: contrast required; False: non-contrast required; None: either.
    gated
        True: gating required; False: must not be gated; None: either.
    low_dose
        True: only low-dose series.
    min_instances
        Minimum series size (slices).
    min_phases
        Minimum number of matching series in the study (multi-phase studies).
    """

    task: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...] = ()
    allow_missing_body_part: bool = False
    views: tuple[str, ...] = ()
    exclude_image_types: tuple[str, ...] = ("LOCALIZER", "DERIVED", "SECONDARY")
    exclude_words: tuple[str, ...] = ()
    contrast: bool | None = None
    gated: bool | None = None
    low_dose: bool | None = None
    min_instances: int = 1
    min_phases: int = 1

    def why_not(self, s: SeriesInfo) -> str | None:
        """``None`` when the series matches, else the first failed condition."""
        return self.check(s)[1]

    def check(self, s: SeriesInfo) -> tuple[int, str | None]:
        """(conditions passed, first failed condition or ``None``)."""
        if s.modality.upper() not in self.modalities:
            return 0, f"modality {s.modality or 'missing'} not in {'/'.join(self.modalities)}"
        image_type = {v.strip().upper() for v in s.image_type.split("\\")}
        bad = image_type & {v.upper() for v in self.exclude_image_types}
        if bad:
            return 1, f"image type {'/'.join(sorted(bad))}"
        text = s.text
        for w in self.exclude_words:
            if w.lower() in text:
                return 2, f"description says {w.strip()!r}"
        if self.body_parts:
            body = s.body_part.lower()
            in_body = any(w.lower() in body for w in self.body_parts) if body else False
            in_text = any(w.lower() in text for w in self.body_parts)
            if not (in_body or in_text or (not body and self.allow_missing_body_part)):
                return 3, f"body part {s.body_part or 'missing'} is not {'/'.join(self.body_parts)}"
        if self.views:
            view = s.view_position.strip().upper()
            if view not in {v.upper() for v in self.views}:
                return 4, f"view position {view or 'blank'} not in {'/'.join(v or 'blank' for v in self.views)}"
        if self.contrast is not None:
            c = s.has_contrast
            if self.contrast and c is not True:
                return 5, "no contrast phase"
            if not self.contrast and c is True:
                return 5, "contrast-enhanced"
        if self.gated is not None and s.gated != self.gated:
            return 6, "ECG-gated" if s.gated else "not ECG-gated"
        if self.low_dose and not s.low_dose:
            return 7, "not low dose"
        if s.num_instances < self.min_instances:
            return 8, f"{s.num_instances} instance(s) < {self.min_instances}"
        return 9, None


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("cxr", ("CR", "DX"), body_parts=("chest", "thorax", "lung", "cxr"), allow_missing_body_part=True,
         views=("PA", "AP", ""), exclude_image_types=("LOCALIZER", "SECONDARY"),
         exclude_words=("lateral", " lat ", "decubitus", "oblique")),
    Rule("ct-nodule", ("CT",), body_parts=("chest", "thorax", "lung"), gated=False, min_instances=20,
         exclude_words=("scout", "topogram", "calcium", "cardiac")),
    Rule("ct-denoise", ("CT",), body_parts=("chest", "thorax", "lung"), gated=False, low_dose=True,
         min_instances=20, exclude_words=("scout", "topogram")),
    Rule("cac", ("CT",), body_parts=("heart", "chest", "cardiac", "calcium", "coronary", "thorax"), gated=True,
         contrast=False, min_instances=10, exclude_words=("scout", "cta", "angio")),
    Rule("liver", ("CT",), body_parts=("abdomen", "liver", "abd", "hepatic"), min_instances=10, min_phases=2,
         exclude_words=("scout", "topogram")),
)


@dataclass(frozen=True)
class TaskPlan:
    """A task to run and the series it reads."""

    task: str
    series_uids: tuple[str, ...]


@dataclass(frozen=True)
class RoutingDecision:
    """What routing decided for a study."""

    tasks: tuple[TaskPlan, ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)  # series UID -> why nothing matched

    @property
    def not_applicable(self) -> str | None:
        """Why the study gets no analysis (``None`` when some task applies)."""
        if self.tasks:
            return None
        if not self.reasons:
            return "no image series in the study"
        return "; ".join(sorted(set(self.reasons.values())))[:1000]

    def to_json(self) -> dict[str, Any]:
        return {"tasks": [{"task": t.task, "series": list(t.series_uids)} for t in self.tasks],
                "not_applicable": self.not_applicable}


def route(series: Sequence[SeriesInfo], rules: Sequence[Rule] = DEFAULT_RULES) -> RoutingDecision:
    """Match every image series of one study against ``rules`` (pure).

    Result-type series (SR, SEG, PR, KO, ...) are ignored.  A rule with
    ``min_phases`` > 1 applies only when that many series of the study match it.
    """
    plans: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    images = [s for s in series if s.modality.upper() not in NON_IMAGE_MODALITIES]
    for rule in rules:
        matching = []
        for s in images:
            why = rule.why_not(s)
            if why is None:
                matching.append(s.series_uid)
        if matching and len(matching) >= rule.min_phases:
            plans.setdefault(rule.task, []).extend(u for u in matching if u not in plans.get(rule.task, []))
    matched = {u for uids in plans.values() for u in uids}
    for s in images:
        if s.series_uid not in matched:
            # the reason of the rule for this modality, or the first rule
            # explain with the rule that came closest (most conditions passed)
            checks = [(r.check(s), r) for r in rules if s.modality.upper() in r.modalities]
            multi = [r for (_, why), r in checks if why is None and r.min_phases > 1]
            if multi:
                reasons[s.series_uid] = f"{s.modality}: {multi[0].task} needs >= {multi[0].min_phases} phases"
            elif checks:
                (_, why), _r = max(checks, key=lambda c: c[0][0])
                reasons[s.series_uid] = f"{s.modality}: {why}"
            else:
                reasons[s.series_uid] = f"{s.modality or '?'}: no rule for this modality"
    ordered = [TaskPlan(r.task, tuple(plans[r.task])) for r in rules if r.task in plans]
    seen: set[str] = set()
    tasks = tuple(p for p in ordered if not (p.task in seen or seen.add(p.task)))  # type: ignore[func-returns-value]
    return RoutingDecision(tasks, reasons)


# ----------------------------------------------------------------- headers
def _float(ds: Dataset, keyword: str) -> float | None:
    try:
        v = ds.get(keyword)
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _str(ds: Dataset, keyword: str) -> str:
    try:
        v = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a badly encoded optional value is not fatal
        return ""
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def is_gated(ds: Dataset) -> bool:
    """ECG gating from Cardiac Synchronization Technique (PS3.3 C.7.6.18.1), trigger
    attributes, or the description."""
    sync = _str(ds, "CardiacSynchronizationTechnique").upper()
    if sync and sync != "NONE":
        return True
    for kw in ("NominalPercentageOfCardiacPhase", "CardiacRRIntervalSpecified", "NominalCardiacTriggerDelayTime"):
        if kw in ds:
            return True
    text = f" {_str(ds, 'SeriesDescription')} {_str(ds, 'StudyDescription')} {_str(ds, 'ProtocolName')} ".lower()
    return any(w in text for w in _GATED_WORDS)


def priority_of(ds: Dataset) -> str:
    """Requested Procedure Priority (0040,1003) of the study (STAT/HIGH/ROUTINE/MEDIUM/LOW), or ''."""
    value = _str(ds, "RequestedProcedurePriority")
    if not value:
        for item in ds.get("RequestAttributesSequence", []) or []:
            value = _str(item, "RequestedProcedurePriority")
            if value:
                break
    return value.upper()


def series_info(ds: Dataset, num_instances: int = 1) -> SeriesInfo:
    """:class:`SeriesInfo` from a representative header of the series."""
    exposure = _float(ds, "Exposure")
    if exposure is None:
        current, time_ms = _float(ds, "XRayTubeCurrent"), _float(ds, "ExposureTime")
        if current is not None and time_ms is not None:
            exposure = current * time_ms / 1000.0
    return SeriesInfo(
        series_uid=_str(ds, "SeriesInstanceUID"),
        modality=_str(ds, "Modality").upper(),
        body_part=_str(ds, "BodyPartExamined"),
        view_position=_str(ds, "ViewPosition"),
        image_type=_str(ds, "ImageType"),
        series_description=_str(ds, "SeriesDescription") + (" " + _str(ds, "ProtocolName")
                                                           if _str(ds, "ProtocolName") else ""),
        study_description=_str(ds, "StudyDescription"),
        contrast_agent=_str(ds, "ContrastBolusAgent"),
        gated=is_gated(ds),
        ctdi_vol=_float(ds, "CTDIvol"),
        exposure_mas=exposure,
        num_instances=num_instances,
        priority=priority_of(ds),
    )


# ----------------------------------------------------------------- configuration
_RULE_FIELDS = {f for f in Rule.__dataclass_fields__}


def rule_from_mapping(obj: Mapping[str, Any]) -> Rule:
    """A :class:`Rule` from a TOML table (lists become tuples)."""
    unknown = set(obj) - _RULE_FIELDS
    if unknown:
        raise ConfigError(f"routing rule has unknown key(s) {sorted(unknown)}; known: {sorted(_RULE_FIELDS)}")
    if "task" not in obj or "modalities" not in obj:
        raise ConfigError("a routing rule needs 'task' and 'modalities'")
    kw = {k: tuple(str(x) for x in v) if isinstance(v, list) else v for k, v in obj.items()}
    kw["modalities"] = tuple(m.upper() for m in kw["modalities"])
    try:
        return Rule(**kw)
    except TypeError as e:
        raise ConfigError(f"bad routing rule {obj!r}: {e}") from e


def rules_from_config(table: Mapping[str, Any] | None) -> tuple[Rule, ...]:
    """Rules from ``[routing]``: ``replace_defaults = true`` to drop the built-in rules,
    ``disable = ["ct-denoise"]`` to switch tasks off, ``[[routing.rules]]`` to add
    (a rule for an existing task replaces it)."""
    table = dict(table or {})
    rules = [] if table.get("replace_defaults") else list(DEFAULT_RULES)
    for obj in table.get("rules", []) or []:
        rule = rule_from_mapping(obj)
        rules = [r for r in rules if r.task != rule.task] + [rule]
    disabled = {str(t) for t in table.get("disable", []) or []}
    return tuple(r for r in rules if r.task not in disabled)


def pacs_priority_rank(priority: str) -> int:
    """Job priority from a PACS priority: STAT 100, HIGH/URGENT 50, routine 0, LOW -10."""
    p = re.sub(r"[^A-Z]", "", (priority or "").upper())
    return {"STAT": 100, "HIGH": 50, "URGENT": 50, "ASAP": 50, "LOW": -10}.get(p, 0)


def with_instances(info: SeriesInfo, n: int) -> SeriesInfo:
    """``info`` with the series' instance count."""
    return replace(info, num_instances=n)


def summarise(series: Iterable[SeriesInfo]) -> list[dict[str, Any]]:
    """JSON-able view of the series routing saw (for the job outcome)."""
    return [{"series": s.series_uid, "modality": s.modality, "body_part": s.body_part, "view": s.view_position,
             "n": s.num_instances, "gated": s.gated, "contrast": s.has_contrast, "low_dose": s.low_dose}
            for s in series]
