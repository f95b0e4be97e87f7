"""Worklist: studies from the node's index, ordered by priority, with status and filters.

Priority (lower rank first): STAT from the PACS or a critical AI finding → rank 0;
URGENT/HIGH → 1; routine → 2.  The AI can only raise a study's priority, never lower
one that came from the PACS (``rank = min(pacs_rank, ai_rank)``).

Status: ``new`` (no AI result) → ``AI ready`` (findings stored) → ``draft`` (a draft
report exists) → ``signed``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("new", "AI ready", "draft", "signed")
PACS_RANKS: dict[str, int] = {"STAT": 0, "EMERGENCY": 0, "URGENT": 1, "HIGH": 1, "ASAP": 1,
                              "MEDIUM": 2, "ROUTINE": 2, "LOW": 2, "": 2}
CRITICAL_LABELS: frozenset[str] = frozenset({"pneumothorax"})
RANK_NAMES: dict[int, str] = {0: "STAT", 1: "urgent", 2: "routine"}


@dataclass(frozen=True)
class WorklistRow:
    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    modalities: str
    description: str
    pacs_priority: str
    ai_critical: bool
    status: str
    rank: int
    findings: int

    @property
    def priority(self) -> str:
        name = RANK_NAMES.get(self.rank, "routine")
        return f"{name} (AI critical)" if self.ai_critical else name


def pacs_rank(priority: str | None) -> int:
    """Rank of a PACS priority string (unknown values count as routine)."""
    return PACS_RANKS.get((priority or "").strip().upper(), 2)


def priority_rank(pacs_priority: str | None, ai_critical: bool) -> int:
    """Combined rank: a critical AI finding raises to 0; the AI never lowers the PACS rank."""
    base = pacs_rank(pacs_priority)
    return min(base, 0) if ai_critical else base


def status_of(has_findings: bool, report_states: Iterable[str]) -> str:
    states = set(report_states)
    if "signed" in states:
        return "signed"
    if "draft" in states:
        return "draft"
    return "AI ready" if has_findings else "new"


def sort_rows(rows: Sequence[WorklistRow]) -> list[WorklistRow]:
    """Priority first, unsigned before signed, then newest study date first."""
    rows = sorted(rows, key=lambda r: r.study_date, reverse=True)
    return sorted(rows, key=lambda r: (r.rank, r.status == "signed"))


def matches(row: WorklistRow, text: str = "", status: str | None = None, modality: str | None = None) -> bool:
    """Search by patient ID, name or accession (case-insensitive substring) and filters."""
    if status and row.status != status:
        return False
    if modality and modality.upper() not in row.modalities.upper().split("\\"):
        return False
    t = text.strip().lower()
    if not t:
        return True
    return any(t in v.lower() for v in (row.patient_id, row.patient_name.replace("^", " "), row.patient_name,
                                        row.accession))


def critical_in(data: dict, critical: frozenset[str] = CRITICAL_LABELS) -> bool:
    """Whether a stored analysis result (or single finding) contains a critical finding."""
    items = data.get("findings", [data]) if isinstance(data, dict) else []
    return any(isinstance(f, dict) and f.get("label") in critical for f in items)


def query(db, text: str = "", status: str | None = None, modality: str | None = None,
          critical: frozenset[str] = CRITICAL_LABELS, pacs_priority: dict[str, str] | None = None) -> list[WorklistRow]:
    """Worklist rows from the node's index (:class:`dicom_node.db.Database`), filtered and sorted.

    Reads ``studies`` ⋈ ``patients``, ``findings.data`` (JSON) for critical labels,
    ``reports.state`` for status.  The PACS priority comes from an optional
    ``studies.priority`` column, else from ``pacs_priority`` (study UID → priority read from
    the images' headers), else routine.
    """
    pacs_priority = pacs_priority or {}
    cols = db.columns("studies")
    prio_col = "s.priority" if "priority" in cols else "''"
    rows = db.query(
        f"SELECT s.study_uid, s.patient_id, COALESCE(p.patient_name, '') AS patient_name, "
        f"COALESCE(s.accession_number, '') AS accession, COALESCE(s.study_date, '') AS study_date, "
        f"COALESCE(s.modalities, '') AS modalities, COALESCE(s.study_description, '') AS description, "
        f"COALESCE({prio_col}, '') AS priority "
        "FROM studies s LEFT JOIN patients p ON p.patient_id = s.patient_id")
    # counted in SQL (portable LIKE/REPLACE/LENGTH) so result JSON with masks is never loaded here
    crit_sql = " OR ".join(["data LIKE ?"] * (2 * len(critical))) or "0 = 1"
    crit_params: list[str] = []
    for label in sorted(critical):
        crit_params += [f'%"label": "{label}"%', f'%"label":"{label}"%']
    found = {r["study_uid"]: (int(r["n"] or 0), bool(r["crit"])) for r in db.query(
        "SELECT study_uid, SUM((LENGTH(REPLACE(data, '\"label\": ', '\"label\":')) - LENGTH(REPLACE(REPLACE("
        "data, '\"label\": ', '\"label\":'), '\"label\":', ''))) / 8) AS n, "
        f"MAX(CASE WHEN {crit_sql} THEN 1 ELSE 0 END) AS crit FROM findings GROUP BY study_uid", crit_params)}
    reports: dict[str, list[str]] = {}
    for r in db.query("SELECT study_uid, state FROM reports"):
        reports.setdefault(r["study_uid"], []).append(r["state"])
    out: list[WorklistRow] = []
    for r in rows:
        uid = r["study_uid"]
        has_results = uid in found
        n_findings, crit = found.get(uid, (0, False))
        prio = r["priority"] or pacs_priority.get(uid, "")
        row = WorklistRow(uid, r["patient_id"] or "", str(r["patient_name"]), r["accession"], r["study_date"],
                          r["modalities"], r["description"], prio, crit,
                          status_of(has_results, reports.get(uid, [])), priority_rank(prio, crit), n_findings)
        if matches(row, text, status, modality):
            out.append(row)
    return sort_rows(out)


def priority_from_header(ds) -> str:
    """PACS priority of an image's request: Requested Procedure Priority (0040,1003), top level or in the
    Request Attributes Sequence (0040,0275), else Study Priority ID (0032,000C); "" if none."""
    for item in [ds, *list(getattr(ds, "RequestAttributesSequence", []) or [])]:
        v = getattr(item, "RequestedProcedurePriority", "")
        if v:
            return str(v).strip().upper()
    return str(getattr(ds, "StudyPriorityID", "") or "").strip().upper()
