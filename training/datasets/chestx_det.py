"""ChestX-Det10 / ChestX-Det JSON (Deepwise): radiologist boxes on NIH images.

The file is a JSON list of ``{"file_name": "xxx.png", "syms": [s1, ...],
"boxes": [[x1, y1, x2, y2], ...]}`` (ChestX-Det also has ``"polygons"``: one
``[[x, y], ...]`` outline per box).  Coordinates are left, top, right, bottom in the
1024 x 1024 image.  An entry with no ``syms`` was read as having none of the classes.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from training.datasets.class_map import map_label
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)


def polygons_to_masks(polygons: list, syms: list[str], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Rasterise ChestX-Det polygons into one bool mask per our class (even-odd fill)."""
    from PIL import Image, ImageDraw

    masks: dict[str, np.ndarray] = {}
    for sym, poly in zip(syms, polygons):
        cls = map_label(sym, "chestx-det")
        if cls is None or not poly or len(poly) < 3:
            continue
        img = Image.new("L", (shape[1], shape[0]), 0)
        ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in poly], fill=1)
        masks[cls] = masks.get(cls, np.zeros(shape, bool)) | (np.asarray(img) > 0)
    return masks


def load_chestx_det(json_path: str | os.PathLike, image_dir: str | os.PathLike) -> list[CxrRecord]:
    """Records from a ChestX-Det(10) ``train.json``/``test.json``."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{json_path}: expected a JSON list of {{file_name, syms, boxes}} objects")
    root = Path(image_dir)
    records = []
    for item in data:
        name = item["file_name"]
        syms, boxes = list(item.get("syms", [])), list(item.get("boxes", []))
        if len(syms) != len(boxes):
            raise ValueError(f"{json_path}: {name} has {len(syms)} syms but {len(boxes)} boxes")
        labels, other, ours_boxes, other_boxes = set(), set(), [], []
        for sym, box in zip(syms, boxes):
            cls = map_label(sym, "chestx-det")
            if cls:
                labels.add(cls)
                ours_boxes.append((cls, *map(float, box)))
            else:
                other.add(sym)
                other_boxes.append((sym, *map(float, box)))
        extra = {"polygons": item["polygons"], "syms": syms} if item.get("polygons") else {}
        records.append(CxrRecord(
            image_id=Path(name).stem, patient_id=Path(name).stem, image_path=str(root / name),
            labels=labels, boxes=ours_boxes, source="chestx-det", label_quality="expert",
            other_labels=other, other_boxes=other_boxes, extra=extra,
        ))
    return records
