"""TID 1500 SR: built with highdicom, round-tripped, read by DCMTK, validated by dciodvfy."""
from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes as sr_codes

from dicom_node import codes
from dicom_node.findings import AnalysisResult, Finding, ImageRef, ModelInfo, ResultError, SliceRegion, SourceImageError
from dicom_node.sr import Verification, build_measurement_report, build_signed_report, read_findings

from .sources import assert_valid, cxr_result, dsr2xml, roundtrip


def _check_cxr_round_trip(result, ds, tmp_path):
    doc = build_measurement_report(result, [ds])
    back = roundtrip(doc, tmp_path / "sr.dcm")
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert back.StudyInstanceUID == ds.StudyInstanceUID and back.PatientID == ds.PatientID
    assert back.VerificationFlag == "UNVERIFIED" and back.CompletionFlag == "COMPLETE"
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID

    parsed = hd.sr.Comprehensive3DSR.from_dataset(back)
    groups = parsed.content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    ptx_group = groups[0]
    assert ptx_group.finding_type == codes.FINDING_TYPES["pneumothorax"]
    assert ptx_group.tracking_uid == result.findings[0].tracking_uid
    assert ptx_group.tracking_identifier == "pneumothorax-1"
    (prob,) = ptx_group.get_measurements(name=codes.PROBABILITY)
    assert prob.value == pytest.approx(0.93) and prob.unit == codes.UNIT_ONE
    site = ptx_group.finding_sites[0]
    assert site.value == codes.CXR_ZONES["upper"]
    region = ptx_group.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    pts = np.asarray(region.value)
    assert np.array_equal(pts[0], pts[-1]), "the region polygon is closed"
    np.testing.assert_allclose(pts[:-1] - 0.5, np.asarray(result.findings[0].contour), atol=1e-3)
    src = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert src.ReferencedSOPInstanceUID == ds.SOPInstanceUID and src.ReferencedSOPClassUID == ds.SOPClassUID
    algo_names = hd.sr.utils.find_content_items(parsed, name=sr_codes.DCM.AlgorithmName, recursive=True)
    assert {str(i.TextValue) for i in algo_names} == {result.model.name}
    versions = hd.sr.utils.find_content_items(parsed, name=sr_codes.DCM.AlgorithmVersion, recursive=True)
    assert {str(i.TextValue) for i in versions} == {result.model.version}

    # our reader gives the findings back
    findings = read_findings(back)
    for original, got in zip(result.findings, findings):
        assert got.label == original.label
        assert got.probability == pytest.approx(original.probability)
        assert (got.laterality, got.zone) == (original.laterality, original.zone)
        assert got.tracking_uid == original.tracking_uid
        assert got.image.sop_instance_uid == ds.SOPInstanceUID
        np.testing.assert_allclose(np.asarray(got.contour), np.asarray(original.region_contour), atol=1e-3)

    xml = dsr2xml(tmp_path / "sr.dcm")
    assert "Imaging Measurement Report" in xml and "Pneumothorax" in xml
    assert_valid(tmp_path / "sr.dcm")
    return back


def test_draft_sr_on_generated_cr(cr, tmp_path):
    _check_cxr_round_trip(cxr_result(cr), cr, tmp_path)


@pytest.mark.shared_data
def test_draft_sr_on_real_cr(real_cr, tmp_path):
    back = _check_cxr_round_trip(cxr_result(real_cr), real_cr, tmp_path)
    # the sample's malformed Patient's Age ("62") is repaired, not propagated
    assert back.get("PatientAge") in (None, "062Y")


def test_normal_study_states_no_abnormality(cr, tmp_path):
    result = AnalysisResult("cxr", ModelInfo("cxr-lesion", "1.2.0"), (), abnormality=0.04)
    back = roundtrip(build_measurement_report(result, [cr]), tmp_path / "sr.dcm")
    assert back.CompletionFlag == "COMPLETE"
    assert read_findings(back) == []
    (group,) = hd.sr.Comprehensive3DSR.from_dataset(back).content.get_image_measurement_groups()
    assert group.finding_type == codes.NO_ABNORMALITY
    assert group.get_measurements()[0].value == pytest.approx(0.04)
    assert_valid(tmp_path / "sr.dcm")


def test_partial_analysis_and_skipped_analysis(cr, tmp_path):
    result = cxr_result(cr)
    back = roundtrip(build_measurement_report(result, [cr], complete=False), tmp_path / "sr.dcm")
    assert back.CompletionFlag == "PARTIAL"
    skipped = AnalysisResult("cxr", ModelInfo("cxr-lesion", "1.2.0"), (), skipped="lateral view")
    with pytest.raises(ResultError, match="lateral view"):
        build_measurement_report(skipped, [cr])


def test_signed_report_and_addendum_reference_predecessors(cr, tmp_path):
    result = cxr_result(cr)
    draft = roundtrip(build_measurement_report(result, [cr]), tmp_path / "draft.dcm")
    when = dt.datetime(2026, 11, 27, 9, 30, 15)
    accepted = read_findings(draft)[:1]  # the radiologist kept the pneumothorax only
    signed = build_signed_report(accepted, [cr], Verification("Kim^Minji", "Medws General Hospital", when), draft)
    signed = roundtrip(signed, tmp_path / "signed.dcm")
    assert signed.VerificationFlag == "VERIFIED" and signed.CompletionFlag == "COMPLETE"
    assert signed.PreliminaryFlag == "FINAL"
    obs = signed.VerifyingObserverSequence[0]
    assert str(obs.VerifyingObserverName) == "Kim^Minji"
    assert obs.VerifyingOrganization == "Medws General Hospital"
    assert obs.VerificationDateTime == "20261127093015"
    pred = signed.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == draft.SOPInstanceUID
    assert signed.SeriesInstanceUID == draft.SeriesInstanceUID and signed.InstanceNumber == 2
    assert [f.label for f in read_findings(signed)] == ["pneumothorax"]
    assert "Kim" in dsr2xml(tmp_path / "signed.dcm")
    assert_valid(tmp_path / "signed.dcm")

    addendum = build_signed_report(read_findings(signed), [cr],
                                   Verification("Lee^Jun", "Medws General Hospital"), signed)
    addendum = roundtrip(addendum, tmp_path / "addendum.dcm")
    pred = addendum.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == signed.SOPInstanceUID
    assert addendum.InstanceNumber == 3
    assert_valid(tmp_path / "addendum.dcm")


def test_ct_nodule_volumetric_and_calcium_groups(ct_series, tmp_path):
    refs = [ImageRef.from_dataset(ds) for ds in ct_series]
    square = ((20.0, 20.0), (28.0, 20.0), (28.0, 27.0), (20.0, 27.0))
    nodule = Finding(
        "nodule", 0.91, long_axis_mm=9.0, short_axis_mm=7.0, volume_mm3=260.0, mean_hu=35.0, type="solid",
        lobe="RUL", category="Lung-RADS 4A", centre_mm=(-8.0, -8.5, -95.0),
        slices=tuple(SliceRegion(r, square) for r in refs[1:4]),
    )
    ggn = Finding("nodule", 0.7, long_axis_mm=12.0, type="ground_glass", lobe="LLL")  # no outline: TID 1501
    lad = Finding("coronary_calcium", vessel="LAD", agatston=120.0, calcium_volume_mm3=95.0,
                  centre_mm=(12.5, -3.0, -92.5))
    rca = Finding("coronary_calcium", vessel="RCA", agatston=30.0)
    result = AnalysisResult("ct_nodule", ModelInfo("ct-nodule", "0.3.0"), (nodule, ggn, lad, rca))
    back = roundtrip(build_measurement_report(result, ct_series), tmp_path / "ct_sr.dcm")
    parsed = hd.sr.Comprehensive3DSR.from_dataset(back)
    (vol,) = parsed.content.get_volumetric_roi_measurement_groups()
    regions = vol.roi
    assert [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions] == \
        [ds.SOPInstanceUID for ds in ct_series[1:4]]
    assert len(parsed.content.get_image_measurement_groups()) == 3
    got = read_findings(back)
    assert [f.label for f in got] == ["nodule", "nodule", "coronary_calcium", "coronary_calcium"]
    g = got[0]
    assert (g.long_axis_mm, g.short_axis_mm, g.volume_mm3, g.mean_hu) == (9.0, 7.0, 260.0, 35.0)
    assert (g.type, g.lobe, g.category) == ("solid", "RUL", "Lung-RADS 4A")
    assert [s.image.sop_instance_uid for s in g.slices] == [ds.SOPInstanceUID for ds in ct_series[1:4]]
    assert (got[1].type, got[1].lobe, got[1].long_axis_mm) == ("ground_glass", "LLL", 12.0)
    assert (got[2].vessel, got[2].agatston, got[2].calcium_volume_mm3) == ("LAD", 120.0, 95.0)
    assert got[2].centre_mm == (12.5, -3.0, -92.5)  # SCOORD3D point in the series' frame of reference
    assert (got[3].vessel, got[3].agatston) == ("RCA", 30.0)
    (score,) = [m for m in parsed.content.get_image_measurement_groups()[1].get_measurements()
                if m.name == codes.CALCIUM_SCORE]
    assert score.method == codes.AGATSTON_METHOD
    dsr2xml(tmp_path / "ct_sr.dcm")
    assert_valid(tmp_path / "ct_sr.dcm")


def test_finding_on_an_image_not_given_is_an_error(cr):
    other = ImageRef("1.2.3.4", cr.SOPClassUID)
    f = Finding("pneumothorax", 0.9, box=(1, 1, 5, 5), image=other)
    with pytest.raises(SourceImageError, match="not among"):
        build_measurement_report([f], [cr], model=ModelInfo("m", "1"))


def test_ct_mask_only_finding_gets_traced_slice_regions(ct_series, tmp_path):
    mask = np.zeros((3, 64, 64), dtype=bool)
    mask[0, 30:34, 30:34] = True
    mask[1, 28:36, 29:37] = True  # the third plane stays empty: no region on that slice
    refs = tuple(ImageRef.from_dataset(ds) for ds in ct_series[2:5])
    f = Finding("nodule", 0.8, long_axis_mm=8.0, mask=mask, mask_images=refs)
    back = roundtrip(build_measurement_report([f], ct_series, model=ModelInfo("ct-nodule", "0.3.0")),
                     tmp_path / "sr.dcm")
    (got,) = read_findings(back)
    assert [s.image.sop_instance_uid for s in got.slices] == [r.sop_instance_uid for r in refs[:2]]
    xs = [x for x, _ in got.slices[1].contour]
    ys = [y for _, y in got.slices[1].contour]
    # the traced outline runs along the mask border (pixel centres ±0.5)
    assert min(xs) == pytest.approx(28.5, abs=0.6) and max(xs) == pytest.approx(36.5, abs=0.6)
    assert min(ys) == pytest.approx(27.5, abs=0.6) and max(ys) == pytest.approx(35.5, abs=0.6)
    assert_valid(tmp_path / "sr.dcm")


@pytest.mark.shared_data
def test_korean_observer_on_latin1_source(real_cr, tmp_path):
    assert real_cr.SpecificCharacterSet == "ISO_IR 100"
    draft = roundtrip(build_measurement_report(cxr_result(real_cr), [real_cr]), tmp_path / "draft.dcm")
    signed = build_signed_report(read_findings(draft), [real_cr], Verification("김^민지", "서울대학교병원"), draft)
    back = roundtrip(signed, tmp_path / "signed.dcm")
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.VerifyingObserverSequence[0].VerifyingObserverName) == "김^민지"
    assert back.VerifyingObserverSequence[0].VerifyingOrganization == "서울대학교병원"
    assert back.PatientID == real_cr.PatientID
    assert "서울대학교병원" in dsr2xml(tmp_path / "signed.dcm")
    assert_valid(tmp_path / "signed.dcm")


def test_reads_groups_written_by_other_software(cr, tmp_path):
    """Labels come from the coded finding type when the tracking identifier is not ours."""
    region = hd.sr.ImageRegion(graphic_type="POLYLINE",
                               graphic_data=np.array([[10.5, 10.5], [40.5, 10.5], [40.5, 30.5], [10.5, 10.5]]),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(cr))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=pydicom.uid.generate_uid(), identifier="Lesion A"),
        referenced_region=region, finding_type=sr_codes.SCT.PleuralEffusion)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(), procedure_reported=codes.PROCEDURES["cxr"],
        imaging_measurements=[group])
    doc = hd.sr.Comprehensive3DSR(evidence=[cr], content=report[0], series_instance_uid=pydicom.uid.generate_uid(),
                                  series_number=1, sop_instance_uid=pydicom.uid.generate_uid(), instance_number=1)
    (f,) = read_findings(roundtrip(doc, tmp_path / "other.dcm"))
    assert f.label == "pleural_effusion" and f.probability is None
    assert f.contour == ((10.0, 10.0), (40.0, 10.0), (40.0, 30.0))


def test_finding_from_another_model_is_identified_by_it(cr, tmp_path):
    """A nodule read by the fine-grid model carries that model's TID 4019 identification."""
    import dataclasses

    base = cxr_result(cr)
    nodule = Finding("nodule_mass", 0.88, box=(100.0, 120.0, 140.0, 160.0), laterality="right", zone="middle",
                     image=base.findings[0].image, algorithm=ModelInfo("cxr-nodule", "1.0.0"))
    result = dataclasses.replace(base, findings=base.findings + (nodule,))
    back = AnalysisResult.from_json(result.to_json())
    assert back.findings[-1].algorithm == ModelInfo("cxr-nodule", "1.0.0") and back.findings[0].algorithm is None
    ds = build_measurement_report(result, [cr])
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)

    def names(item, out):
        for child in getattr(item, "ContentSequence", []):
            if child.ConceptNameCodeSequence[0].CodeValue == "111001":  # Algorithm Name
                out.append(child.TextValue)
            names(child, out)
        return out

    groups = [g for g in ds.ContentSequence if g.ValueType == "CONTAINER"
              for g in getattr(g, "ContentSequence", []) if g.ValueType == "CONTAINER"]
    per_group = [set(names(g, [])) for g in groups]
    assert {"cxr-nodule"} in per_group and {"cxr-lesion"} in per_group
    assert_valid(tmp_path / "sr.dcm")
