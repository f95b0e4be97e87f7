"""Similar-case retrieval for the reading workstation (Qt-free).

Queries (all return the top-k archived *cases*, one per study, the query study
excluded), with :class:`~dicom_node.similarity.Filters`:

* :meth:`SimilarCases.by_study` -- the study's stored image/series embeddings
  (computed now if the study has none yet);
* :meth:`SimilarCases.by_region` -- a box drawn on one image: its crop is embedded
  (:mod:`models.embedding`) and compared with the archived findings' crops;
* :meth:`SimilarCases.by_finding` -- one of the study's AI findings (its stored crop
  embedding), restricted to cases with the same finding label.

Each :class:`SimilarCase` carries the similarity, a thumbnail (PNG bytes), the case's
findings and the excerpt of its signed report.
"""
from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.config import load_config
from dicom_node.db import Database
from dicom_node.embeddings import (CT_REGION, CT_SERIES, CXR_IMAGE, CXR_REGION, RADIOGRAPH_MODALITIES, Space,
                                   StudyIndexer, rows_for, study_findings, vector_of)
from dicom_node.errors import NodeError
from dicom_node.similarity import Filters, Hit, SimilarityError, SimilarityIndex

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 280
THUMB_PX = 160


class SimilarQueryError(NodeError):
    """A similar-case query cannot be answered (unknown study, image or finding)."""


@dataclass
class SimilarCase:
    """One archived case similar to the query."""

    study_uid: str
    similarity: float
    modality: str
    study_date: str
    description: str
    findings: list[dict[str, Any]]
    report_state: str  # "signed" | "draft" | "none"
    report_excerpt: str  # of the signed report ("" when not signed)
    matched: dict[str, Any]  # kind, series/sop UID, label, box of the best-matching item
    thumbnail_png: bytes = field(default=b"", repr=False)

    def to_json(self, thumbnails: bool = False) -> dict[str, Any]:
        d = asdict(self)
        png = d.pop("thumbnail_png")
        if thumbnails:
            d["thumbnail_png_base64"] = base64.b64encode(png).decode("ascii") if png else ""
        d["similarity"] = round(float(self.similarity), 4)
        return d


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of a report, cut at a word boundary."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def to_png(grey: np.ndarray, box: tuple[float, ...] | None = None, max_px: int = THUMB_PX) -> bytes:
    """PNG bytes of a [0, 1] greyscale image scaled to ``max_px`` (a box drawn in yellow)."""
    from PIL import Image, ImageDraw

    g = np.clip(np.nan_to_num(np.asarray(grey, np.float32)), 0, 1)
    img = Image.fromarray((g * 255).astype(np.uint8)).convert("RGB")
    scale = max_px / max(img.size)
    if box is not None:
        ImageDraw.Draw(img).rectangle([float(b) for b in box[:4]], outline=(255, 220, 0),
                                      width=max(1, int(round(2 / max(scale, 1e-3)))))
    if scale < 1:
        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                         Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _report_text(body: str | None) -> str:
    try:
        obj = json.loads(body or "")
        return str(obj.get("text", "")) if isinstance(obj, dict) else str(obj)
    except json.JSONDecodeError:
        return body or ""


class SimilarCases:
    """Similar-case queries over one archive.

    Parameters
    ----------
    root : path, optional
        Archive root (default: ``MEDWS_ROOT`` or ``./medws-data``).
    thumbnails : bool
        Render thumbnails (PNG) for the results.
    """

    def __init__(self, root: str | Path | None = None, thumbnails: bool = True, threads: int | None = None) -> None:
        self.config = load_config(root)
        self.root = self.config.root
        self.db = Database(self.config.database_url, root=self.config.root)
        self.db.init_schema()
        self.index = SimilarityIndex(self.root, self.db)
        self.indexer = StudyIndexer(self.root, self.db, threads=threads)
        self.thumbnails = thumbnails

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ queries
    def by_study(self, study_uid: str, k: int = 10, filters: Filters | None = None) -> list[SimilarCase]:
        """Cases most similar to a whole study (its radiographs or CT series)."""
        self._require_study(study_uid)
        rows = [r for r in rows_for(self.db, study_uid) if r["kind"] in (CXR_IMAGE, CT_SERIES)]
        if not rows:
            self.indexer.index_study(study_uid)
            rows = [r for r in rows_for(self.db, study_uid) if r["kind"] in (CXR_IMAGE, CT_SERIES)]
        if not rows:
            raise SimilarQueryError(f"study {study_uid} has no radiograph or CT series to compare "
                                    "(or no embedding model is installed)")
        return self._merge([(Space(r["kind"], r["model_name"], r["model_version"]), vector_of(self.db, r["id"]))
                            for r in rows[:8]], study_uid, k, filters)

    def by_region(self, study_uid: str, sop_instance_uid: str, box: tuple[float, float, float, float],
                  k: int = 10, filters: Filters | None = None) -> list[SimilarCase]:
        """Cases whose findings look like the region ``box`` (x1, y1, x2, y2 in the image's pixels)."""
        self._require_study(study_uid)
        inst = self.db.query("SELECT i.path, se.modality FROM instances i LEFT JOIN series se "
                             "ON se.series_uid = i.series_uid WHERE i.sop_instance_uid = ? AND i.study_uid = ?",
                             (sop_instance_uid, study_uid))
        if not inst:
            raise SimilarQueryError(f"image {sop_instance_uid} is not in study {study_uid}")
        path, modality = self.root / inst[0]["path"], (inst[0]["modality"] or "").upper()
        if modality in RADIOGRAPH_MODALITIES:
            from models.imaging import load_radiograph

            emb = self.indexer.cxr()
            if emb is None:
                raise SimilarQueryError("no chest X-ray embedding model is installed")
            vec = emb.embed_region(load_radiograph(path).pixels, box)
            spaces = [Space(CXR_REGION, emb.model.name, emb.model.version),
                      Space(CXR_IMAGE, emb.model.name, emb.model.version)]
        elif modality == "CT":
            import pydicom

            ds = pydicom.dcmread(path)
            hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
                getattr(ds, "RescaleIntercept", 0) or 0)
            ct = self.indexer.ct()
            vec = ct.embed_crop(hu, box)
            spaces = [Space(CT_REGION, ct.model.name, ct.model.version)]
        else:
            raise SimilarQueryError(f"region queries need a CR/DX or CT image, not {modality or 'unknown'}")
        # compare with the archive's lesion crops; without any, with whole radiographs
        for space in spaces:
            if self.index._dim(space) is not None:
                return self._merge([(space, vec)], study_uid, k, filters)
        return []

    def by_finding(self, study_uid: str, finding: str, k: int = 10, filters: Filters | None = None,
                   same_label: bool = True) -> list[SimilarCase]:
        """Cases with findings like one of this study's AI findings.

        ``finding`` is the finding's tracking UID or its label (the first such finding).
        ``same_label`` restricts the results to cases with that finding label."""
        self._require_study(study_uid)
        found = [f for f in study_findings(self.db, study_uid)
                 if finding in (f.get("tracking_uid"), f.get("label"))]
        if not found:
            raise SimilarQueryError(f"study {study_uid} has no AI finding {finding!r}")
        f = found[0]
        filters = filters or Filters()
        if same_label:
            filters = Filters(filters.modality, f["label"], filters.signed_only, filters.date_from, filters.date_to,
                              filters.exclude_studies)
        regions = [r for r in rows_for(self.db, study_uid) if r["kind"] in (CXR_REGION, CT_REGION)
                   and (r["item_key"].endswith("|" + str(f.get("tracking_uid"))) or r["label"] == f["label"])]
        if regions:
            r = regions[0]
            return self._merge([(Space(r["kind"], r["model_name"], r["model_version"]),
                                 vector_of(self.db, r["id"]))], study_uid, k, filters)
        return self.by_study(study_uid, k, filters)

    # ------------------------------------------------------------ assembly
    def _require_study(self, study_uid: str) -> None:
        if not self.db.query("SELECT 1 FROM studies WHERE study_uid = ?", (study_uid,)):
            raise SimilarQueryError(f"no study {study_uid} in the archive")

    def _merge(self, queries: list[tuple[Space, np.ndarray]], study_uid: str, k: int,
               filters: Filters | None) -> list[SimilarCase]:
        filters = filters or Filters()
        filters = Filters(filters.modality, filters.finding, filters.signed_only, filters.date_from,
                          filters.date_to, frozenset(filters.exclude_studies) | {study_uid})
        best: dict[str, Hit] = {}
        for space, vec in queries:
            try:
                hits = self.index.search(space, vec, k, filters)
            except SimilarityError:
                raise
            for h in hits:
                if h.study_uid not in best or h.similarity > best[h.study_uid].similarity:
                    best[h.study_uid] = h
        ranked = sorted(best.values(), key=lambda h: -h.similarity)[:k]
        return [self._case(h) for h in ranked]

    def _case(self, hit: Hit) -> SimilarCase:
        s = self.db.query("SELECT study_date, study_description, modalities FROM studies WHERE study_uid = ?",
                          (hit.study_uid,))
        s0 = s[0] if s else None
        reports = self.db.query("SELECT state, body FROM reports WHERE study_uid = ? ORDER BY id DESC",
                                (hit.study_uid,))
        signed = next((r for r in reports if r["state"] == "signed"), None)
        state = "signed" if signed else ("draft" if reports else "none")
        findings = [{k: f.get(k) for k in ("label", "probability", "laterality", "zone", "task") if f.get(k) is not None}
                    for f in study_findings(self.db, hit.study_uid)]
        mod = self.db.query("SELECT modality FROM series WHERE series_uid = ?", (hit.series_uid,))
        return SimilarCase(
            study_uid=hit.study_uid, similarity=hit.similarity,
            modality=(mod[0][0] if mod and mod[0][0] else (s0["modalities"] if s0 else "")) or "",
            study_date=(s0["study_date"] if s0 else "") or "", description=(s0["study_description"] if s0 else "") or "",
            findings=findings, report_state=state,
            report_excerpt=excerpt(_report_text(signed["body"])) if signed else "",
            matched={"kind": hit.kind, "series_uid": hit.series_uid, "sop_instance_uid": hit.sop_instance_uid,
                     "label": hit.label, "box": list(hit.box) if hit.box else None},
            thumbnail_png=self.thumbnail(hit) if self.thumbnails else b"")

    def thumbnail(self, hit: Hit) -> bytes:
        """PNG of the best-matching image (the matched region boxed); ``b""`` when unreadable."""
        rows = self.db.query("SELECT path FROM instances WHERE sop_instance_uid = ?", (hit.sop_instance_uid,))
        if not rows:
            return b""
        path = self.root / rows[0]["path"]
        try:
            if hit.kind in (CXR_IMAGE, CXR_REGION):
                from models.imaging import load_radiograph

                return to_png(load_radiograph(path).pixels, hit.box)
            import pydicom

            ds = pydicom.dcmread(path)
            hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
                getattr(ds, "RescaleIntercept", 0) or 0)
            return to_png((hu + 160.0) / 400.0, hit.box)  # soft-tissue window 40/400
        except Exception as e:  # noqa: BLE001 - a missing thumbnail must not fail the query
            logger.warning("thumbnail unavailable: %s", type(e).__name__)
            return b""
