"""Pre-sign QA checks on report text against the reviewed findings (English and Korean).

Every check is a pure function ``check_x(text, findings, ...) -> list[QAMessage]``; each
message says what is wrong and where (line, character span, quoted text, finding).
:func:`run_checks` runs the enabled checks and marks the ones configured as blocking.

The text is read sentence by sentence; a finding term is a *positive* mention unless a
negation cue governs it (English: a cue such as "no", "without", "negative for" earlier in
the same clause; Korean: a cue such as "없", "보이지 않" after the term, before the next
term).  Laterality of a mention is the nearest side word in the same clause.

Findings are any objects with ``label``, ``laterality`` ("left"/"right"/"bilateral"/None),
``status`` ("accepted"/"rejected"/"pending"), ``size_mm`` (float or None) and ``ref``
(a short display name such as "#2").
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- vocabulary
#: Finding label → regexes for its mention (English, Korean).
TERMS: dict[str, tuple[str, ...]] = {
    "nodule_mass": (r"\bnodules?\b", r"\bmass(?:es)?\b", r"결절", r"종괴"),
    "consolidation": (r"\bconsolidations?\b", r"\bairspace opacit(?:y|ies)\b", r"경화", r"공기공간\s*음영"),
    "interstitial_opacity": (r"\binterstitial (?:opacit(?:y|ies)|markings?|pattern|changes?)\b",
                             r"\breticular (?:opacit(?:y|ies)|pattern)\b", r"간질성?\s*(?:음영|변화|병변)", r"망상\s*음영"),
    "pleural_effusion": (r"\b(?:pleural )?effusions?\b", r"흉수", r"흉막\s*삼출", r"늑막\s*삼출"),
    "pneumothorax": (r"\bpneumothora(?:x|ces)\b", r"기흉"),
    "liver_lesion": (r"\b(?:liver|hepatic) (?:lesions?|masse?s?|nodules?)\b", r"간\s*(?:병변|종괴|결절)"),
    "coronary_calcium": (r"\bcoronary (?:artery )?calci(?:um|fications?)\b", r"관상동맥\s*석회"),
}

#: Finding labels of other models that mean the same reported finding.
ALIASES: dict[str, str] = {"nodule": "nodule_mass", "mass": "nodule_mass"}


def canonical(label: str) -> str:
    """The QA vocabulary label for a finding label (CT ``nodule`` → ``nodule_mass``)."""
    return ALIASES.get(label, label)

HUMAN: dict[str, str] = {
    "nodule_mass": "nodule/mass",
    "consolidation": "consolidation",
    "interstitial_opacity": "interstitial opacity",
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "liver_lesion": "liver lesion",
    "coronary_calcium": "coronary calcium",
}

_SIDE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("bilateral", r"\bbilateral(?:ly)?\b|\bboth\b|양측|양쪽|양폐"),
    ("left", r"\bleft\b|좌측|왼쪽|좌폐|좌상엽|좌하엽|좌(?=\s)|(?<![가-힣])좌(?=[상하중]?[엽폐측])"),
    ("right", r"\bright\b|우측|오른쪽|우폐|우상엽|우중엽|우하엽|(?<![가-힣])우(?=[상하중]?[엽폐측])"),
)
_SIDE_RE = re.compile("|".join(f"(?P<{name}>{pat})" for name, pat in _SIDE_PATTERNS), re.IGNORECASE)

_NEG_EN = re.compile(
    r"\b(?:no|not|without|negative for|absence of|absent|free of|resolved|rule[sd]? out|"
    r"no evidence of|no sign of|nor)\b", re.IGNORECASE)
_NEG_KO = re.compile(r"없|보이지\s*않|관찰되지\s*않|확인되지\s*않|음성|배제|아니")
_CLAUSE_BREAK = re.compile(r"[;:]|,|\bbut\b|\bhowever\b|\balthough\b|\bwhereas\b|\band\b|하나|지만|이나", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n")
_SIZE_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:[x×]\s*(\d+(?:[.,]\d+)?)\s*)?(mm|cm|밀리미터|센티미터|㎜|㎝)(?![a-z])",
                      re.IGNORECASE)
_COMM_RE = re.compile(
    r"\b(?:communicated|discussed with|notified|called|informed|telephoned|conveyed|paged|"
    r"reported (?:by phone )?to)\b|통보|연락|전달|통화|알렸|알림|보고(?:하였|함|했)", re.IGNORECASE)
_HANGUL = re.compile(r"[가-힣]")

#: All check names, in display order.
CHECKS: tuple[str, ...] = ("laterality", "unmentioned", "absent_mentioned", "size", "critical_communication",
                           "unreviewed")


class QAFinding(Protocol):
    label: str
    laterality: str | None
    status: str
    size_mm: float | None
    ref: str


@dataclass(frozen=True)
class Finding:
    """Plain finding for QA (the review state exposes objects of the same shape)."""

    label: str
    laterality: str | None = None
    status: str = "accepted"
    size_mm: float | None = None
    ref: str = ""


@dataclass(frozen=True)
class QAMessage:
    """One QA result: which check, what, where (1-based line, character span in the text)."""

    check: str
    message: str
    line: int | None = None
    start: int | None = None
    end: int | None = None
    quote: str = ""
    finding: str = ""
    blocking: bool = False
    lang: str = "en"

    def format(self) -> str:
        t = MESSAGES.get(self.lang, MESSAGES["en"])
        where = t["line"].format(n=self.line) if self.line else ""
        quote = f"“{self.quote}” — " if self.quote else ""
        tag = t["block"] if self.blocking else t["warn"]
        return f"[{tag}] {where}{quote}{self.message}"


@dataclass(frozen=True)
class QAConfig:
    """Which checks run and which of them block signing; which labels are critical."""

    enabled: frozenset[str] = frozenset(CHECKS)
    blocking: frozenset[str] = frozenset({"laterality", "critical_communication"})
    critical_labels: frozenset[str] = frozenset({"pneumothorax"})
    size_tolerance: float = 0.20

    @classmethod
    def from_mapping(cls, m: dict) -> QAConfig:
        """Build from a config mapping (e.g. ``[workstation.qa]`` in a TOML file); unknown names raise."""
        def names(key: str, default: frozenset[str]) -> frozenset[str]:
            if key not in m:
                return default
            vals = frozenset(m[key])
            bad = vals - set(CHECKS)
            if bad:
                raise ValueError(f"unknown QA check(s) {sorted(bad)} in {key!r}; known: {', '.join(CHECKS)}")
            return vals
        return cls(enabled=names("enabled", cls.enabled), blocking=names("blocking", cls.blocking),
                   critical_labels=frozenset(m.get("critical_labels", cls.critical_labels)),
                   size_tolerance=float(m.get("size_tolerance", cls.size_tolerance)))


# --------------------------------------------------------------------------- text analysis
@dataclass(frozen=True)
class Mention:
    """A finding term in the report text."""

    label: str
    start: int
    end: int
    line: int
    negated: bool
    side: str | None
    sizes_mm: tuple[float, ...]
    sentence: str
    quote: str = field(default="")


def _sentences(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        out.append((pos, text[pos:m.start()]))
        pos = m.end()
    out.append((pos, text[pos:]))
    return [(s, t) for s, t in out if t.strip()]


def _clause_bounds(sentence: str, a: int, b: int) -> tuple[int, int]:
    lo, hi = 0, len(sentence)
    for m in _CLAUSE_BREAK.finditer(sentence):
        if m.end() <= a:
            lo = max(lo, m.end())
        elif m.start() >= b:
            hi = min(hi, m.start())
            break
    return lo, hi


def _to_mm(value: str, unit: str) -> float:
    v = float(value.replace(",", "."))
    return v * 10.0 if unit.lower() in ("cm", "센티미터", "㎝") else v


def find_mentions(text: str) -> list[Mention]:
    """Every finding term in ``text`` with negation, side and sizes of its clause."""
    mentions: list[Mention] = []
    for s_start, sentence in _sentences(text):
        hits: list[tuple[int, int, str]] = []
        for label, pats in TERMS.items():
            for pat in pats:
                for m in re.finditer(pat, sentence, re.IGNORECASE):
                    hits.append((m.start(), m.end(), label))
        hits.sort()
        # drop overlapping hits (keep the earliest, longest)
        kept: list[tuple[int, int, str]] = []
        for h in hits:
            if kept and h[0] < kept[-1][1]:
                continue
            kept.append(h)
        for i, (a, b, label) in enumerate(kept):
            lo, hi = _clause_bounds(sentence, a, b)
            korean = bool(_HANGUL.search(sentence[a:b]))
            if korean:
                nxt = kept[i + 1][0] if i + 1 < len(kept) else len(sentence)
                negated = bool(_NEG_KO.search(sentence[b:nxt]))
            else:
                neg_lo = lo
                # English negation also reaches through a list: "no effusion or pneumothorax"
                for j in range(i - 1, -1, -1):
                    between = sentence[kept[j][1]:a]
                    if re.fullmatch(r"[\s,]*(?:or|nor|,)?[\s,]*(?:\w+\s+){0,2}", between, re.IGNORECASE):
                        neg_lo = min(neg_lo, _clause_bounds(sentence, kept[j][0], kept[j][1])[0])
                    else:
                        break
                negated = bool(_NEG_EN.search(sentence[neg_lo:a]))
            side = _nearest_side(sentence, lo, hi, a, b)
            sizes = tuple(max(_to_mm(m.group(1), m.group(3)), _to_mm(m.group(2), m.group(3)) if m.group(2) else 0.0)
                          for m in _SIZE_RE.finditer(sentence[lo:hi]))
            line = text.count("\n", 0, s_start + a) + 1
            q0, q1 = s_start + lo, s_start + hi
            mentions.append(Mention(label, s_start + a, s_start + b, line, negated, side, sizes,
                                    sentence.strip(), text[q0:q1].strip()))
    return mentions


def _nearest_side(sentence: str, lo: int, hi: int, a: int, b: int) -> str | None:
    best: tuple[int, str] | None = None
    for m in _SIDE_RE.finditer(sentence, lo, hi):
        dist = a - m.end() if m.end() <= a else m.start() - b + 1  # prefer the side word before the term
        if dist < 0:
            continue
        if best is None or dist < best[0]:
            best = (dist, m.lastgroup or "")
    return best[1] if best else None


# --------------------------------------------------------------------------- checks
def _accepted(findings: Iterable[QAFinding]) -> list[QAFinding]:
    return [f for f in findings if f.status == "accepted"]


#: Message templates per language (English; Korean for Korean-reading radiologists).
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "laterality": "text says {side} {name}, but the accepted finding {desc} is on the {fside} side",
        "laterality_rejected": "text says {side} {name}, but that finding {rejected} was rejected; "
                               "the accepted finding {desc} is on the {fside} side",
        "unmentioned": "accepted finding {desc} is not mentioned in the report",
        "rejected": "text reports {name}, but the {name} finding {ref} was rejected",
        "never": "text reports {name}, but no {name} was found by the AI or added by hand "
                 "(add it as a finding or correct the text)",
        "size": "text gives {stated:g} mm for {name}, measured {measured:.1f} mm on {desc} "
                "({pct:.0f}% different, tolerance {tol:.0f}%)",
        "critical": "critical finding {desc} has no communication note (e.g. 'Discussed with Dr X at 14:05')",
        "unreviewed": "AI finding {desc} is neither accepted nor rejected",
        "line": "line {n}: ", "block": "BLOCKS SIGNING", "warn": "warning",
    },
    "ko": {
        "laterality": "본문은 {side} {name}(으)로 기술했으나 채택된 소견 {desc}은(는) {fside}입니다",
        "laterality_rejected": "본문은 {side} {name}(으)로 기술했으나 해당 소견 {rejected}은(는) 기각되었고 "
                               "채택된 소견 {desc}은(는) {fside}입니다",
        "unmentioned": "채택된 소견 {desc}이(가) 보고서에 언급되지 않았습니다",
        "rejected": "본문에 {name}이(가) 기술되어 있으나 {name} 소견 {ref}은(는) 기각되었습니다",
        "never": "본문에 {name}이(가) 기술되어 있으나 AI가 찾지 않았고 직접 추가되지도 않았습니다 "
                 "(소견으로 추가하거나 본문을 수정하세요)",
        "size": "본문의 {name} 크기 {stated:g} mm가 {desc}의 측정값 {measured:.1f} mm와 {pct:.0f}% 다릅니다 "
                "(허용 {tol:.0f}%)",
        "critical": "중요 소견 {desc}에 대한 전달 기록이 없습니다 (예: '14:05 담당의 홍길동에게 유선 통보함')",
        "unreviewed": "AI 소견 {desc}이(가) 채택 또는 기각되지 않았습니다",
        "line": "{n}행: ", "block": "서명 차단", "warn": "경고",
    },
}
NAMES_KO: dict[str, str] = {
    "nodule_mass": "결절/종괴", "consolidation": "경화", "interstitial_opacity": "간질성 음영",
    "pleural_effusion": "흉수", "pneumothorax": "기흉", "liver_lesion": "간 병변", "coronary_calcium": "관상동맥 석회화",
}
SIDES_KO: dict[str, str] = {"left": "좌측", "right": "우측", "bilateral": "양측"}


def _lang(lang: str) -> str:
    return lang if lang in MESSAGES else "en"


def _name(label: str, lang: str) -> str:
    return NAMES_KO.get(label, label) if lang == "ko" else HUMAN.get(label, label)


def _side(side: str | None, lang: str) -> str:
    return (SIDES_KO.get(side or "", side or "") if lang == "ko" else (side or ""))


def _describe(f: QAFinding, lang: str = "en") -> str:
    side = f"{_side(f.laterality, lang)} " if f.laterality else ""
    return f"{f.ref + ' ' if f.ref else ''}({side}{_name(canonical(f.label), lang)})"


def _msg(lang: str, key: str, **kw: object) -> str:
    return MESSAGES[_lang(lang)][key].format(**kw)


def _positive(text: str) -> list[Mention]:
    return [m for m in find_mentions(text) if not m.negated]


def check_laterality(text: str, findings: Sequence[QAFinding], lang: str = "en") -> list[QAMessage]:
    """A positive mention's side contradicts every accepted finding of that type."""
    out: list[QAMessage] = []
    acc = _accepted(findings)
    for m in _positive(text):
        if m.side is None:
            continue
        same = [f for f in acc if canonical(f.label) == m.label and f.laterality]
        if not same:
            continue
        sides = {f.laterality for f in same}
        if m.side in sides or "bilateral" in sides or (m.side == "bilateral" and {"left", "right"} <= sides):
            continue
        f = same[0]
        fside = "/".join(_side(x, lang) for x in sorted(x for x in sides if x))
        kw = {"side": _side(m.side, lang), "name": _name(m.label, lang), "desc": _describe(f, lang), "fside": fside}
        # the text still describes a finding on that side that the radiologist rejected:
        # name it, so the fix (drop the line or re-accept) is plain
        rejected = [r for r in findings if canonical(r.label) == m.label and r.status == "rejected"
                    and r.laterality == m.side]
        text_ = (_msg(lang, "laterality_rejected", rejected=_describe(rejected[0], lang), **kw) if rejected
                 else _msg(lang, "laterality", **kw))
        out.append(QAMessage("laterality", text_, m.line, m.start, m.end, m.quote,
                             rejected[0].ref if rejected else f.ref))
    return out


def check_unmentioned(text: str, findings: Sequence[QAFinding], lang: str = "en") -> list[QAMessage]:
    """An accepted finding whose type the text never mentions positively."""
    labels = {m.label for m in _positive(text)}
    return [QAMessage("unmentioned", _msg(lang, "unmentioned", desc=_describe(f, lang)), finding=f.ref)
            for f in _accepted(findings) if canonical(f.label) not in labels]


def check_absent_mentioned(text: str, findings: Sequence[QAFinding], lang: str = "en") -> list[QAMessage]:
    """The text asserts a finding that was rejected or never found (nor added by hand)."""
    out: list[QAMessage] = []
    acc_labels = {canonical(f.label) for f in _accepted(findings)}
    for m in _positive(text):
        if m.label in acc_labels:
            continue
        rejected = [f for f in findings if canonical(f.label) == m.label and f.status == "rejected"]
        pending = [f for f in findings if canonical(f.label) == m.label and f.status == "pending"]
        if pending:
            continue  # reported by the "unreviewed" check
        name = _name(m.label, lang)
        text_ = (_msg(lang, "rejected", name=name, ref=rejected[0].ref) if rejected
                 else _msg(lang, "never", name=name))
        out.append(QAMessage("absent_mentioned", text_, m.line, m.start, m.end, m.quote,
                             rejected[0].ref if rejected else ""))
    return out


def check_size(text: str, findings: Sequence[QAFinding], tolerance: float = 0.20,
               lang: str = "en") -> list[QAMessage]:
    """A size stated next to a finding differs from every measured size of that type by > tolerance."""
    out: list[QAMessage] = []
    acc = _accepted(findings)
    for m in _positive(text):
        measured = [(f, f.size_mm) for f in acc if canonical(f.label) == m.label and f.size_mm]
        if not measured or not m.sizes_mm:
            continue
        for stated in m.sizes_mm:
            rel = [abs(stated - s) / s for _, s in measured]
            if min(rel) > tolerance:
                f, s = measured[rel.index(min(rel))]
                out.append(QAMessage("size", _msg(lang, "size", stated=stated, name=_name(m.label, lang),
                                                  measured=s, desc=_describe(f, lang), pct=min(rel) * 100,
                                                  tol=tolerance * 100),
                                     m.line, m.start, m.end, m.quote, f.ref))
    return out


def check_critical_communication(text: str, findings: Sequence[QAFinding],
                                 critical: Iterable[str] = ("pneumothorax",), lang: str = "en") -> list[QAMessage]:
    """An accepted critical finding needs a communication note (who was told, when)."""
    crit = [f for f in _accepted(findings) if f.label in set(critical)]
    if not crit or _COMM_RE.search(text):
        return []
    return [QAMessage("critical_communication", _msg(lang, "critical", desc=_describe(f, lang)), finding=f.ref)
            for f in crit]


def check_unreviewed(text: str, findings: Sequence[QAFinding], lang: str = "en") -> list[QAMessage]:
    """AI findings not yet accepted or rejected."""
    return [QAMessage("unreviewed", _msg(lang, "unreviewed", desc=_describe(f, lang)), finding=f.ref)
            for f in findings if f.status == "pending"]


def run_checks(text: str, findings: Sequence[QAFinding], config: QAConfig | None = None,
               lang: str = "en") -> list[QAMessage]:
    """All enabled checks (messages in ``lang``: "en" or "ko"); blocking checks carry ``blocking=True``."""
    cfg = config or QAConfig()
    runners = {
        "laterality": lambda: check_laterality(text, findings, lang),
        "unmentioned": lambda: check_unmentioned(text, findings, lang),
        "absent_mentioned": lambda: check_absent_mentioned(text, findings, lang),
        "size": lambda: check_size(text, findings, cfg.size_tolerance, lang),
        "critical_communication": lambda: check_critical_communication(text, findings, cfg.critical_labels, lang),
        "unreviewed": lambda: check_unreviewed(text, findings, lang),
    }
    out: list[QAMessage] = []
    for name in CHECKS:
        if name in cfg.enabled:
            for msg in runners[name]():
                out.append(QAMessage(msg.check, msg.message, msg.line, msg.start, msg.end, msg.quote, msg.finding,
                                     name in cfg.blocking, _lang(lang)))
    return out


def blocking(messages: Sequence[QAMessage]) -> list[QAMessage]:
    """The messages that prevent signing."""
    return [m for m in messages if m.blocking]
