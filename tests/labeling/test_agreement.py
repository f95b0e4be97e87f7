"""Agreement statistics on inputs with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from labeling_tool.core.agreement import annotator_agreement, box_iou, cohen_kappa, mask_iou, match_boxes
from labeling_tool.core.sources import FolderSource
from labeling_tool.core.store import LabelStore


def test_box_iou_known():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0


def test_mask_iou_known():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_cohen_kappa_known():
    # Cohen's worked example: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa([], []))


def test_match_boxes():
    assert match_boxes([(0, 0, 2, 2)], [(0, 0, 2, 2), (5, 5, 6, 6)]) == [1.0, 0.0]


def test_annotator_agreement_from_store(deid_folder):
    store = LabelStore.open_for(FolderSource(deid_folder))
    ids = [r["image_id"] for r in store.images()][:4]
    for i, iid in enumerate(ids):
        store.set_image_label(iid, "alice", "pneumothorax" if i < 2 else "normal")
        store.set_image_label(iid, "bob", "pneumothorax" if i in (0, 2) else "normal")
    store.add(ids[0], "alice", "box", "pneumothorax", {"x1": 0, "y1": 0, "x2": 2, "y2": 2})
    store.add(ids[0], "bob", "box", "pneumothorax", {"x1": 1, "y1": 1, "x2": 3, "y2": 3})
    out = annotator_agreement(store, "alice", "bob", ["pneumothorax", "normal"])
    assert out["images"] == 4
    assert out["classes"]["pneumothorax"]["kappa"] == pytest.approx(0.0)
    assert out["classes"]["pneumothorax"]["box_iou_mean"] == pytest.approx(1 / 7)
