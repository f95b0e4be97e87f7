"""VinDr-CXR: per-radiologist boxes in ``train.csv`` (Kaggle VinBigData) or
``annotations_train.csv`` (PhysioNet release).

Columns ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`` (``class_id``
absent in the PhysioNet file); "No finding" rows have empty coordinates.  Each abnormal
training image was read by three radiologists (``rad_id`` R1..R17): a box is kept with
its ``rad_id`` in ``extra["box_rad_ids"]``, and a class counts as present when at least
``min_readers`` radiologists marked it.  Coordinates are in the DICOM's pixels;
images are ``<image_id>.dicom``.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from training.datasets.class_map import is_normal_label, map_label
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)


def load_vindr(csv_path: str | os.PathLike, image_dir: str | os.PathLike, min_readers: int = 1,
               suffix: str = ".dicom") -> list[CxrRecord]:
    """Records from a VinDr-CXR annotation CSV."""
    rows: dict[str, list[dict[str, str]]] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        rad_key = "rad_id" if "rad_id" in fields else "rad_ID"
        missing = {"image_id", "class_name", "x_min", "y_min", "x_max", "y_max", rad_key} - fields
        if missing:
            raise ValueError(f"{csv_path}: columns {sorted(missing)} missing")
        for row in reader:
            rows.setdefault(row["image_id"].strip(), []).append(row)
    root = Path(image_dir)
    records = []
    for image_id, items in rows.items():
        readers: dict[str, set[str]] = {}
        boxes, other_boxes, rad_ids, other_rad_ids = [], [], [], []
        for row in items:
            name = row["class_name"].strip()
            if is_normal_label(name):
                continue
            readers.setdefault(name, set()).add(row[rad_key].strip())
            coords = [row[k].strip() for k in ("x_min", "y_min", "x_max", "y_max")]
            if all(coords):
                cls = map_label(name, "vindr")
                box = (cls or name, *(float(c) for c in coords))
                if cls:
                    boxes.append(box)
                    rad_ids.append(row[rad_key].strip())
                else:
                    other_boxes.append(box)
                    other_rad_ids.append(row[rad_key].strip())
        labels, other = set(), set()
        for name, who in readers.items():
            if len(who) < min_readers:
                continue
            cls = map_label(name, "vindr")
            (labels.add(cls) if cls else other.add(name))
        records.append(CxrRecord(
            image_id=image_id, patient_id=image_id, image_path=str(root / f"{image_id}{suffix}"),
            labels=labels, boxes=boxes, source="vindr", label_quality="expert",
            other_labels=other, other_boxes=other_boxes,
            extra={"box_rad_ids": rad_ids, "other_box_rad_ids": other_rad_ids,
                   "readers": {k: sorted(v) for k, v in readers.items()}},
        ))
    return records
