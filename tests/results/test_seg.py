"""DICOM SEG: one segment per finding type, algorithm-typed, aligned to the source pixels."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from dicom_node import codes
from dicom_node.findings import AnalysisResult, Finding, ImageRef, ModelInfo, ResultError, SliceRegion
from dicom_node.result_objects import rasterise
from dicom_node.seg import build_segmentation, read_segments

from .sources import assert_valid, cxr_result, roundtrip


def _check_binary(result, ds, tmp_path):
    seg = build_segmentation(result, [ds])
    back = roundtrip(seg, tmp_path / "seg.dcm")
    assert back.StudyInstanceUID == ds.StudyInstanceUID and back.Modality == "SEG"
    assert back.SegmentationType == "BINARY"
    parsed = hd.seg.Segmentation.from_dataset(back)
    assert [s for _, _, s in parsed.get_source_image_uids()] == [ds.SOPInstanceUID]
    labels = [f.label for f in result.findings]
    assert len(parsed.segment_numbers) == len(set(labels))
    for number, label in zip(parsed.segment_numbers, dict.fromkeys(labels)):
        desc = parsed.get_segment_description(number)
        assert desc.SegmentAlgorithmType == "AUTOMATIC"
        assert desc.segmented_property_type == codes.FINDING_TYPES[label]
        assert desc.segmented_property_category == codes.ABNORMAL_STRUCTURE
        algo = desc.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == (result.model.name, result.model.version)
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == codes.AI_FAMILY.value
    masks = read_segments(back)
    shape = (int(ds.Rows), int(ds.Columns))
    for f in result.findings:
        expected = rasterise(f.region_contour, shape)
        assert masks[f.label].shape == (1, *shape)
        assert np.array_equal(masks[f.label][0].astype(bool), expected), f.label
    assert_valid(tmp_path / "seg.dcm")


def test_binary_seg_on_generated_cr(cr, tmp_path):
    _check_binary(cxr_result(cr), cr, tmp_path)


@pytest.mark.shared_data
def test_binary_seg_on_real_cr(real_cr, tmp_path):
    _check_binary(cxr_result(real_cr), real_cr, tmp_path)


def test_same_type_findings_share_one_segment(cr, tmp_path):
    a = Finding("consolidation", 0.8, box=(10, 10, 40, 40), laterality="right", zone="lower")
    b = Finding("consolidation", 0.7, box=(150, 10, 200, 40), laterality="left", zone="lower")
    back = roundtrip(build_segmentation([a, b], [cr], model=ModelInfo("m", "1")), tmp_path / "seg.dcm")
    parsed = hd.seg.Segmentation.from_dataset(back)
    assert parsed.number_of_segments == 1
    mask = read_segments(back)["consolidation"][0].astype(bool)
    shape = (int(cr.Rows), int(cr.Columns))
    assert np.array_equal(mask, rasterise(a.region_contour, shape) | rasterise(b.region_contour, shape))
    desc = parsed.get_segment_description(1)
    assert desc.TrackingUID not in (a.tracking_uid, b.tracking_uid)


def test_fractional_heat_map(cr, tmp_path):
    rows, cols = int(cr.Rows), int(cr.Columns)
    yy, xx = np.mgrid[0:rows, 0:cols]
    heat = np.exp(-((xx - 60) ** 2 + (yy - 80) ** 2) / (2 * 25.0 ** 2)).astype(np.float32)
    f = Finding("consolidation", 0.8, mask=heat, image=ImageRef.from_dataset(cr))
    back = roundtrip(build_segmentation([f], [cr], model=ModelInfo("m", "1"), fractional=True),
                     tmp_path / "segf.dcm")
    assert back.SegmentationType == "FRACTIONAL" and back.SegmentationFractionalType == "PROBABILITY"
    got = read_segments(back)["consolidation"][0]
    assert np.abs(got - heat).max() <= 0.5 / 255 + 1e-6
    assert_valid(tmp_path / "segf.dcm")


def test_ct_seg_per_slice(ct_series, tmp_path):
    refs = [ImageRef.from_dataset(ds) for ds in ct_series]
    mask = np.zeros((2, 64, 64), dtype=bool)
    mask[0, 20:26, 30:37] = True
    mask[1, 21:25, 31:36] = True
    nodule = Finding("nodule", 0.9, mask=mask, mask_images=tuple(refs[2:4]), lobe="RUL")
    lesion = Finding("liver_lesion", 0.8, slices=(SliceRegion(refs[4], ((5, 5), (15, 5), (15, 12), (5, 12))),))
    result = AnalysisResult("ct_nodule", ModelInfo("ct-nodule", "0.3.0"), (nodule, lesion))
    # source slices given in reverse order: frames still land on the right slices
    back = roundtrip(build_segmentation(result, list(reversed(ct_series))), tmp_path / "ct_seg.dcm")
    parsed = hd.seg.Segmentation.from_dataset(back)
    assert int(back.NumberOfFrames) == 3  # empty slices are omitted
    uids = [ds.SOPInstanceUID for ds in ct_series]
    vol = parsed.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2],
                                               combine_segments=False, skip_overlap_checks=True)
    assert np.array_equal(vol[2:4, :, :, 0].astype(bool), mask)
    assert vol[:2, :, :, 0].sum() == 0 and vol[4:, :, :, 0].sum() == 0
    assert np.array_equal(vol[4, :, :, 1].astype(bool), rasterise(lesion.slices[0].contour, (64, 64)))
    assert parsed.get_segment_description(2).segmented_property_type == codes.FINDING_TYPES["liver_lesion"]
    assert back.FrameOfReferenceUID == ct_series[0].FrameOfReferenceUID
    assert_valid(tmp_path / "ct_seg.dcm")


def test_nothing_to_segment_and_bad_masks(cr):
    with pytest.raises(ResultError, match="nothing to segment"):
        build_segmentation([Finding("pneumothorax", 0.9)], [cr], model=ModelInfo("m", "1"))
    wrong = Finding("pneumothorax", 0.9, mask=np.ones((10, 10), bool), image=ImageRef.from_dataset(cr))
    with pytest.raises(ResultError, match="does not match"):
        build_segmentation([wrong], [cr], model=ModelInfo("m", "1"))
    with pytest.raises(ResultError, match="no code"):
        build_segmentation([Finding("unicorn", 0.9, box=(1, 1, 4, 4))], [cr], model=ModelInfo("m", "1"))


def test_overlapping_types_keep_both_masks(cr, tmp_path):
    a = Finding("consolidation", 0.8, box=(10, 10, 60, 60))
    b = Finding("pleural_effusion", 0.7, box=(40, 40, 100, 90))  # overlaps a
    back = roundtrip(build_segmentation([a, b], [cr], model=ModelInfo("m", "1")), tmp_path / "seg.dcm")
    assert back.SegmentsOverlap == "YES"
    masks = read_segments(back)
    shape = (int(cr.Rows), int(cr.Columns))
    assert np.array_equal(masks["consolidation"][0].astype(bool), rasterise(a.region_contour, shape))
    assert np.array_equal(masks["pleural_effusion"][0].astype(bool), rasterise(b.region_contour, shape))
    assert_valid(tmp_path / "seg.dcm")


def test_rasterise_matches_pixel_centre_rule():
    box = rasterise(((10, 20), (30, 20), (30, 40), (10, 40)), (64, 64))
    rows, cols = np.nonzero(box)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 10, 30)
    # a triangle: every filled pixel centre is inside, every empty one outside (away from the edges)
    tri = np.array([(5.3, 3.1), (50.2, 20.7), (12.9, 55.5)])
    m = rasterise(tri, (64, 64))
    yy, xx = np.mgrid[0:64, 0:64]

    def side(p, q):
        return (q[0] - p[0]) * (yy - p[1]) - (q[1] - p[1]) * (xx - p[0])

    s = np.stack([side(tri[0], tri[1]), side(tri[1], tri[2]), side(tri[2], tri[0])])
    inside = (s > 1e-9).all(0) | (s < -1e-9).all(0)
    assert np.array_equal(m, inside)
    assert rasterise(((1, 1), (5, 1)), (8, 8)).sum() == 0  # degenerate


def test_ct_task_label_map_becomes_per_finding_masks_and_a_seg(tmp_path):
    """dicom_node.tasks.with_ct_masks: a CT task's label map (planes in position order, here
    the reverse of the instance order) gives each finding its 3-D mask on the right slices."""
    from dicom_node import samples
    from dicom_node.tasks import with_ct_masks

    series = samples.ct_series(8, size=32, seed=3)
    by_position = sorted(series, key=lambda d: float(d.ImagePositionPatient[2]))[::-1]  # any order
    planes = [str(d.SOPInstanceUID) for d in by_position]
    label_map = np.zeros((8, 32, 32), np.uint16)
    label_map[2:4, 5:12, 6:14] = 1
    label_map[6, 20:25, 20:26] = 2
    obj = {"model": {"name": "ct-nodule-fpr", "version": "1"}, "findings": [
        {"label": "lung nodule", "probability": 0.9, "type": "solid", "mask_label": 1},
        {"label": "lung nodule", "probability": 0.6, "type": "ground-glass", "mask_label": 2}]}
    parsed = AnalysisResult.from_json(obj, source=ImageRef.from_dataset(series[0]), study_type="ct_nodule")
    parsed = with_ct_masks(parsed, obj, {"_mask": label_map, "_planes": planes}, series)
    first, second = parsed.findings
    assert first.mask.shape == (2, 32, 32) and [r.sop_instance_uid for r in first.mask_images] == planes[2:4]
    assert second.mask.sum() == 30 and [r.sop_instance_uid for r in second.mask_images] == [planes[6]]
    seg = roundtrip(build_segmentation(parsed, series), tmp_path / "seg.dcm")
    assert_valid(tmp_path / "seg.dcm")
    (mask,) = read_segments(seg).values()  # both nodules: one segment per finding type
    assert mask.sum() == label_map.astype(bool).sum()
    # planes that do not match the slices (e.g. interpolated into a gap): no masks, no error
    assert all(f.mask is None for f in with_ct_masks(
        AnalysisResult.from_json(obj, source=ImageRef.from_dataset(series[0]), study_type="ct_nodule"),
        obj, {"_mask": label_map, "_planes": planes[:7]}, series).findings)
