"""Query API on a small archive of real radiographs: by study, by region, by finding,
filters, re-analysis and deletion, and the analysis hook."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dicom_node.embeddings import CT_SERIES, CXR_IMAGE, CXR_REGION, StudyIndexer, rows_for
from dicom_node.similarity import Filters, SimilarityIndex
from tests.similar.conftest import add_finding, sign_report
from workstation.core.similar import SimilarCases, SimilarQueryError, excerpt

pytestmark = pytest.mark.usefixtures("cxr_embed_model")

PNG = b"\x89PNG\r\n\x1a\n"


def index_all(sa) -> StudyIndexer:
    indexer = StudyIndexer(sa.root, sa.db, threads=1)
    for uid in sa.studies:
        indexer.index_study(uid)
    return indexer


def effusion(sa) -> list[str]:
    return [u for u, s in sa.studies.items() if s["label"] == "pleural_effusion"]


def test_study_query_with_findings_reports_thumbnails(small_archive):
    sa = small_archive
    index_all(sa)
    kinds = [r["kind"] for u in sa.studies for r in rows_for(sa.db, u)]
    assert kinds.count(CXR_IMAGE) == 8 and kinds.count(CXR_REGION) == 4 and kinds.count(CT_SERIES) == 2
    q, signed = effusion(sa)[0], effusion(sa)[1]
    long = "Moderate right pleural effusion with adjacent compressive atelectasis. " * 8
    sign_report(sa.db, signed, long)
    sc = SimilarCases(sa.root)
    try:
        cases = sc.by_study(q, k=10)
        assert len(cases) == 7  # every other radiograph study, never the query, never a CT
        assert q not in {c.study_uid for c in cases}
        sims = [c.similarity for c in cases]
        assert sims == sorted(sims, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in sims)
        assert all(c.thumbnail_png.startswith(PNG) and c.modality == "CR" for c in cases)
        by_uid = {c.study_uid: c for c in cases}
        assert by_uid[signed].report_state == "signed"
        assert by_uid[signed].report_excerpt.startswith("Moderate right pleural effusion")
        assert len(by_uid[signed].report_excerpt) <= 290
        assert [f["label"] for f in by_uid[signed].findings] == ["pleural_effusion"]
        assert all(c.report_excerpt == "" for c in cases if c.study_uid != signed)
        assert json.loads(json.dumps(cases[0].to_json()))["study_uid"] == cases[0].study_uid
        # filters
        assert {c.study_uid for c in sc.by_study(q, 10, Filters(signed_only=True))} == {signed}
        assert {c.study_uid for c in sc.by_study(q, 10, Filters(finding="pleural_effusion"))} == set(effusion(sa)) - {q}
        assert sc.by_study(q, 10, Filters(modality="CT")) == []
        dates = sorted(s["date"] for u, s in sa.studies.items() if s["modality"] == "CR" and u != q)
        got = sc.by_study(q, 10, Filters(date_from=dates[0], date_to=dates[2]))
        assert sorted(c.study_date for c in got) == dates[:3]
        assert len(sc.by_study(q, k=2)) == 2
        with pytest.raises(SimilarQueryError):
            sc.by_study("1.2.3.4.5.6.7.8.9", 3)
    finally:
        sc.close()


def test_region_and_finding_queries(small_archive):
    sa = small_archive
    index_all(sa)
    q = effusion(sa)[0]
    rec = sa.studies[q]
    sc = SimilarCases(sa.root, thumbnails=False)
    try:
        cases = sc.by_region(q, rec["sop"], (300, 300, 460, 470), k=5)
        assert {c.study_uid for c in cases} == set(effusion(sa)) - {q}  # the archive's lesion crops
        assert all(c.matched["kind"] == CXR_REGION and c.matched["label"] == "pleural_effusion" for c in cases)
        assert all(len(c.matched["box"]) == 4 for c in cases)
        by_f = sc.by_finding(q, "pleural_effusion", k=5)
        assert {c.study_uid for c in by_f} == set(effusion(sa)) - {q}
        assert by_f[0].similarity >= by_f[-1].similarity
        with pytest.raises(SimilarQueryError):
            sc.by_finding(q, "pneumothorax")
        with pytest.raises(SimilarQueryError):
            sc.by_region(q, "1.2.3", (0, 0, 10, 10))
    finally:
        sc.close()


def test_reanalysis_and_deletion_update_the_index(small_archive):
    sa = small_archive
    indexer = index_all(sa)
    target = effusion(sa)[1]
    before = {r["item_key"] for r in rows_for(sa.db, target) if r["kind"] == CXR_REGION}
    # re-analysis: the finding is superseded by a different one
    sa.db.execute("DELETE FROM findings WHERE study_uid = ?", (target,))
    add_finding(sa.db, target, sa.studies[target]["sop"], "consolidation", [100, 150, 220, 300])
    counts = indexer.index_study(target)
    assert counts == {"added": 1, "kept": 1, "removed": 1, "failed": 0}
    after = [r for r in rows_for(sa.db, target) if r["kind"] == CXR_REGION]
    assert len(after) == 1 and after[0]["label"] == "consolidation" and after[0]["item_key"] not in before
    assert indexer.index_study(target) == {"added": 0, "kept": 2, "removed": 0, "failed": 0}  # nothing recomputed
    sc = SimilarCases(sa.root, thumbnails=False)
    try:
        q = effusion(sa)[0]
        assert target not in {c.study_uid for c in sc.by_finding(q, "pleural_effusion", 10)}
        # deletion: the study leaves the archive, its vectors leave the index
        with sa.db.transaction() as conn:
            for table in ("instances", "series", "findings", "studies"):
                conn.execute(f"DELETE FROM {table} WHERE study_uid = ?", (target,))
        assert indexer.index_study(target)["removed"] == 2
        assert target not in {c.study_uid for c in sc.by_study(q, 10)}
        status = {s["space"].split("--")[0]: s for s in SimilarityIndex(sa.root, sa.db).status()}
        assert status["cxr-image"]["stored"] == status["cxr-image"]["indexed"] == 7
    finally:
        sc.close()


def test_analysis_hook_embeds_every_analysed_study(small_archive):
    """``medws analyze`` (routing job, and task jobs where models exist) stores the embeddings."""
    from dicom_node.analysis import analyze_study

    sa = small_archive
    uid = next(u for u, s in sa.studies.items() if s["modality"] == "CR")
    ct = next(u for u, s in sa.studies.items() if s["modality"] == "CT")
    analyze_study(sa.config, uid, timeout_s=120)
    analyze_study(sa.config, ct, timeout_s=120)
    assert [r["kind"] for r in rows_for(sa.db, uid)].count(CXR_IMAGE) == 1
    assert [r["kind"] for r in rows_for(sa.db, ct)] == [CT_SERIES]
    row = sa.db.query("SELECT model_name, model_version, dim, vector FROM embeddings WHERE study_uid = ? "
                      "AND kind = ?", (uid, CXR_IMAGE))[0]
    assert row["model_name"] and row["model_version"]
    assert np.linalg.norm(np.frombuffer(row["vector"], "<f4")) == pytest.approx(1.0, abs=1e-4)
    assert (sa.root / "index").is_dir() and any((sa.root / "index").glob("cxr-image--*.hnsw"))


def test_ct_series_and_lesion_crop_queries(small_archive):
    from dicom_node.embeddings import CT_REGION

    sa = small_archive
    cts = [u for u, s in sa.studies.items() if s["modality"] == "CT"]
    for u in cts:
        add_finding(sa.db, u, sa.studies[u]["sop"], "lung_nodule", [40, 40, 60, 60], task="ct-nodule")
    index_all(sa)
    assert [r["kind"] for r in rows_for(sa.db, cts[0])].count(CT_REGION) == 1
    sc = SimilarCases(sa.root)
    try:
        by_series = sc.by_study(cts[0], k=5)
        assert [c.study_uid for c in by_series] == [cts[1]] and by_series[0].similarity > 0.9
        assert by_series[0].modality == "CT" and by_series[0].thumbnail_png.startswith(PNG)
        crop = sc.by_region(cts[0], sa.studies[cts[0]]["sop"], (38, 38, 62, 62), k=5)
        assert [c.study_uid for c in crop] == [cts[1]] and crop[0].matched["kind"] == CT_REGION
        assert [c.study_uid for c in sc.by_finding(cts[0], "lung_nodule", k=5)] == [cts[1]]
    finally:
        sc.close()


def test_excerpt():
    assert excerpt("a  b\n c") == "a b c"
    text = "word " * 100
    out = excerpt(text, 20)
    assert out.endswith("…") and len(out) <= 22
