"""Findings JSON contract (issue 3 ``medws infer cxr --json``) and its extensions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dicom_node.findings import (
    AnalysisResult,
    Finding,
    FindingFormatError,
    ImageRef,
    decode_mask,
    encode_mask,
)

CONTRACT_LINE = {
    "path": "/data/cr1.dcm",
    "skipped": None,
    "abnormality": 0.94,
    "scores": {"nodule_mass": 0.1, "consolidation": 0.2, "interstitial_opacity": 0.05,
               "pleural_effusion": 0.71, "pneumothorax": 0.93},
    "findings": [
        {"label": "pneumothorax", "probability": 0.93, "box": [120, 20, 200, 90],
         "contour": [[120, 20], [200, 25], [195, 90], [125, 85]], "laterality": "left", "zone": "upper"},
        {"label": "pleural_effusion", "probability": 0.71, "box": [10, 180, 90, 240],
         "contour": [], "laterality": "right", "zone": "lower"},
    ],
    "model": {"name": "cxr-lesion", "version": "1.2.0"},
}


def test_contract_line_parses_and_round_trips(cr):
    result = AnalysisResult.from_json(json.loads(json.dumps(CONTRACT_LINE)), source=cr)
    assert result.model.name == "cxr-lesion" and result.model.version == "1.2.0"
    assert result.study_type == "cxr" and result.complete
    ptx, eff = result.findings
    assert ptx.label == "pneumothorax" and ptx.probability == pytest.approx(0.93)
    assert ptx.box == (120.0, 20.0, 200.0, 90.0) and ptx.laterality == "left" and ptx.zone == "upper"
    assert ptx.image == ImageRef.from_dataset(cr)  # the CLI line names a path; the source image is given
    assert ptx.image.sop_instance_uid == cr.SOPInstanceUID
    # a box without a contour is drawn as its rectangle
    assert eff.region_contour == ((10, 180), (90, 180), (90, 240), (10, 240))
    again = AnalysisResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result


def test_ct_extensions_round_trip(ct_series):
    mask = np.zeros((2, 64, 64), dtype=bool)
    mask[0, 10:14, 20:25] = True
    mask[1, 11:13, 21:24] = True
    f = Finding(
        "nodule", 0.88, centre_mm=(-10.0, 4.5, -97.5), long_axis_mm=6.2, short_axis_mm=4.1, volume_mm3=80.0,
        mean_hu=-20.0, type="solid", lobe="RUL", category="Lung-RADS 3", mask=mask,
        mask_images=tuple(ImageRef.from_dataset(ds) for ds in ct_series[1:3]),
    )
    back = Finding.from_json(json.loads(json.dumps(f.to_json())))
    assert back == f
    assert np.array_equal(back.mask, mask)
    assert back.diameter_mm == pytest.approx(5.15)


def test_mask_encodings():
    rng = np.random.default_rng(0)
    binary = rng.random((7, 9)) > 0.6
    binary[0, 0] = True  # a run that starts with ones
    assert np.array_equal(decode_mask(encode_mask(binary)), binary)
    frac = rng.random((5, 6)).astype(np.float32)
    assert np.abs(decode_mask(encode_mask(frac)) - frac).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("bad, match", [
    ({"label": "pneumothorax", "probability": 1.5}, "outside"),
    ({"label": "pneumothorax", "laterality": "up"}, "laterality"),
    ({"label": "pneumothorax", "box": [10, 10, 5, 20]}, "box"),
    ({"label": "pneumothorax", "box": [1, 2, 3]}, "box"),
    ({"label": "pneumothorax", "contour": [[1, 2, 3]]}, "coordinates"),
    ({"probability": 0.5}, "label"),
])
def test_bad_findings_are_rejected_with_a_reason(bad, match):
    with pytest.raises(FindingFormatError, match=match):
        Finding.from_json(bad)


def test_result_without_model_is_rejected():
    line = dict(CONTRACT_LINE, model={})
    with pytest.raises(FindingFormatError, match="model"):
        AnalysisResult.from_json(line)


def test_skipped_result_is_not_complete():
    line = dict(CONTRACT_LINE, skipped="lateral view", findings=[])
    assert not AnalysisResult.from_json(line).complete


def test_ct_task_spellings_are_accepted():
    f = Finding.from_json({"label": "lung nodule", "probability": 0.8, "type": "ground-glass", "lobe": "right_upper",
                           "centre_patient_mm": [1, 2, 3], "long_axis_mm": 7.5, "category": "Lung-RADS 2"})
    assert (f.label, f.type, f.lobe, f.centre_mm) == ("nodule", "ground_glass", "RUL", (1.0, 2.0, 3.0))
    c = Finding.from_json({"label": "coronary calcium", "artery": "LAD", "volume_mm3": 12.0})
    assert (c.label, c.vessel) == ("coronary_calcium", "LAD")
