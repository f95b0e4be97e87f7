"""GSPS: outlines and short labels on the exact source images."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicom_node.findings import Finding, ImageRef, ModelInfo, ResultError, SliceRegion
from dicom_node.gsps import build_presentation_state, label_text, read_annotations

from .sources import assert_valid, cxr_result, roundtrip


def _check(result, ds, tmp_path):
    back = roundtrip(build_presentation_state(result, [ds]), tmp_path / "pr.dcm")
    assert back.SOPClassUID == pydicom.uid.GrayscaleSoftcopyPresentationStateStorage
    assert back.StudyInstanceUID == ds.StudyInstanceUID and back.Modality == "PR"
    ref = back.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == ds.SeriesInstanceUID
    assert ref.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    anns = {a["layer"]: a for a in read_annotations(back)}
    assert set(anns) == {"AI_CRITICAL", "AI_FINDINGS"}
    ptx, eff = result.findings
    crit = anns["AI_CRITICAL"]
    assert crit["sop_instance_uid"] == ds.SOPInstanceUID
    assert crit["texts"] == ["Pneumothorax L 0.93"]
    assert crit["tracking_uids"] == [ptx.tracking_uid]
    outline = crit["outlines"][0]
    assert np.array_equal(outline[0], outline[-1]), "outline is closed"
    np.testing.assert_allclose(outline[:-1], np.asarray(ptx.contour), atol=1e-3)
    other = anns["AI_FINDINGS"]
    assert other["texts"] == ["Effusion R 0.71"]
    np.testing.assert_allclose(other["outlines"][0][:-1], np.asarray(eff.region_contour), atol=1e-3)
    # text boxes lie inside the image
    for item in back.GraphicAnnotationSequence:
        for t in item.TextObjectSequence:
            (x1, y1), (x2, y2) = t.BoundingBoxTopLeftHandCorner, t.BoundingBoxBottomRightHandCorner
            assert 0 <= x1 < x2 <= ds.Columns and 0 <= y1 < y2 <= ds.Rows
    assert_valid(tmp_path / "pr.dcm")


def test_gsps_on_generated_cr(cr, tmp_path):
    _check(cxr_result(cr), cr, tmp_path)


@pytest.mark.shared_data
def test_gsps_on_real_cr(real_cr, tmp_path):
    _check(cxr_result(real_cr), real_cr, tmp_path)


def test_gsps_on_ct_slices(ct_series, tmp_path):
    refs = [ImageRef.from_dataset(ds) for ds in ct_series]
    square = ((20.0, 20.0), (28.0, 20.0), (28.0, 27.0), (20.0, 27.0))
    nodule = Finding("nodule", 0.9, long_axis_mm=9.0, lobe="RUL",
                     slices=tuple(SliceRegion(r, square) for r in refs[1:3]))
    back = roundtrip(build_presentation_state([nodule], ct_series, model=ModelInfo("ct-nodule", "0.3.0")),
                     tmp_path / "ct_pr.dcm")
    anns = read_annotations(back)
    assert [a["sop_instance_uid"] for a in anns] == [ds.SOPInstanceUID for ds in ct_series[1:3]]
    assert all(a["texts"] == ["Nodule 9mm"] for a in anns)
    referenced = back.ReferencedSeriesSequence[0].ReferencedImageSequence
    assert {r.ReferencedSOPInstanceUID for r in referenced} == {ds.SOPInstanceUID for ds in ct_series}
    assert_valid(tmp_path / "ct_pr.dcm")


def test_labels():
    assert label_text(Finding("pneumothorax", 0.934, laterality="left")) == "Pneumothorax L 0.93"
    assert label_text(Finding("coronary_calcium", vessel="LAD", agatston=120.4)) == "Calcium LAD AS 120"
    assert label_text(Finding("interstitial_opacity", 0.5, laterality="bilateral")) == "Interstitial opacity bilat 0.50"


def test_nothing_to_draw(cr):
    with pytest.raises(ResultError, match="nothing to draw"):
        build_presentation_state([Finding("pneumothorax", 0.9)], [cr], model=ModelInfo("m", "1"))
