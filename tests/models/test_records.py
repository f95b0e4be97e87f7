from __future__ import annotations

import numpy as np
import pytest

from training.datasets.class_map import CLASSES, MAPS, map_label, split_labels
from training.datasets.records import CxrRecord, RleMask, load_mask


def test_classes_and_maps_target_only_our_classes():
    assert CLASSES == ("nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax")
    for table in MAPS.values():
        assert set(table.values()) <= set(CLASSES)


@pytest.mark.parametrize("source,name,expected", [
    ("nih", "Nodule", "nodule_mass"), ("nih", "Mass", "nodule_mass"), ("nih", "Effusion", "pleural_effusion"),
    ("nih", "Pneumonia", "consolidation"), ("nih", "Fibrosis", "interstitial_opacity"),
    ("nih", "Cardiomegaly", None), ("nih", "Infiltration", None),
    ("vindr", "Nodule/Mass", "nodule_mass"), ("vindr", "ILD", "interstitial_opacity"),
    ("vindr", "pleural effusion", "pleural_effusion"), ("rsna", "Lung Opacity", "consolidation"),
    ("chestx-det", "Pneumothorax", "pneumothorax"), ("google2019", "Airspace opacity", "consolidation"),
    ("tbx11k", "ActiveTuberculosis", None),
])
def test_map_label(source, name, expected):
    assert map_label(name, source) == expected


def test_split_labels_keeps_other_findings():
    ours, other = split_labels(["Effusion", "Cardiomegaly", "No Finding"], "nih")
    assert ours == {"pleural_effusion"} and other == {"Cardiomegaly"}


def test_record_validation_and_normality():
    r = CxrRecord("a", "p", "a.png", labels={"pneumothorax"}, boxes=[("pneumothorax", 1, 2, 3, 4)])
    assert not r.is_normal
    np.testing.assert_array_equal(r.label_vector(), [0, 0, 0, 0, 1])
    assert CxrRecord("b", "p", "b.png").is_normal
    assert not CxrRecord("c", "p", "c.png", other_labels={"Cardiomegaly"}).is_normal
    with pytest.raises(ValueError, match="not our classes"):
        CxrRecord("d", "p", "d.png", labels={"Effusion"})
    with pytest.raises(ValueError, match="box label"):
        CxrRecord("d", "p", "d.png", boxes=[("Effusion", 0, 0, 1, 1)])
    with pytest.raises(ValueError, match="label_quality"):
        CxrRecord("d", "p", "d.png", label_quality="great")


def test_load_mask_kinds(tmp_path):
    from PIL import Image

    m = np.zeros((6, 5), bool)
    m[1:3, 1] = True
    Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert (load_mask(tmp_path / "m.png") == m).all()
    assert (load_mask(m.astype(np.uint8)) == m).all()
    assert (load_mask(RleMask(("7 2",), 6, 5)) == m).all()
