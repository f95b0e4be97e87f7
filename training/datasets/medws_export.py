"""Loader of the labeling tool's ``medws-dataset`` export (docs/dataset-format.md).

numpy-only (plus SimpleITK/pydicom for masks): returns :class:`CxrRecord` objects with
the patient-level split in ``extra["split"]``, and verifies the manifest's content
hash and split integrity before anything is used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from training.datasets.class_map import CLASSES
from training.datasets.records import CxrRecord

logger = logging.getLogger(__name__)

FORMAT = "medws-dataset"
SUPPORTED_VERSIONS = (1,)


class DatasetFormatError(ValueError):
    """The folder is not a valid medws-dataset export."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: str | os.PathLike) -> dict:
    root = Path(root)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise DatasetFormatError(f"{root} has no readable manifest.json: {e}") from e
    if manifest.get("format") != FORMAT or manifest.get("format_version") not in SUPPORTED_VERSIONS:
        raise DatasetFormatError(f"{root} is not a {FORMAT} of version {SUPPORTED_VERSIONS}")
    return manifest


def verify_export(root: str | os.PathLike) -> dict:
    """Check every file's hash, the content hash and that no patient is in two splits.

    Returns the manifest; raises :class:`DatasetFormatError` on any mismatch.
    """
    root = Path(root)
    manifest = read_manifest(root)
    files = manifest["files"]
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"}
    if on_disk != set(files):
        raise DatasetFormatError(f"files differ from the manifest: {sorted(on_disk ^ set(files))[:5]}")
    for rel, digest in files.items():
        if _sha256(root / rel) != digest:
            raise DatasetFormatError(f"{rel} was changed after export (hash mismatch)")
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
    if h.hexdigest() != manifest["content_sha256"]:
        raise DatasetFormatError("content hash does not match the manifest")
    seen: dict[str, str] = {}
    for entry in manifest["images"]:
        prev = seen.setdefault(entry["patient_id"], entry["split"])
        if prev != entry["split"]:
            raise DatasetFormatError(f"a patient is in both {prev} and {entry['split']}")
    return manifest


def _load_mask(root: Path, rel: str, label: str) -> np.ndarray:
    if rel.endswith(".nii.gz") or rel.endswith(".nii"):
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(root / rel))).astype(bool)
    import pydicom

    seg = pydicom.dcmread(root / rel)
    number = next(int(s.SegmentNumber) for s in seg.SegmentSequence if s.SegmentLabel == label)
    frames = seg.pixel_array
    frames = frames[None] if frames.ndim == 2 else frames
    idx = [i for i, f in enumerate(seg.PerFrameFunctionalGroupsSequence)
           if int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number]
    return frames[idx[0]].astype(bool)


def load_medws_export(root: str | os.PathLike, split: str | None = None, verify: bool = True) -> list[CxrRecord]:
    """Records of a medws-dataset export (all splits, or one of train/val/test)."""
    root = Path(root)
    manifest = verify_export(root) if verify else read_manifest(root)
    records = []
    for entry in manifest["images"]:
        if split is not None and entry["split"] != split:
            continue
        doc = json.loads((root / entry["labels"]).read_text())
        present = set(doc["image_labels"]) - {"normal"}
        ours = present & set(CLASSES)
        boxes = [(b["label"], float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"]))
                 for b in doc["boxes"] if b["label"] in CLASSES]
        masks = {label: _load_mask(root, rel, label) for label, rel in doc["masks"].items() if label in CLASSES}
        records.append(CxrRecord(
            image_id=entry["image_id"],
            patient_id=entry["patient_id"],
            image_path=str(root / entry["image"]),
            labels=ours,
            boxes=boxes,
            masks=masks or None,
            source="medws-export",
            label_quality="expert",
            other_labels=present - ours,
            extra={"split": entry["split"], "annotators": doc.get("annotators", []),
                   "dataset_version": manifest["dataset_version"], "content_sha256": manifest["content_sha256"]},
        ))
    return records
