"""Dataset export: de-identified images + labels, patient-level splits, a manifest.

The format is documented in ``docs/dataset-format.md`` (format ``medws-dataset``,
version 1).  The export refuses the whole dataset, writing nothing, when any selected
image is not de-identified (:func:`labeling_tool.core.deid.is_deidentified` for DICOM;
no text metadata and no detected burned-in text for PNG/JPEG).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from labeling_tool.core.deid import deidentification_problems, detect_text_boxes
from labeling_tool.core.errors import ExportError, NotDeidentifiedError
from labeling_tool.core.schema import load_schema
from labeling_tool.core.store import Annotation, LabelStore, polygon_mask

logger = logging.getLogger(__name__)

FORMAT = "medws-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def split_for_patient(patient_id: str, fractions: tuple[float, float, float], seed: int = 0) -> str:
    """Split of a patient: a hash of (seed, patient) in [0, 1) against the fractions.

    Depends on the patient alone, so every image of a patient lands in the same split
    and a patient's split never changes when the dataset grows (a locked test set).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ExportError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    u = int.from_bytes(hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(files: dict[str, str]) -> str:
    """SHA-256 over ``relative path NUL file sha256 LF`` lines in path order."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
    return h.hexdigest()


def image_problems(row: dict[str, Any], allow_burned_text: bool = False) -> list[str]:
    """Why an image may not be exported (empty when it is de-identified)."""
    path = Path(row["path"])
    if row["kind"] == "dicom":
        import pydicom

        return deidentification_problems(pydicom.dcmread(path, stop_before_pixels=True))
    from PIL import Image

    problems = []
    with Image.open(path) as im:
        meta = {k: v for k, v in im.info.items() if k not in ("dpi", "gamma", "transparency", "aspect", "jfif",
                                                                "jfif_version", "jfif_unit", "jfif_density",
                                                                "progressive", "progression", "srgb", "adobe",
                                                                "adobe_transform")}
        if meta:
            problems.append(f"image metadata present ({', '.join(sorted(meta))})")
        if not allow_burned_text and detect_text_boxes(np.asarray(im.convert("L"))):
            problems.append("burned-in text detected")
    return problems


def _patient_id(row: dict[str, Any]) -> str:
    if row["kind"] == "dicom":
        import pydicom

        return str(pydicom.dcmread(row["path"], stop_before_pixels=True).get("PatientID", ""))
    return "pt-" + hashlib.sha256(row["patient_key"].encode()).hexdigest()[:12]


def _image_shape(row: dict[str, Any]) -> tuple[int, int]:
    if row["kind"] == "dicom":
        import pydicom

        ds = pydicom.dcmread(row["path"], stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    from PIL import Image

    with Image.open(row["path"]) as im:
        return im.height, im.width


def _spacing(row: dict[str, Any]) -> tuple[float, float]:
    if row["kind"] == "dicom":
        import pydicom

        ds = pydicom.dcmread(row["path"], stop_before_pixels=True)
        sp = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        if sp:
            return float(sp[0]), float(sp[1])
    return 1.0, 1.0


def _exportable(anns: list[Annotation]) -> list[Annotation]:
    return [a for a in anns if a.ai_state not in ("proposed", "rejected")]


def _write_nifti(mask: np.ndarray, spacing: tuple[float, float], path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.astype(np.uint8))  # array (rows, cols) -> image (x=cols, y=rows)
    img.SetSpacing((spacing[1], spacing[0]))
    sitk.WriteImage(img, str(path), useCompression=True)


def _write_seg(source_path: Path, masks: dict[str, np.ndarray], path: Path) -> None:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    src = pydicom.dcmread(source_path)
    labels = sorted(masks)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, label in enumerate(labels)
    ]
    stack = np.stack([masks[k] for k in labels], axis=-1)[None].astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=[src],
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medws",
        manufacturer_model_name="medws labeling_tool",
        software_versions="1",
        device_serial_number="0",
    )
    seg.save_as(path)


def export_dataset(
    store: LabelStore,
    out_dir: str | os.PathLike,
    *,
    task: str = "cxr",
    mask_format: str = "nifti",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    min_status: str = "reviewed",
    version: str | None = None,
    allow_burned_text: bool = False,
) -> dict[str, Any]:
    """Export the store's labelled images as a ``medws-dataset`` folder; returns the manifest.

    Raises
    ------
    NotDeidentifiedError
        When any selected image is not de-identified (nothing is written).
    ExportError
        When ``out_dir`` exists and is not empty, or nothing is selected.
    """
    if mask_format not in ("nifti", "seg"):
        raise ExportError("mask format must be 'nifti' or 'seg'")
    statuses = {"reviewed": ("reviewed",), "labelled": ("labelled", "reviewed")}.get(min_status)
    if statuses is None:
        raise ExportError("min_status must be 'reviewed' or 'labelled'")
    schema = load_schema(task)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new folder for each dataset version")
    rows = [r for r in store.images() if r["status"] in statuses]
    if not rows:
        raise ExportError(f"no image has status {' or '.join(statuses)}; nothing to export")
    refused = {}
    for r in rows:
        problems = image_problems(r, allow_burned_text)
        if problems:
            refused[r["image_id"]] = problems
    if refused:
        example = "; ".join(next(iter(refused.values())))
        raise NotDeidentifiedError(
            f"{len(refused)} of {len(rows)} image(s) are not de-identified (e.g. {example}); "
            "run `medws deid` on the images and label the de-identified copies")
    if mask_format == "seg" and any(r["kind"] != "dicom" for r in rows):
        raise ExportError("DICOM SEG masks need DICOM images; use --masks nifti for PNG/JPEG")

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("images", "labels", "masks"):
        (tmp / sub).mkdir(parents=True)
    entries = []
    patients_by_split: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        image_id = r["image_id"]
        patient = _patient_id(r)
        split = split_for_patient(patient, fractions, seed)
        patients_by_split[split].add(patient)
        suffix = ".dcm" if r["kind"] == "dicom" else Path(r["path"]).suffix.lower()
        image_rel = f"images/{image_id}{suffix}"
        shutil.copyfile(r["path"], tmp / image_rel)
        h, w = _image_shape(r)
        anns = _exportable(store.annotations(image_id))
        masks: dict[str, np.ndarray] = {}
        for a in anns:
            if a.kind in ("mask", "polygon"):
                m = a.mask() if a.kind == "mask" else polygon_mask((h, w), a.data["points"])
                masks[a.label] = masks.get(a.label, np.zeros((h, w), bool)) | m
        mask_files = {}
        if masks:
            if mask_format == "nifti":
                for label, m in sorted(masks.items()):
                    rel = f"masks/{image_id}/{label}.nii.gz"
                    (tmp / rel).parent.mkdir(exist_ok=True)
                    _write_nifti(m, _spacing(r), tmp / rel)
                    mask_files[label] = rel
            else:
                rel = f"masks/{image_id}.seg.dcm"
                _write_seg(Path(r["path"]), masks, tmp / rel)
                mask_files = {label: rel for label in masks}
        image_labels = sorted({a.label for a in anns})
        label_doc = {
            "image_id": image_id,
            "patient_id": patient,
            "split": split,
            "height": h,
            "width": w,
            "status": r["status"],
            "image_labels": image_labels,
            "normal": image_labels == ["normal"],
            "boxes": [dict(label=a.label, annotator=a.annotator, source=a.source, **a.data) for a in anns if a.kind == "box"],
            "polygons": [{"label": a.label, "annotator": a.annotator, "source": a.source, "points": a.data["points"]}
                         for a in anns if a.kind == "polygon"],
            "masks": mask_files,
            "annotators": sorted({a.annotator for a in anns}),
        }
        labels_rel = f"labels/{image_id}.json"
        (tmp / labels_rel).write_text(json.dumps(label_doc, indent=1, sort_keys=True))
        entries.append({"image_id": image_id, "patient_id": patient, "split": split, "image": image_rel,
                        "labels": labels_rel})
        counts[split] += 1
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset_version": version or _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "task": task,
        "classes": list(schema.names),
        "mask_format": mask_format,
        "split_fractions": list(fractions),
        "split_seed": seed,
        "statuses": list(statuses),
        "counts": {s: counts.get(s, 0) for s in SPLITS},
        "patients": {s: sorted(patients_by_split.get(s, ())) for s in SPLITS},
        "images": entries,
        "files": files,
        "content_sha256": content_hash(files),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    logger.info("exported %d image(s), content %s", len(entries), manifest["content_sha256"][:12])
    return manifest
