"""Draft report templates: English and Korean, critical first, normal wording, CT templates."""
from __future__ import annotations

import pytest

from dicom_node.findings import AnalysisResult, Finding, ModelInfo, ResultError
from dicom_node.report import (
    CRITICAL,
    MINOR,
    SIGNIFICANT,
    cac_drs,
    draft_report,
    lung_rads,
    order_findings,
    resolve_language,
    severity,
)

MODEL = ModelInfo("cxr-lesion", "1.2.0")
CXR = AnalysisResult("cxr", MODEL, (
    Finding("pleural_effusion", 0.71, laterality="right", zone="lower"),
    Finding("interstitial_opacity", 0.55, laterality="bilateral"),
    Finding("pneumothorax", 0.93, laterality="left", zone="upper"),
))


def test_cxr_english():
    r = draft_report(CXR, language="en")
    assert [i.text for i in r.items] == [
        "Pneumothorax in the left upper zone (AI probability 0.93)",
        "Pleural effusion in the right lower zone (AI probability 0.71)",
        "Interstitial opacity bilaterally (AI probability 0.55)",
    ]
    assert r.impression == (
        "Left pneumothorax (critical: communicate to the referring physician)",
        "Right pleural effusion",
        "Bilateral interstitial opacity",
    )
    assert r.critical and not r.normal
    assert r.text.startswith("FINDINGS:\n- Pneumothorax")
    assert "IMPRESSION:\n1. Left pneumothorax" in r.text
    assert "Model: cxr-lesion 1.2.0" in r.text


def test_cxr_korean():
    r = draft_report(CXR, language="ko")
    assert [i.text for i in r.items] == [
        "좌측 상폐야 기흉 (AI 확률 0.93)",
        "우측 하폐야 흉막 삼출 (AI 확률 0.71)",
        "양측 간질성 음영 (AI 확률 0.55)",
    ]
    assert r.impression[0] == "좌측 기흉 (긴급: 의뢰의에게 즉시 알릴 것)"
    assert r.text.startswith("소견:\n- 좌측 상폐야 기흉")
    assert "결론:\n1. 좌측 기흉" in r.text


def test_normal_wording_and_skipped():
    normal = AnalysisResult("cxr", MODEL, ())
    en, ko = draft_report(normal, language="en"), draft_report(normal, language="ko")
    assert en.normal and not en.critical and en.items == ()
    assert en.impression == ("No acute cardiopulmonary abnormality detected by AI.",)
    assert ko.impression == ("AI 분석상 급성 심폐 이상 소견 없음.",)
    skipped = draft_report(AnalysisResult("cxr", MODEL, (), skipped="lateral view"))
    assert not skipped.normal and skipped.impression == ("AI analysis not performed: lateral view.",)


def test_language_from_configuration():
    assert draft_report(CXR, config={"report": {"language": "ko"}}).language == "ko"
    assert draft_report(CXR, config={"report_language": "ko"}).language == "ko"
    assert draft_report(CXR, language="en", config={"report": {"language": "ko"}}).language == "en"
    assert resolve_language() == "en"
    with pytest.raises(ResultError, match="not supported"):
        resolve_language("fr")


def test_ordering_critical_first_then_rank_then_probability():
    fs = [Finding("consolidation", 0.6), Finding("consolidation", 0.9), Finding("interstitial_opacity", 0.99),
          Finding("pneumothorax", 0.51), Finding("nodule_mass", 0.7)]
    assert [(f.label, f.probability) for f in order_findings(fs)] == [
        ("pneumothorax", 0.51), ("nodule_mass", 0.7), ("consolidation", 0.9), ("consolidation", 0.6),
        ("interstitial_opacity", 0.99)]
    assert severity(fs[3]) == CRITICAL and severity(fs[0]) == SIGNIFICANT and severity(fs[2]) == MINOR


@pytest.mark.parametrize("d, kind, expected", [
    (5.9, "solid", "2"), (6.0, "solid", "3"), (7.9, "solid", "3"), (8.0, "solid", "4A"), (14.9, None, "4A"),
    (15.0, "solid", "4B"), (29.0, "ground_glass", "2"), (30.0, "ground_glass", "3"), (20.0, "calcified", "1"),
    (10.0, "part_solid", None),
])
def test_lung_rads(d, kind, expected):
    assert lung_rads(Finding("nodule", long_axis_mm=d, type=kind)) == expected


def test_given_category_wins():
    assert lung_rads(Finding("nodule", long_axis_mm=4.0, category="Lung-RADS 4X")) == "4X"


@pytest.mark.parametrize("score, cat", [(0, 0), (1, 1), (99, 1), (100, 2), (299, 2), (300, 3), (1500, 3)])
def test_cac_drs(score, cat):
    assert cac_drs(score) == cat


def test_ct_nodule_template():
    fs = (Finding("nodule", 0.8, long_axis_mm=5.0, short_axis_mm=4.0, type="solid", lobe="LLL"),
          Finding("nodule", 0.9, long_axis_mm=10.0, short_axis_mm=8.0, volume_mm3=300.0, type="solid", lobe="RUL"))
    res = AnalysisResult("ct_nodule", ModelInfo("ct-nodule", "0.3.0"), fs)
    en = draft_report(res, language="en")
    assert en.items[0].text == ("Solid nodule in the right upper lobe, 10 x 8 mm, mean 9.0 mm, volume 300 mm3, "
                                "Lung-RADS 4A, AI probability 0.90")
    assert en.impression[0] == ("Lung-RADS 4A: solid nodule 9.0 mm in the right upper lobe; "
                                "3-month low-dose CT; PET/CT may be considered")
    ko = draft_report(res, language="ko")
    assert ko.items[0].text.startswith("우상엽 고형 결절, 10 x 8 mm, 평균 9.0 mm")
    assert ko.impression[0] == "Lung-RADS 4A: 우상엽 고형 결절 9.0 mm; 3개월 후 저선량 CT, PET/CT 고려"
    assert draft_report(AnalysisResult("ct_nodule", MODEL, ()), language="en").impression == (
        "No pulmonary nodule detected by AI.",)


def test_ct_cac_template():
    fs = (Finding("coronary_calcium", vessel="RCA", agatston=30.0), Finding("coronary_calcium", vessel="LAD",
                                                                             agatston=120.0))
    en = draft_report(fs, study_type="ct_cac", language="en")
    assert [i.text for i in en.items] == ["left anterior descending (LAD): Agatston 120",
                                          "right coronary artery (RCA): Agatston 30"]
    assert en.impression == ("Total coronary artery calcium score (Agatston) 150: CAC-DRS 2 (moderate).",)
    ko = draft_report(fs, study_type="ct_cac", language="ko")
    assert ko.impression == ("총 관상동맥 석회화 점수(Agatston) 150: CAC-DRS 2 (중등도).",)
    zero = draft_report((), study_type="ct_cac", language="en", total_agatston=0.0)
    assert zero.normal and zero.impression == ("No coronary artery calcium (Agatston score 0, CAC-DRS 0).",)


def test_ct_liver_template_puts_malignant_first():
    fs = (Finding("liver_lesion", long_axis_mm=12.0, type="cyst", lobe="S7", mean_hu=5.0),
          Finding("liver_lesion", long_axis_mm=25.0, type="metastasis", lobe="S4", mean_hu=45.0))
    en = draft_report(fs, study_type="ct_liver", language="en")
    assert en.items[0].text == "Liver lesion in segment S4, likely metastasis, 25 mm, mean 45 HU"
    assert en.items[1].text == "Liver lesion in segment S7, likely cyst, 12 mm, mean 5 HU"
    ko = draft_report(fs, study_type="ct_liver", language="ko")
    assert ko.items[0].text == "간 S4 분절 병변, 전이 추정, 25 mm, 평균 45 HU"
    assert draft_report((), study_type="ct_liver", language="ko").impression == ("AI 분석상 국소 간 병변 없음.",)


def test_unknown_study_type():
    with pytest.raises(ResultError, match="no report template"):
        draft_report((), study_type="mammo")


def test_footer_names_every_model_behind_the_findings():
    import dataclasses

    from dicom_node.findings import AnalysisResult, Finding, ModelInfo
    from dicom_node.report import draft_report

    base = AnalysisResult("cxr", ModelInfo("cxr-lesions", "0.5.0"), (
        Finding("nodule_mass", 0.9, laterality="left", zone="lower", algorithm=ModelInfo("cxr-nodule", "1.0.0")),
        Finding("consolidation", 0.8, laterality="right", zone="middle")), abnormality=0.9)
    assert "Model: cxr-lesions 0.5.0, cxr-nodule 1.0.0" in draft_report(base).text
    plain = dataclasses.replace(base, findings=base.findings[1:])
    assert "Model: cxr-lesions 0.5.0\n" in draft_report(plain).text + "\n"


def test_low_operating_point_finding_never_reads_zero():
    """A class whose operating point is far below 0.01 (interstitial opacity: 0.002) prints
    its output with two significant digits, not "0.00"."""
    from dicom_node.report import probability_text

    r = draft_report(AnalysisResult("cxr", MODEL, (Finding("interstitial_opacity", 0.0049, laterality="left",
                                                           zone="lower"),)), language="en")
    assert r.items[0].text == "Interstitial opacity in the left lower zone (AI probability 0.0049)"
    assert [probability_text(p) for p in (0.93, 0.01, 0.0049, 0.000123, 0.0)] == ["0.93", "0.01", "0.0049",
                                                                                 "0.00012", "0.00"]


def test_ct_liver_task_subtypes_order_and_severity():
    """The liver task's descriptive subtypes (models.ct.liver.SUBTYPES): cyst-like is minor,
    HCC-like and hypo-enhancing lesions come first; the category gives the wording."""
    from dicom_node.report import MINOR, SIGNIFICANT, severity
    from models.ct.liver import SUBTYPES

    fs = (Finding("liver_lesion", long_axis_mm=30.0, type="cyst_like", category="cyst-like (water attenuation, no enhancement)"),
          Finding("liver_lesion", long_axis_mm=14.0, type="hcc_like", category="HCC-like features (>= 10 mm)"))
    assert {f.type for f in fs} <= set(SUBTYPES)
    assert [severity(f, "ct_liver") for f in fs] == [MINOR, SIGNIFICANT]
    en = draft_report(fs, study_type="ct_liver", language="en")
    assert "HCC-like features" in en.items[0].text and "cyst-like" in en.items[1].text


def test_ct_nodule_limitations_from_the_task_warnings_are_worded_in_the_report_language():
    """The nodule task's warnings (soft or thick reconstruction) travel with the result as
    codes and appear in the draft report as limitations, in its language; unknown codes are
    kept on the result but not worded."""
    obj = {"study_type": "ct_nodule", "model": {"name": "ct-nodule-fpr", "version": "1.6.2"}, "findings": [],
           "warnings": [{"code": "soft_reconstruction", "message": "soft or thick reconstruction ..."},
                        {"code": "thick_slices", "message": "slices 3.0 mm ..."}, {"code": "other"}, "free text"]}
    res = AnalysisResult.from_json(obj)
    assert res.limitations == ("soft_reconstruction", "thick_slices", "other")
    assert AnalysisResult.from_json(res.to_json()).limitations == res.limitations
    en = draft_report(res, language="en")
    assert en.normal and len(en.limitations) == 2
    assert "LIMITATIONS:\n- Soft-kernel or thick-slice reconstruction" in en.text
    assert en.text.index("LIMITATIONS") < en.text.index("AI-generated draft")
    ko = draft_report(res, language="ko")
    assert "제한점:" in ko.text and "2.5 mm" in ko.limitations[1]
    plain = draft_report(AnalysisResult("ct_nodule", MODEL, ()), language="en")
    assert plain.limitations == () and "LIMITATIONS" not in plain.text
