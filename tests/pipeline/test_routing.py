"""Routing by content (pure) and the outbox's retry schedule."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicom_node.delivery import backoff_s
from dicom_node.errors import ConfigError
from dicom_node.routing import (
    DEFAULT_RULES,
    SeriesInfo,
    pacs_priority_rank,
    route,
    rules_from_config,
    series_info,
)


def S(uid: str = "1", **kw) -> SeriesInfo:
    return SeriesInfo(series_uid=uid, **kw)


def tasks(series: list[SeriesInfo], rules=DEFAULT_RULES) -> list[str]:
    return [t.task for t in route(series, rules).tasks]


def test_chest_radiographs_go_to_cxr_and_other_views_do_not() -> None:
    assert tasks([S(modality="CR", body_part="CHEST", view_position="PA")]) == ["cxr"]
    assert tasks([S(modality="DX", body_part="", view_position="AP", image_type="DERIVED\\PRIMARY")]) == ["cxr"]
    assert tasks([S(modality="DX", body_part="CHEST", view_position="")]) == ["cxr"]
    lateral = route([S(modality="CR", body_part="CHEST", view_position="LL")])
    assert lateral.tasks == () and "view position LL" in lateral.not_applicable
    hand = route([S(modality="CR", body_part="HAND", view_position="PA")])
    assert hand.tasks == () and "body part HAND" in hand.not_applicable
    described = route([S(modality="CR", body_part="CHEST", series_description="Chest lateral")])
    assert described.tasks == () and "lateral" in described.not_applicable


def test_chest_ct_low_dose_cardiac_and_liver_ct() -> None:
    chest = S("c", modality="CT", body_part="CHEST", num_instances=120, ctdi_vol=8.0)
    assert tasks([chest]) == ["ct-nodule"]
    low = S("l", modality="CT", body_part="CHEST", num_instances=120, ctdi_vol=1.2)
    assert tasks([low]) == ["ct-nodule", "ct-denoise"]
    assert tasks([S("d", modality="CT", series_description="LDCT lung screening", num_instances=80)]) == \
        ["ct-nodule", "ct-denoise"]
    cardiac = S("h", modality="CT", body_part="HEART", gated=True, num_instances=40,
                series_description="Calcium score non-contrast")
    assert tasks([cardiac]) == ["cac"]
    cta = S("a", modality="CT", body_part="HEART", gated=True, num_instances=200, contrast_agent="Iopromide")
    assert route([cta]).tasks == () and "contrast" in route([cta]).not_applicable
    arterial = S("p1", modality="CT", body_part="ABDOMEN", num_instances=60, contrast_agent="Omnipaque",
                 series_description="arterial")
    portal = S("p2", modality="CT", body_part="ABDOMEN", num_instances=60, series_description="portal venous")
    plan = route([arterial, portal]).tasks
    assert [t.task for t in plan] == ["liver"] and set(plan[0].series_uids) == {"p1", "p2"}
    single = route([portal])
    assert single.tasks == () and "needs >= 2 phases" in single.not_applicable
    assert tasks([S("loc", modality="CT", body_part="CHEST", image_type="ORIGINAL\\PRIMARY\\LOCALIZER",
                    num_instances=50)]) == []
    assert tasks([S("few", modality="CT", body_part="CHEST", num_instances=5)]) == []


def test_nothing_applicable_is_recorded_with_reasons() -> None:
    mr = route([S(modality="MR", body_part="BRAIN"), S("2", modality="SR")])
    assert mr.tasks == () and mr.not_applicable == "MR: no rule for this modality"
    assert route([]).not_applicable == "no image series in the study"
    assert route([S(modality="SEG")]).not_applicable == "no image series in the study"
    assert route([S(modality="CR", view_position="PA")]).to_json()["not_applicable"] is None


def test_rules_from_configuration() -> None:
    assert rules_from_config(None) == DEFAULT_RULES
    rules = rules_from_config({"disable": ["ct-denoise"], "rules": [
        {"task": "cxr", "modalities": ["dx"], "views": ["PA"]},
        {"task": "mammo", "modalities": ["MG"]},
    ]})
    names = [r.task for r in rules]
    assert "ct-denoise" not in names and names[-2:] == ["cxr", "mammo"]
    assert tasks([S(modality="CR", view_position="PA")], rules) == []
    assert tasks([S(modality="DX", view_position="PA")], rules) == ["cxr"]
    assert tasks([S(modality="MG")], rules) == ["mammo"]
    assert rules_from_config({"replace_defaults": True}) == ()
    with pytest.raises(ConfigError, match="unknown key"):
        rules_from_config({"rules": [{"task": "x", "modalities": ["CT"], "colour": "red"}]})
    with pytest.raises(ConfigError, match="needs 'task'"):
        rules_from_config({"rules": [{"modalities": ["CT"]}]})


def test_series_info_reads_gating_contrast_dose_and_priority() -> None:
    ds = Dataset()
    ds.SeriesInstanceUID = "1.2.3"
    ds.Modality = "CT"
    ds.BodyPartExamined = "HEART"
    ds.CardiacSynchronizationTechnique = "PROSPECTIVE"
    ds.XRayTubeCurrent = 100
    ds.ExposureTime = 300
    item = Dataset()
    item.RequestedProcedurePriority = "stat"
    ds.RequestAttributesSequence = [item]
    info = series_info(ds, 48)
    assert info.gated and info.exposure_mas == pytest.approx(30.0) and info.low_dose
    assert info.priority == "STAT" and info.num_instances == 48 and info.has_contrast is None
    ds.CardiacSynchronizationTechnique = "NONE"
    ds.ContrastBolusAgent = "Iohexol"
    info = series_info(ds)
    assert not info.gated and info.has_contrast is True
    assert tasks([info]) == []


def test_priorities_and_backoff() -> None:
    assert pacs_priority_rank("STAT") > pacs_priority_rank("HIGH") > pacs_priority_rank("ROUTINE") \
        == pacs_priority_rank("") > pacs_priority_rank("LOW")
    assert [backoff_s(n, 2.0, 20.0) for n in (1, 2, 3, 4, 5, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
