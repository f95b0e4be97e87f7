"""COCO detection JSON (used by TBX11K): ``images``, ``annotations``, ``categories``.

``bbox`` is ``[x, y, width, height]`` in image pixels.  Category names are mapped with
``training.datasets.class_map`` for ``source`` (default "tbx11k", whose tuberculosis
categories are outside our classes and become ``other_labels``).  Images without
annotations are normal only when ``normal_dirs`` says so (TBX11K's ``health/``); other
unannotated images (TBX11K's ``sick/``, sick but non-TB) are marked not normal.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from training.datasets.class_map import map_label
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)

NOT_NORMAL = "abnormal (no box)"


def load_coco(json_path: str | os.PathLike, image_dir: str | os.PathLike, source: str = "tbx11k",
              normal_dirs: tuple[str, ...] = ("health",)) -> list[CxrRecord]:
    """Records from a COCO-format annotation file."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{json_path}: not COCO: key {key!r} missing")
    cats = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    root = Path(image_dir)
    records = []
    for img in data["images"]:
        name = img["file_name"]
        labels, other, boxes, other_boxes = set(), set(), [], []
        for ann in by_image.get(img["id"], []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            cat = cats.get(ann["category_id"])
            if cat is None:
                raise ValueError(f"{json_path}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
            cls = map_label(cat, source)
            if cls:
                labels.add(cls)
                boxes.append((cls, x, y, x + w, y + h))
            else:
                other.add(cat)
                other_boxes.append((cat, x, y, x + w, y + h))
        if not labels and not other and Path(name).parts[:1] and Path(name).parts[0] not in normal_dirs:
            other.add(NOT_NORMAL)
        records.append(CxrRecord(
            image_id=Path(name).stem, patient_id=Path(name).stem, image_path=str(root / name),
            labels=labels, boxes=boxes, source=source, label_quality="expert",
            other_labels=other, other_boxes=other_boxes,
            extra={"width": img.get("width"), "height": img.get("height"), "coco_id": img["id"]},
        ))
    return records
