"""SIIM-ACR Pneumothorax Segmentation: ``train-rle.csv`` run-length encoded masks.

The file has columns ``ImageId`` and `` EncodedPixels`` (the header has a leading
space).  ``-1`` means no pneumothorax; an image with several pneumothorax regions has
several rows.  The challenge's RLE variant (its ``mask_functions.py``) lists
``(start, length)`` pairs where each *start is relative to the end of the previous run*,
over the 1024 x 1024 image flattened column by column (the mask is transposed).  The
later stage-2 files use standard RLE (1-based absolute starts, same column order): pass
``relative=False``.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from training.datasets.records import CxrRecord, RleMask

logger = logging.getLogger(__name__)

SIIM_SIZE = 1024


def rle_decode(rle: str, height: int, width: int, relative: bool = True) -> np.ndarray:
    """Decode one SIIM RLE string into a ``(height, width)`` bool mask.

    Raises
    ------
    ValueError
        When the string has an odd number of values or a run leaves the image.
    """
    rle = rle.strip()
    out = np.zeros(height * width, dtype=bool)
    if rle in ("", "-1"):
        return out.reshape(width, height).T
    values = np.array([int(v) for v in rle.split()], dtype=np.int64)
    if values.size % 2:
        raise ValueError("RLE must hold (start, length) pairs; got an odd number of values")
    starts, lengths = values[0::2], values[1::2]
    if relative:
        pos = 0
        for s, n in zip(starts, lengths):
            pos += int(s)
            if pos < 0 or pos + n > out.size:
                raise ValueError(f"RLE run {pos}+{n} leaves a {height}x{width} image")
            out[pos:pos + n] = True
            pos += int(n)
    else:
        for s, n in zip(starts - 1, lengths):
            if s < 0 or s + n > out.size:
                raise ValueError(f"RLE run {s}+{n} leaves a {height}x{width} image")
            out[s:s + n] = True
    return out.reshape(width, height).T


def rle_encode(mask: np.ndarray, relative: bool = True) -> str:
    """Encode a bool mask in the SIIM format (column-major); ``"-1"`` for an empty mask."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    if edges.size == 0:
        return "-1"
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts
    if relative:
        prev_end = np.concatenate([[0], ends[:-1]])
        starts = starts - prev_end
    else:
        starts = starts + 1
    return " ".join(f"{s} {n}" for s, n in zip(starts, lengths))


def load_siim(csv_path: str | os.PathLike, image_dir: str | os.PathLike | None = None,
              relative: bool = True, size: int = SIIM_SIZE) -> list[CxrRecord]:
    """Records from a SIIM-ACR ``train-rle.csv``.

    Images are found as ``<image_dir>/**/<ImageId>.dcm`` (the challenge's folder tree);
    without ``image_dir`` the path is ``<ImageId>.dcm`` next to the CSV.  Masks stay
    encoded (:class:`RleMask`) until :func:`training.datasets.records.load_mask`.
    """
    csv_path = Path(csv_path)
    root = Path(image_dir) if image_dir is not None else csv_path.parent
    index = {p.stem: p for p in root.rglob("*.dcm")} if root.is_dir() else {}
    encodings: dict[str, list[str]] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        try:
            i_id, i_rle = header.index("ImageId"), header.index("EncodedPixels")
        except ValueError:
            raise ValueError(f"{csv_path}: expected columns ImageId, EncodedPixels; got {header}") from None
        for row in reader:
            if not row:
                continue
            image_id, rle = row[i_id].strip(), row[i_rle].strip()
            runs = encodings.setdefault(image_id, [])
            if rle not in ("-1", ""):
                runs.append(rle)
    records = []
    for image_id, runs in encodings.items():
        path = index.get(image_id, root / f"{image_id}.dcm")
        positive = bool(runs)
        records.append(CxrRecord(
            image_id=image_id,
            patient_id=image_id,  # train-rle.csv has no patient column; read PatientID from the DICOM if needed
            image_path=str(path),
            labels={"pneumothorax"} if positive else set(),
            masks={"pneumothorax": RleMask(tuple(runs), size, size, relative)},
            view="",
            source="siim",
            label_quality="expert",
            # a negative SIIM image is "no pneumothorax", not necessarily normal
            other_labels=set() if positive else {"not assessed beyond pneumothorax"},
        ))
    return records
