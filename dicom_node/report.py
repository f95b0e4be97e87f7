"""Draft radiology report from AI findings: structured items and an impression.

Pure functions, one template per study type (chest radiograph; CT lung
nodules; CT coronary calcium; CT liver lesions), in English or Korean chosen
by configuration (``language`` argument or the ``report.language`` key).

Ordering: the impression lists critical findings first (those needing urgent
communication, e.g. pneumothorax), then significant, then minor ones; within a
level by clinical rank, then by size/probability.  Lung-RADS (v2022, baseline
screening) and CAC-DRS categories are computed when the CT pipeline did not
supply one.  The text is a draft for the radiologist, marked as AI-generated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .findings import AnalysisResult, Finding, ResultError, findings_for

LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"

CRITICAL, SIGNIFICANT, MINOR = 0, 1, 2
_LEVEL_NAME = {CRITICAL: "critical", SIGNIFICANT: "significant", MINOR: "minor"}

# --------------------------------------------------------------------------- vocabulary

_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "nodule_mass": "nodule/mass", "consolidation": "consolidation",
        "interstitial_opacity": "interstitial opacity", "pleural_effusion": "pleural effusion",
        "pneumothorax": "pneumothorax", "nodule": "nodule", "mass": "mass",
        "liver_lesion": "liver lesion", "coronary_calcium": "coronary artery calcification",
    },
    "ko": {
        "nodule_mass": "결절/종괴", "consolidation": "경화", "interstitial_opacity": "간질성 음영",
        "pleural_effusion": "흉막 삼출", "pneumothorax": "기흉", "nodule": "결절", "mass": "종괴",
        "liver_lesion": "간 병변", "coronary_calcium": "관상동맥 석회화",
    },
}
_SIDE = {
    "en": {"left": "left", "right": "right", "bilateral": "bilateral"},
    "ko": {"left": "좌측", "right": "우측", "bilateral": "양측"},
}
_ZONE = {
    "en": {"upper": "upper zone", "middle": "middle zone", "lower": "lower zone"},
    "ko": {"upper": "상폐야", "middle": "중폐야", "lower": "하폐야"},
}
_LOBE = {
    "en": {"RUL": "right upper lobe", "RML": "right middle lobe", "RLL": "right lower lobe",
           "LUL": "left upper lobe", "LLL": "left lower lobe"},
    "ko": {"RUL": "우상엽", "RML": "우중엽", "RLL": "우하엽", "LUL": "좌상엽", "LLL": "좌하엽"},
}
_SUBTYPE = {
    "en": {"solid": "solid", "part_solid": "part-solid", "ground_glass": "ground-glass",
           "calcified": "calcified", "cyst": "cyst", "hemangioma": "hemangioma",
           "metastasis": "metastasis", "hcc": "hepatocellular carcinoma", "indeterminate": "indeterminate"},
    "ko": {"solid": "고형", "part_solid": "부분고형", "ground_glass": "간유리", "calcified": "석회화",
           "cyst": "낭종", "hemangioma": "혈관종", "metastasis": "전이", "hcc": "간세포암",
           "indeterminate": "미결정"},
}
_VESSEL = {
    "en": {"LM": "left main (LM)", "LAD": "left anterior descending (LAD)",
           "LCX": "left circumflex (LCX)", "RCA": "right coronary artery (RCA)"},
    "ko": {"LM": "좌주간지(LM)", "LAD": "좌전하행지(LAD)", "LCX": "좌회선지(LCX)", "RCA": "우관상동맥(RCA)"},
}
_CAC_GRADE = {
    "en": {0: "no coronary calcium", 1: "mild", 2: "moderate", 3: "severe"},
    "ko": {0: "석회화 없음", 1: "경도", 2: "중등도", 3: "고도"},
}
_LUNG_RADS_ADVICE = {
    "en": {"1": "continue annual screening with low-dose CT", "2": "continue annual screening with low-dose CT",
           "3": "6-month low-dose CT", "4A": "3-month low-dose CT; PET/CT may be considered",
           "4B": "diagnostic chest CT, PET/CT and/or tissue sampling",
           "4X": "diagnostic chest CT, PET/CT and/or tissue sampling"},
    "ko": {"1": "연례 저선량 CT 선별검사 지속", "2": "연례 저선량 CT 선별검사 지속",
           "3": "6개월 후 저선량 CT", "4A": "3개월 후 저선량 CT, PET/CT 고려",
           "4B": "진단적 흉부 CT, PET/CT 및/또는 조직검사", "4X": "진단적 흉부 CT, PET/CT 및/또는 조직검사"},
}
_TEXT = {
    "en": {
        "findings": "FINDINGS", "impression": "IMPRESSION", "probability": "AI probability",
        "critical_note": "critical: communicate to the referring physician",
        "draft": "AI-generated draft; to be reviewed and signed by a radiologist.",
        "skipped": "AI analysis not performed: {reason}.",
        "normal_cxr": "No acute cardiopulmonary abnormality detected by AI.",
        "normal_ct_nodule": "No pulmonary nodule detected by AI.",
        "normal_ct_liver": "No focal liver lesion detected by AI.",
        "normal_ct_cac": "No coronary artery calcium (Agatston score 0, CAC-DRS 0).",
        "cac_total": "Total coronary artery calcium score (Agatston) {score:.0f}: CAC-DRS {cat} ({grade}).",
        "cac_vessel": "{vessel}: Agatston {score:.0f}",
        "volume": "volume {v:.0f} mm3", "mean_hu": "mean {hu:.0f} HU", "mean_diam": "mean {d:.1f} mm",
        "segment": "segment {s}", "likely": "likely {t}", "in": "in the {where}",
        "model": "Model: {model}",
        "limitations": "LIMITATIONS",
        "limit_soft_reconstruction": "Soft-kernel or thick-slice reconstruction: AI nodule sensitivity is reduced; "
                                     "review a thin-slice sharp-kernel series.",
        "limit_thick_slices": "Slices thicker than 2.5 mm: small nodules may be missed by AI.",
    },
    "ko": {
        "findings": "소견", "impression": "결론", "probability": "AI 확률",
        "critical_note": "긴급: 의뢰의에게 즉시 알릴 것",
        "draft": "AI가 생성한 초안이며, 영상의학과 전문의의 검토와 서명이 필요합니다.",
        "skipped": "AI 분석을 수행하지 않음: {reason}.",
        "normal_cxr": "AI 분석상 급성 심폐 이상 소견 없음.",
        "normal_ct_nodule": "AI 분석상 폐결절 없음.",
        "normal_ct_liver": "AI 분석상 국소 간 병변 없음.",
        "normal_ct_cac": "관상동맥 석회화 없음 (Agatston 점수 0, CAC-DRS 0).",
        "cac_total": "총 관상동맥 석회화 점수(Agatston) {score:.0f}: CAC-DRS {cat} ({grade}).",
        "cac_vessel": "{vessel}: Agatston {score:.0f}",
        "volume": "부피 {v:.0f} mm3", "mean_hu": "평균 {hu:.0f} HU", "mean_diam": "평균 {d:.1f} mm",
        "segment": "{s} 분절", "likely": "{t} 추정", "in": "{where}",
        "model": "모델: {model}",
        "limitations": "제한점",
        "limit_soft_reconstruction": "부드러운 커널 또는 두꺼운 절편 재구성 영상: AI 결절 민감도가 낮음. "
                                     "얇은 절편의 선명한 커널 영상으로 확인할 것.",
        "limit_thick_slices": "절편 두께 2.5 mm 초과: AI가 작은 결절을 놓칠 수 있음.",
    },
}

# clinical rank within a severity level (lower first)
_RANK = {"pneumothorax": 0, "nodule_mass": 1, "mass": 1, "nodule": 2, "consolidation": 3,
         "pleural_effusion": 4, "interstitial_opacity": 5, "liver_lesion": 6, "coronary_calcium": 7}
_MALIGNANT_LIVER = {"metastasis", "hcc", "hcc_like", "hypoenhancing"}  # listed first


@dataclass(frozen=True)
class ReportItem:
    """One structured finding line of the draft."""

    label: str
    text: str
    level: int
    tracking_uid: str | None = None

    @property
    def critical(self) -> bool:
        return self.level == CRITICAL

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "text": self.text, "level": _LEVEL_NAME[self.level],
                "tracking_uid": self.tracking_uid}


@dataclass(frozen=True)
class DraftReport:
    """Structured findings plus impression, ready for the index and the workstation."""

    study_type: str
    language: str
    items: tuple[ReportItem, ...]
    impression: tuple[str, ...]
    model: str
    normal: bool
    skipped: str | None = None
    limitations: tuple[str, ...] = ()  # worded in the report's language

    @property
    def critical(self) -> bool:
        """True when any finding needs urgent communication (worklist priority)."""
        return any(i.critical for i in self.items)

    @property
    def text(self) -> str:
        """Plain text: findings section, numbered impression, draft notice."""
        t = _TEXT[self.language]
        lines = [f"{t['findings']}:"]
        lines += [f"- {i.text}" for i in self.items] or [f"- {self.impression[0]}"]
        lines += ["", f"{t['impression']}:"]
        lines += [f"{n}. {line}" for n, line in enumerate(self.impression, 1)]
        if self.limitations:
            lines += ["", f"{t['limitations']}:"] + [f"- {line}" for line in self.limitations]
        lines += ["", t["draft"]] + ([self.model] if self.model else [])
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "study_type": self.study_type, "language": self.language,
            "items": [i.to_json() for i in self.items], "impression": list(self.impression),
            "model": self.model, "normal": self.normal, "critical": self.critical,
            "skipped": self.skipped, "limitations": list(self.limitations), "text": self.text,
        }


# --------------------------------------------------------------------------- config


def resolve_language(language: str | None = None, config: Mapping[str, Any] | None = None) -> str:
    """The report language: explicit argument, else ``config["report"]["language"]``
    (or a flat ``config["report_language"]``), else English."""
    if language is None and config:
        section = config.get("report")
        if isinstance(section, Mapping):
            language = section.get("language")
        language = language or config.get("report_language")
    language = (language or DEFAULT_LANGUAGE).lower()
    if language not in LANGUAGES:
        raise ResultError(f"report language {language!r} is not supported; use one of {LANGUAGES}")
    return language


# --------------------------------------------------------------------------- categories


def lung_rads(f: Finding) -> str | None:
    """Lung-RADS v2022 baseline category of a nodule (its own ``category`` wins).

    Solid: <6 mm → 2, 6–<8 → 3, 8–<15 → 4A, ≥15 → 4B; ground-glass: <30 → 2,
    ≥30 → 3; calcified → 1.  Part-solid needs the solid-component size, which
    findings do not carry: only a given category is used.
    """
    if f.category:
        return f.category.split()[-1].upper()
    d = f.diameter_mm
    if f.type == "calcified":
        return "1"
    if d is None:
        return None
    if f.type in (None, "solid"):
        return "2" if d < 6 else "3" if d < 8 else "4A" if d < 15 else "4B"
    if f.type == "ground_glass":
        return "2" if d < 30 else "3"
    return None


def cac_drs(score: float) -> int:
    """CAC-DRS Agatston category: 0 → 0, 1–99 → 1, 100–299 → 2, ≥300 → 3."""
    if score <= 0:
        return 0
    return 1 if score < 100 else 2 if score < 300 else 3


def severity(f: Finding, study_type: str = "cxr") -> int:
    """CRITICAL, SIGNIFICANT or MINOR for one finding."""
    if f.label == "pneumothorax":
        return CRITICAL
    if f.label in ("nodule", "mass", "nodule_mass") and study_type == "ct_nodule":
        cat = lung_rads(f)
        return SIGNIFICANT if cat and cat.startswith("4") else MINOR
    if f.label == "liver_lesion":
        return MINOR if f.type in ("cyst", "hemangioma", "cyst_like") else SIGNIFICANT
    if f.label == "coronary_calcium":
        return SIGNIFICANT if (f.agatston or 0) >= 100 else MINOR
    if f.label in ("nodule_mass", "mass", "consolidation", "pleural_effusion"):
        return SIGNIFICANT
    return MINOR


def _sort_key(f: Finding, study_type: str) -> tuple:
    lr = lung_rads(f) if study_type == "ct_nodule" else None
    lr_rank = {"4X": 0, "4B": 1, "4A": 2, "3": 3, "2": 4, "1": 5}.get(lr or "", 6)
    malignant = 0 if f.type in _MALIGNANT_LIVER else 1
    size = -(f.long_axis_mm or f.agatston or 0.0)
    return (severity(f, study_type), lr_rank, malignant, _RANK.get(f.label, 9), size, -(f.probability or 0.0))


def order_findings(findings: Sequence[Finding], study_type: str = "cxr") -> list[Finding]:
    """Findings in impression order: critical first, then by clinical rank and size/probability."""
    return sorted(findings, key=lambda f: _sort_key(f, study_type))


# --------------------------------------------------------------------------- phrases


def _name(f: Finding, lang: str) -> str:
    return _NAMES[lang].get(f.label, f.label.replace("_", " "))


def _location(f: Finding, lang: str) -> str:
    side = _SIDE[lang].get(f.laterality or "")
    zone = _ZONE[lang].get(f.zone or "")
    if lang == "ko":
        return " ".join(p for p in (side, zone) if p)
    if side and zone:
        return f"in the {side} {zone}" if side != "bilateral" else f"in both {zone}s"
    if side:
        return "bilaterally" if side == "bilateral" else f"on the {side}"
    return f"in the {zone}" if zone else ""


def _sizes(f: Finding, lang: str) -> list[str]:
    t = _TEXT[lang]
    parts = []
    if f.long_axis_mm is not None and f.short_axis_mm is not None:
        parts.append(f"{f.long_axis_mm:.0f} x {f.short_axis_mm:.0f} mm")
        parts.append(t["mean_diam"].format(d=f.diameter_mm))
    elif f.long_axis_mm is not None:
        parts.append(f"{f.long_axis_mm:.0f} mm")
    if f.volume_mm3 is not None:
        parts.append(t["volume"].format(v=f.volume_mm3))
    if f.mean_hu is not None:
        parts.append(t["mean_hu"].format(hu=f.mean_hu))
    return parts


def probability_text(p: float) -> str:
    """A model output as the report prints it: two decimals, or two significant digits
    below 0.01, so a finding reported at a low operating point never reads "0.00"."""
    return f"{p:.2f}" if p >= 0.01 or p <= 0.0 else f"{p:.2g}"


def _cxr_item(f: Finding, lang: str) -> str:
    t = _TEXT[lang]
    prob = f" ({t['probability']} {probability_text(f.probability)})" if f.probability is not None else ""
    where = _location(f, lang)
    if lang == "ko":
        return f"{where} {_name(f, lang)}{prob}".strip()
    name = _name(f, lang)
    return f"{name[0].upper()}{name[1:]} {where}{prob}".replace("  ", " ").strip()


def _cxr_impression(f: Finding, lang: str) -> str:
    side = _SIDE[lang].get(f.laterality or "", "")
    name = _name(f, lang)
    text = f"{side} {name}".strip()
    text = text[0].upper() + text[1:] if lang == "en" else text
    if severity(f) == CRITICAL:
        text += f" ({_TEXT[lang]['critical_note']})"
    return text


def _nodule_item(f: Finding, lang: str) -> str:
    sub = _SUBTYPE[lang].get(f.type or "", "")
    lobe = _LOBE[lang].get((f.lobe or "").upper(), "")
    cat = lung_rads(f)
    parts = _sizes(f, lang)
    if cat:
        parts.append(f"Lung-RADS {cat}")
    if f.probability is not None:
        parts.append(f"{_TEXT[lang]['probability']} {probability_text(f.probability)}")
    if lang == "ko":
        head = " ".join(p for p in (lobe, sub, _name(f, lang)) if p)
    else:
        head = " ".join(p for p in (sub, _name(f, lang)) if p)
        head = head[0].upper() + head[1:] + (f" in the {lobe}" if lobe else "")
    return head + (", " + ", ".join(parts) if parts else "")


def _nodule_impression(f: Finding, lang: str) -> str:
    cat = lung_rads(f)
    lobe = _LOBE[lang].get((f.lobe or "").upper(), "")
    size = f"{f.diameter_mm:.1f} mm" if f.diameter_mm is not None else ""
    sub = _SUBTYPE[lang].get(f.type or "", "")
    advice = _LUNG_RADS_ADVICE[lang].get(cat or "", "")
    if lang == "ko":
        what = " ".join(p for p in (lobe, sub, _name(f, lang), size) if p)
    else:
        what = " ".join(p for p in (sub, _name(f, lang), size) if p) + (f" in the {lobe}" if lobe else "")
    head = f"Lung-RADS {cat}: " if cat else ""
    return f"{head}{what}" + (f"; {advice}" if advice else "")


def _liver_item(f: Finding, lang: str) -> str:
    t = _TEXT[lang]
    seg = t["segment"].format(s=f.lobe) if f.lobe else ""
    sub = t["likely"].format(t=_SUBTYPE[lang][f.type]) if f.type in _SUBTYPE[lang] else ""
    parts = _sizes(f, lang)
    if f.category:
        parts.append(f.category)
    if lang == "ko":
        head = " ".join(p for p in ("간", seg, _name(f, lang).replace("간 ", "")) if p) + (f", {sub}" if sub else "")
    else:
        head = "Liver lesion" + (f" in {seg}" if seg else "") + (f", {sub}" if sub else "")
    return head + (", " + ", ".join(parts) if parts else "")


def _cac_item(f: Finding, lang: str) -> str:
    vessel = _VESSEL[lang].get((f.vessel or "").upper(), f.vessel or _name(f, lang))
    return _TEXT[lang]["cac_vessel"].format(vessel=vessel, score=f.agatston or 0.0)


# --------------------------------------------------------------------------- the draft


def draft_report(
    result: AnalysisResult | Sequence[Finding],
    *,
    study_type: str | None = None,
    language: str | None = None,
    config: Mapping[str, Any] | None = None,
    model: str | None = None,
    total_agatston: float | None = None,
) -> DraftReport:
    """Draft report for one study from its AI findings.

    Parameters
    ----------
    result : AnalysisResult or sequence of Finding
        Findings (already filtered at the model's operating points).
    study_type : {"cxr", "ct_nodule", "ct_cac", "ct_liver"}, optional
        Template; default from the result, else ``"cxr"``.
    language, config
        See :func:`resolve_language`.
    total_agatston : float, optional
        CAC total; default the result's, else the sum over vessels.
    """
    lang = resolve_language(language, config)
    skipped = None
    limits: tuple[str, ...] = ()
    if isinstance(result, AnalysisResult):
        limits = tuple(_TEXT[lang][f"limit_{c}"] for c in result.limitations if f"limit_{c}" in _TEXT[lang])
        study_type = study_type or result.study_type
        if not model:  # the result's model, then any other model that produced one of its findings
            used = [result.model] + [f.algorithm for f in result.findings if f.algorithm is not None]
            model = ", ".join(dict.fromkeys(f"{m.name} {m.version}" for m in used))
        total_agatston = total_agatston if total_agatston is not None else result.total_agatston
        skipped = result.skipped
    study_type = study_type or "cxr"
    t = _TEXT[lang]
    model_line = t["model"].format(model=model) if model else ""
    findings = order_findings(findings_for(result), study_type)

    if skipped:
        return DraftReport(study_type, lang, (), (t["skipped"].format(reason=skipped),), model_line, False, skipped)

    if study_type == "cxr":
        items = [ReportItem(f.label, _cxr_item(f, lang), severity(f), f.tracking_uid) for f in findings]
        impression = _dedupe(_cxr_impression(f, lang) for f in findings)
        normal_key = "normal_cxr"
    elif study_type == "ct_nodule":
        items = [ReportItem(f.label, _nodule_item(f, lang), severity(f, study_type), f.tracking_uid) for f in findings]
        impression = _dedupe(_nodule_impression(f, lang) for f in findings[:3])
        normal_key = "normal_ct_nodule"
    elif study_type == "ct_liver":
        items = [ReportItem(f.label, _liver_item(f, lang), severity(f), f.tracking_uid) for f in findings]
        impression = _dedupe(i.text for i in items[:3])
        normal_key = "normal_ct_liver"
    elif study_type == "ct_cac":
        vessels = [f for f in findings if f.label == "coronary_calcium"]
        total = total_agatston if total_agatston is not None else sum(f.agatston or 0.0 for f in vessels)
        items = [ReportItem(f.label, _cac_item(f, lang), severity(f), f.tracking_uid)
                 for f in vessels if (f.agatston or 0) > 0]
        if total <= 0:
            return DraftReport(study_type, lang, (), (t["normal_ct_cac"],), model_line, True)
        cat = cac_drs(total)
        impression = [t["cac_total"].format(score=total, cat=cat, grade=_CAC_GRADE[lang][cat])]
        return DraftReport(study_type, lang, tuple(items), tuple(impression), model_line, False)
    else:
        raise ResultError(f"no report template for study type {study_type!r}")

    if not items:
        return DraftReport(study_type, lang, (), (t[normal_key],), model_line, True, limitations=limits)
    return DraftReport(study_type, lang, tuple(items), tuple(impression), model_line, False, limitations=limits)


def _dedupe(lines: Any) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line not in out:
            out.append(line)
    return out
