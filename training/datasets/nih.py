"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` labels and ``BBox_List_2017.csv`` boxes.

``Data_Entry_2017.csv`` (and the 2020 revision) columns::

    Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,
    View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],

``Finding Labels`` is ``|``-separated ("No Finding" for normals).  The released PNGs are
1024 x 1024 resamplings of the originals, so the spacing at the PNG is the original
spacing times ``OriginalImage / 1024`` (averaged over x and y).

``BBox_List_2017.csv``: ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` — the header
splits ``Bbox [x,y,w,h]`` over four columns; boxes are top-left + width/height in
1024-px coordinates (labels Atelectasis, Cardiomegaly, Effusion, Infiltrate, Mass,
Nodule, Pneumonia, Pneumothorax).  These boxes were drawn by radiologists.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from training.datasets.class_map import map_label, split_labels
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)

NIH_PNG_SIZE = 1024


def _float(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_bbox_list(csv_path: str | os.PathLike, scale: float = 1.0) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """Boxes per image from ``BBox_List_2017.csv`` as ``(NIH label, x1, y1, x2, y2)`` times ``scale``."""
    boxes: dict[str, list[tuple[str, float, float, float, float]]] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        if not header or header[0].strip() != "Image Index" or "Bbox" not in ",".join(header):
            raise ValueError(f"{csv_path}: not a BBox_List_2017.csv header: {header}")
        for row in reader:
            if len(row) < 6 or not row[0].strip():
                continue
            x, y, w, h = (float(v) for v in row[2:6])
            boxes.setdefault(row[0].strip(), []).append(
                (row[1].strip(), x * scale, y * scale, (x + w) * scale, (y + h) * scale))
    return boxes


def load_nih(data_entry_csv: str | os.PathLike, image_dir: str | os.PathLike,
             bbox_csv: str | os.PathLike | None = None, image_size: int = NIH_PNG_SIZE) -> list[CxrRecord]:
    """Records from NIH ``Data_Entry_2017*.csv`` (+ optional ``BBox_List_2017.csv``).

    Parameters
    ----------
    image_dir : path
        Folder holding the PNGs (searched recursively: the release splits them over
        ``images_001/images`` ...).
    image_size : int
        Side of the PNGs on disk (1024 for the release; boxes are scaled by
        ``image_size / 1024``).
    """
    root = Path(image_dir)
    index = {p.name: p for p in root.rglob("*.png")} if root.is_dir() else {}
    scale = image_size / NIH_PNG_SIZE
    boxes = read_bbox_list(bbox_csv, scale) if bbox_csv else {}
    records: list[CxrRecord] = []
    with open(data_entry_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        col = {name: i for i, name in enumerate(header)}
        for needed in ("Image Index", "Finding Labels", "Patient ID"):
            if needed not in col:
                raise ValueError(f"{data_entry_csv}: column {needed!r} missing; header is {header}")
        # the bracketed columns split on their inner comma: OriginalImage[Width | Height], ...Spacing[x | y]
        i_w, i_sx = col.get("OriginalImage[Width"), col.get("OriginalImagePixelSpacing[x")
        for row in reader:
            if not row or not row[0].strip():
                continue
            name = row[col["Image Index"]].strip()
            labels_raw = [s for s in row[col["Finding Labels"]].split("|") if s.strip()]
            ours, other = split_labels(labels_raw, "nih")
            spacing = None
            if i_w is not None and i_sx is not None and len(row) > i_sx + 1:
                w, h = _float(row[i_w]), _float(row[i_w + 1])
                sx, sy = _float(row[i_sx]), _float(row[i_sx + 1])
                if w and h and sx and sy:
                    spacing = round(((sx * w) + (sy * h)) / 2 / image_size, 5)
            rec_boxes, other_boxes = [], []
            for label, *xyxy in boxes.get(name, []):
                cls = map_label(label, "nih")
                (rec_boxes if cls else other_boxes).append((cls or label, *xyxy))
                (ours.add(cls) if cls else other.add(label))
            records.append(CxrRecord(
                image_id=Path(name).stem,
                patient_id=row[col["Patient ID"]].strip().lstrip("0") or "0",
                image_path=str(index.get(name, root / name)),
                labels=ours, boxes=rec_boxes, pixel_spacing_mm=spacing,
                view=row[col["View Position"]].strip() if "View Position" in col else "",
                source="nih", label_quality="expert" if name in boxes else "report",
                other_labels=other, other_boxes=other_boxes,
                extra={k: row[col[k]].strip() for k in ("Follow-up #", "Patient Age", "Patient Gender")
                       if k in col and len(row) > col[k]},
            ))
    return records
