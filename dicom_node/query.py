"""C-FIND matching on the index (PS3.4 C.2.2.2, C.6.2 Study Root).

:func:`build_query` turns a query identifier (as a plain ``{keyword: value}`` dict)
into portable SQL; :func:`find` runs it and returns one ``{keyword: value}`` dict per
match with the requested keys filled.  Matching supported: universal (empty value),
single value, wildcard (``*``, ``?``) on text attributes, list of UIDs (``\\``),
range on dates and times (``a-b``, ``-b``, ``a-``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dicom_node.db import Database
from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

LEVELS = ("STUDY", "SERIES", "IMAGE")


class QueryError(NodeError):
    """The query identifier is invalid (PS3.4 C.4.1.1.4: 0xA900 identifier does not match SOP class)."""

    status = 0xA900


@dataclass(frozen=True)
class _Attr:
    column: str
    kind: str  # text | uid | date | time | int | multi | count
    level: str


ATTRIBUTES: dict[str, _Attr] = {
    "PatientID": _Attr("s.patient_id", "text", "STUDY"),
    "PatientName": _Attr("p.patient_name", "text", "STUDY"),
    "PatientBirthDate": _Attr("p.birth_date", "date", "STUDY"),
    "PatientSex": _Attr("p.sex", "text", "STUDY"),
    "StudyInstanceUID": _Attr("s.study_uid", "uid", "STUDY"),
    "StudyDate": _Attr("s.study_date", "date", "STUDY"),
    "StudyTime": _Attr("s.study_time", "time", "STUDY"),
    "AccessionNumber": _Attr("s.accession_number", "text", "STUDY"),
    "StudyID": _Attr("s.study_id", "text", "STUDY"),
    "StudyDescription": _Attr("s.study_description", "text", "STUDY"),
    "ReferringPhysicianName": _Attr("s.referring_physician", "text", "STUDY"),
    "ModalitiesInStudy": _Attr("s.modalities", "multi", "STUDY"),
    "NumberOfStudyRelatedSeries": _Attr("s.num_series", "count", "STUDY"),
    "NumberOfStudyRelatedInstances": _Attr("s.num_instances", "count", "STUDY"),
    "SeriesInstanceUID": _Attr("se.series_uid", "uid", "SERIES"),
    "Modality": _Attr("se.modality", "text", "SERIES"),
    "SeriesNumber": _Attr("se.series_number", "int", "SERIES"),
    "SeriesDescription": _Attr("se.series_description", "text", "SERIES"),
    "BodyPartExamined": _Attr("se.body_part", "text", "SERIES"),
    "NumberOfSeriesRelatedInstances": _Attr("se.num_instances", "count", "SERIES"),
    "SOPInstanceUID": _Attr("i.sop_instance_uid", "uid", "IMAGE"),
    "SOPClassUID": _Attr("i.sop_class_uid", "uid", "IMAGE"),
    "InstanceNumber": _Attr("i.instance_number", "int", "IMAGE"),
    "ViewPosition": _Attr("i.view_position", "text", "IMAGE"),
}
_RANK = {lvl: n for n, lvl in enumerate(LEVELS)}
_IGNORED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "TimezoneOffsetFromUTC"}


def _escape(value: str) -> str:
    """``value`` as a literal LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(value: str) -> str:
    """A DICOM wildcard value (``*``, ``?``; PS3.4 C.2.2.2.4) as a LIKE pattern.

    The LIKE conditions state ``ESCAPE`` and compare ``LOWER()`` of both sides, so they
    match the same on SQLite (LIKE ignores ASCII case, has no default escape) and
    PostgreSQL (LIKE is case-sensitive, backslash is its default escape)."""
    return _escape(value).replace("*", "%").replace("?", "_")


def _condition(attr: _Attr, value: str) -> tuple[str, list[Any]]:
    col = attr.column
    if attr.kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        return f"{col} IN ({', '.join('?' for _ in uids)})", uids
    if attr.kind in ("date", "time") and "-" in value:
        lo, hi = (v.strip() for v in value.split("-", 1))
        parts, params = [], []
        if lo:
            parts.append(f"{col} >= ?")
            params.append(lo)
        if hi:
            # a time upper bound "1200" includes 120059.999
            parts.append(f"{col} <= ?")
            params.append(hi + ("\uffff" if attr.kind == "time" else ""))
        return " AND ".join(parts) or "1 = 1", params
    if attr.kind == "multi":
        mods = [m.strip() for m in value.split("\\") if m.strip()]
        ors = " OR ".join(f"LOWER('\\' || {col} || '\\') LIKE LOWER(?) ESCAPE '\\'" for _ in mods)
        return f"({ors})", [f"%\\\\{_escape(m)}\\\\%" for m in mods]
    if attr.kind in ("int", "count"):
        try:
            return f"{col} = ?", [int(value)]
        except ValueError as e:
            raise QueryError(f"{value!r} is not a number") from e
    if "*" in value or "?" in value:
        return f"LOWER({col}) LIKE LOWER(?) ESCAPE '\\'", [_like(value)]
    return f"{col} = ?", [value]


def build_query(identifier: dict[str, Any]) -> tuple[str, list[Any], str, list[str]]:
    """SQL, parameters, level and returned keywords for a Study Root identifier."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").upper().strip()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel must be one of {LEVELS}, not {level!r}")
    keys: list[str] = []
    where: list[str] = []
    params: list[Any] = []
    for keyword, raw in identifier.items():
        if keyword in _IGNORED:
            continue
        attr = ATTRIBUTES.get(keyword)
        if attr is None or _RANK[attr.level] > _RANK[level]:
            continue  # unsupported optional key: returned empty (PS3.4 C.2.2.1.3)
        keys.append(keyword)
        value = "" if raw is None else ("\\".join(str(v) for v in raw) if isinstance(raw, (list, tuple)) else str(raw))
        if value and attr.kind != "count" and value != "*":
            cond, p = _condition(attr, value)
            where.append(cond)
            params.extend(p)
    unique = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[level]
    if unique not in keys:
        keys.append(unique)
    cols = ", ".join(f'{ATTRIBUTES[k].column} AS "{k}"' for k in keys)  # quoted: case kept (PostgreSQL)
    sql = f"SELECT {cols} FROM studies s JOIN patients p ON p.patient_id = s.patient_id"
    if _RANK[level] >= 1:
        sql += " JOIN series se ON se.study_uid = s.study_uid"
    if _RANK[level] >= 2:
        sql += " JOIN instances i ON i.series_uid = se.series_uid"
    if where:
        sql += " WHERE " + " AND ".join(where)
    order = {"STUDY": "s.study_date, s.study_uid", "SERIES": "se.series_number, se.series_uid",
             "IMAGE": "i.instance_number, i.sop_instance_uid"}[level]
    return sql + f" ORDER BY {order}", params, level, keys


def find(db: Database, identifier: dict[str, Any]) -> list[dict[str, Any]]:
    """Matches of ``identifier`` as dicts (``QueryRetrieveLevel`` included)."""
    sql, params, level, keys = build_query(identifier)
    out = []
    for row in db.query(sql, params):
        match = {"QueryRetrieveLevel": level}
        for k in keys:
            match[k] = row[k]
        out.append(match)
    return out


def instance_rows(db: Database, identifier: dict[str, Any]) -> list[dict[str, Any]]:
    """Instances selected by a C-GET/C-MOVE identifier (PS3.4 C.4.2.2.1, C.4.3.2.1)."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").upper().strip()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel must be one of {LEVELS}, not {level!r}")
    where, params = [], []
    for keyword, column in (("StudyInstanceUID", "study_uid"), ("SeriesInstanceUID", "series_uid"),
                            ("SOPInstanceUID", "sop_instance_uid")):
        raw = identifier.get(keyword)
        value = "\\".join(str(v) for v in raw) if isinstance(raw, (list, tuple)) else str(raw or "")
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if uids:
            where.append(f"{column} IN ({', '.join('?' for _ in uids)})")
            params.extend(uids)
    if not where:
        raise QueryError("a retrieve needs at least one of StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID")
    sql = "SELECT * FROM instances WHERE " + " AND ".join(where) + " ORDER BY series_uid, instance_number"
    return [dict(r) for r in db.query(sql, params)]
