"""RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` boxes.

Columns ``patientId,x,y,width,height,Target``: one row per box (top-left + size, in
the 1024 x 1024 DICOM's pixels) for ``Target`` 1, one empty row for ``Target`` 0.  The
optional ``stage_2_detailed_class_info.csv`` (``patientId,class``) separates "Normal"
from "No Lung Opacity / Not Normal"; without it a Target-0 image is not known to be
normal.  Images are ``stage_2_train_images/<patientId>.dcm``.  The boxes mark lung
opacities suspicious for pneumonia (drawn by radiologists) -> consolidation.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from training.datasets.class_map import map_label
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)

NOT_NORMAL = "No Lung Opacity / Not Normal"
UNASSESSED = "not assessed beyond lung opacity"


def load_rsna(labels_csv: str | os.PathLike, image_dir: str | os.PathLike,
              class_info_csv: str | os.PathLike | None = None) -> list[CxrRecord]:
    """Records from ``stage_2_train_labels.csv`` (+ optional detailed class info)."""
    classes: dict[str, str] = {}
    if class_info_csv:
        with open(class_info_csv, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                classes[row["patientId"].strip()] = row["class"].strip()
    boxes: dict[str, list[tuple[str, float, float, float, float]]] = {}
    order: list[str] = []
    with open(labels_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"patientId", "x", "y", "width", "height", "Target"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{labels_csv}: columns {sorted(missing)} missing")
        for row in reader:
            pid = row["patientId"].strip()
            if pid not in boxes:
                boxes[pid] = []
                order.append(pid)
            if row["Target"].strip() == "1":
                x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
                boxes[pid].append((map_label("Lung Opacity", "rsna") or "consolidation", x, y, x + w, y + h))
    root = Path(image_dir)
    records = []
    for pid in order:
        b = boxes[pid]
        detail = classes.get(pid)
        other: set[str] = set()
        if not b:
            if detail == NOT_NORMAL:
                other = {NOT_NORMAL}
            elif detail != "Normal":
                other = {UNASSESSED}
        records.append(CxrRecord(
            image_id=pid, patient_id=pid, image_path=str(root / f"{pid}.dcm"),
            labels={"consolidation"} if b else set(), boxes=b, source="rsna",
            label_quality="expert", other_labels=other,
            extra={"rsna_class": detail} if detail else {},
        ))
    return records
