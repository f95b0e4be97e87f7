"""The project's shared real data (``../shared/data/cxr``): the NIH subset's ``labels.json``
and the OpenIST normals with lung masks.

``labels.json`` is a list of ``{"file", "patient_id", "age", "sex", "view",
"pixel_spacing_mm", "nih_labels", "expert_labels_google2019", "radiologist_box_review",
"boxes": [{"label", "box": [x1, y1, x2, y2], "source"}]}`` in 512-px coordinates.
Radiologist-adjudicated labels (Google 2019) override the report-mined NIH labels for
their classes; radiologist boxes add their class.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from training.datasets.class_map import GOOGLE2019, map_label, split_labels
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)


def load_nih_labels_json(folder: str | os.PathLike) -> list[CxrRecord]:
    """Records from ``<folder>/labels.json`` (images under ``<folder>/images``)."""
    folder = Path(folder)
    data = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    records = []
    for item in data:
        ours, other = split_labels(item.get("nih_labels") or [], "nih")
        quality = "report"
        expert = item.get("expert_labels_google2019")
        if expert:
            quality = "expert"
            for name, present in expert.items():
                cls = GOOGLE2019.get(name)
                if cls is None:
                    if present:
                        other.add(name)
                    continue
                if present:
                    ours.add(cls)
                else:
                    ours.discard(cls)
        boxes, other_boxes = [], []
        for b in item.get("boxes") or []:
            source = "chestx-det" if "ChestX-Det" in b.get("source", "") else "nih"
            cls = map_label(b["label"], source)
            (boxes if cls else other_boxes).append((cls or b["label"], *map(float, b["box"])))
            if cls:
                ours.add(cls)
                quality = "expert"
            else:
                other.add(b["label"])
        path = folder / item["file"]
        records.append(CxrRecord(
            image_id=path.stem, patient_id=str(item["patient_id"]), image_path=str(path),
            labels=ours, boxes=boxes, pixel_spacing_mm=item.get("pixel_spacing_mm"),
            view=item.get("view", ""), source="nih", label_quality=quality,
            other_labels=other, other_boxes=other_boxes,
            extra={"age": item.get("age"), "sex": item.get("sex"),
                   "radiologist_box_review": bool(item.get("radiologist_box_review")),
                   "nih_labels": list(item.get("nih_labels") or [])},
        ))
    return records


def load_openist_normals(folder: str | os.PathLike) -> list[CxrRecord]:
    """Normal radiographs with lung masks: ``<folder>/images/X`` and ``<folder>/lung_masks/X``.

    Image and mask are paired by file stem; images without a mask are skipped with a warning.
    """
    folder = Path(folder)
    masks = {p.stem: p for p in (folder / "lung_masks").iterdir() if p.is_file()}
    records = []
    for img in sorted((folder / "images").iterdir()):
        if not img.is_file():
            continue
        mask = masks.get(img.stem)
        if mask is None:
            logger.warning("openist: no lung mask for %s, skipped", img.name)
            continue
        records.append(CxrRecord(
            image_id=img.stem, patient_id=f"openist-{img.stem}", image_path=str(img),
            masks={"lung": str(mask)}, source="openist", label_quality="expert",
        ))
    return records
