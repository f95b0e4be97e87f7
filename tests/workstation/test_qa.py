"""Pre-sign QA checks (English and Korean)."""
from __future__ import annotations

import pytest

from workstation.core import qa
from workstation.core.qa import Finding

FINDINGS = [
    Finding("pleural_effusion", "left", "accepted", None, "#1"),
    Finding("pneumothorax", "right", "rejected", None, "#2"),
    Finding("nodule_mass", "right", "accepted", 15.0, "#3"),
]


def checks(text, findings=FINDINGS, **cfg):
    return [m.check for m in qa.run_checks(text, findings, qa.QAConfig(**cfg) if cfg else None)]


def test_clean_report_has_no_messages():
    assert checks("Small left pleural effusion. A 16 mm nodule in the right upper lobe. No pneumothorax.") == []


def test_laterality_mismatch_says_what_and_where():
    text = "Heart normal.\nRight pleural effusion. 15 mm right nodule. No pneumothorax."
    msgs = qa.run_checks(text, FINDINGS)
    lat = [m for m in msgs if m.check == "laterality"]
    assert len(lat) == 1
    m = lat[0]
    assert m.line == 2 and m.blocking and "#1" in m.message and "left" in m.message
    assert text[m.start:m.end].lower() == "pleural effusion"
    assert "Right pleural effusion" in m.quote


@pytest.mark.parametrize("text", ["우측 흉수가 있습니다. 우상엽에 15 mm 결절. 기흉은 없습니다.",
                                  "오른쪽 흉막 삼출. 우상엽 결절 1.5 cm. 기흉 없음."])
def test_laterality_korean(text):
    assert checks(text) == ["laterality"]


def test_unmentioned_accepted_finding():
    msgs = qa.run_checks("Small left pleural effusion. No pneumothorax.", FINDINGS)
    assert [m.check for m in msgs] == ["unmentioned"]
    assert "#3" in msgs[0].message and not msgs[0].blocking


def test_negated_mention_does_not_count_as_mentioned():
    assert "unmentioned" in checks("No pleural effusion. 15 mm right nodule.")


def test_rejected_finding_mentioned():
    msgs = qa.run_checks("Left pleural effusion. 15 mm right nodule. Small right pneumothorax.", FINDINGS)
    assert [m.check for m in msgs] == ["absent_mentioned"]
    assert "rejected" in msgs[0].message and msgs[0].line == 1


def test_never_found_finding_mentioned_korean():
    msgs = qa.run_checks("좌측 흉수. 우상엽 15 mm 결절. 경화가 보입니다.", FINDINGS)
    assert [m.check for m in msgs] == ["absent_mentioned"]
    assert "consolidation" in msgs[0].message


def test_size_check_20_percent():
    assert checks("Left pleural effusion. 17 mm right nodule.") == []  # 13 %
    assert checks("Left pleural effusion. 2.5 cm right nodule.") == ["size"]  # 67 %
    assert checks("좌측 흉수. 우상엽 결절 12 mm.") == []  # 20 % exactly is tolerated
    assert checks("Left pleural effusion. 2 x 1.1 cm right nodule.") == ["size"]


def test_critical_without_communication():
    f = [Finding("pneumothorax", "left", "accepted", None, "#1")]
    msgs = qa.run_checks("Large left pneumothorax.", f)
    assert [m.check for m in msgs] == ["critical_communication"] and msgs[0].blocking
    assert checks("Large left pneumothorax. Discussed with Dr Lee at 14:05.", f) == []
    assert checks("좌측 기흉. 담당의에게 14시 05분 유선 통보함.", f) == []


def test_unreviewed_and_configurable_blocking():
    f = [Finding("pleural_effusion", "left", "pending", None, "#1")]
    msgs = qa.run_checks("Left pleural effusion.", f)
    assert [m.check for m in msgs] == ["unreviewed"] and not msgs[0].blocking
    cfg = qa.QAConfig.from_mapping({"blocking": ["unreviewed"]})
    assert qa.blocking(qa.run_checks("Left pleural effusion.", f, cfg))
    cfg2 = qa.QAConfig.from_mapping({"enabled": ["size"]})
    assert qa.run_checks("Right pleural effusion.", FINDINGS, cfg2) == []
    with pytest.raises(ValueError, match="unknown QA check"):
        qa.QAConfig.from_mapping({"blocking": ["spelling"]})


def test_negation_scope_english_lists_and_but():
    ms = {(m.label, m.negated) for m in qa.find_mentions("No effusion or pneumothorax, but a right nodule.")}
    assert ms == {("pleural_effusion", True), ("pneumothorax", True), ("nodule_mass", False)}
    ms = {(m.label, m.negated) for m in qa.find_mentions("기흉은 없고 우측 흉수가 있습니다.")}
    assert ms == {("pneumothorax", True), ("pleural_effusion", False)}


def test_bilateral_finding_accepts_either_side():
    f = [Finding("pleural_effusion", "bilateral", "accepted", None, "#1")]
    assert checks("Right pleural effusion.", f) == []


def test_ct_labels_and_aliases():
    f = [Finding("nodule", "left", "accepted", 19.0, "#1")]
    assert checks("Solid nodule in the left lower lobe, 19 x 16 mm.", f) == []
    assert checks("Solid nodule in the right lower lobe, 19 mm.", f) == ["laterality"]
    assert checks("좌하엽에 30 mm 결절.", f) == ["size"]
    assert checks("Hepatic lesion in segment 4. Left lower lobe nodule 19 mm.", f) == ["absent_mentioned"]


def test_messages_in_korean():
    msgs = qa.run_checks("우측 흉수가 있습니다. 우상엽에 30 mm 결절.", FINDINGS, lang="ko")
    by = {m.check: m for m in msgs}
    assert "채택된 소견 #1 (좌측 흉수)" in by["laterality"].message and "좌측" in by["laterality"].message
    assert by["laterality"].format().startswith("[서명 차단] 1행:")
    assert "측정값 15.0 mm" in by["size"].message and by["size"].format().startswith("[경고]")
    crit = qa.run_checks("좌측 기흉.", [Finding("pneumothorax", "left", "accepted", None, "#1")], lang="ko")
    assert "전달 기록" in crit[0].message
    assert qa.run_checks("Right pleural effusion.", FINDINGS, lang="xx")[0].format().startswith("[BLOCKS SIGNING]")


@pytest.mark.parametrize("lang,text,words", [
    ("en", "Right pleural effusion. Left pleural effusion. 15 mm right nodule. No pneumothorax.",
     ("#4", "rejected", "#1", "left")),
    ("ko", "우측 흉수. 좌측 흉수. 우상엽 15 mm 결절. 기흉은 없습니다.", ("#4", "기각", "#1", "좌측")),
])
def test_laterality_names_the_rejected_finding_on_that_side(lang, text, words):
    """The draft still describes the right effusion the radiologist rejected, beside the
    accepted left one: the blocking message names the rejected finding, not only the side."""
    findings = FINDINGS + [Finding("pleural_effusion", "right", "rejected", None, "#4")]
    msgs = qa.run_checks(text, findings, lang=lang)
    lat = [m for m in msgs if m.check == "laterality"]
    assert len(lat) == 1 and lat[0].blocking and lat[0].finding == "#4"
    assert all(w in lat[0].message for w in words), lat[0].message
    # without the rejected finding the message is the plain side mismatch
    plain = [m for m in qa.run_checks(text, FINDINGS, lang=lang) if m.check == "laterality"]
    assert len(plain) == 1 and "#4" not in plain[0].message and plain[0].finding == "#1"
