"""Chest X-ray training data: patient-level splits, model-grid caches, augmentation, targets.

Everything is turned into the model grid by :func:`models.cxr.preprocess.prepare` -- the
same function inference uses -- and cached as arrays so training loops stay cheap on CPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from models.imaging import load_radiograph
from models.cxr.preprocess import CLASSES, INPUT_SIZE, prepare, prepare_mask

logger = logging.getLogger(__name__)

HELD_OUT_PERCENT = 30  # patients whose md5 bucket < this go to the held-out split


def split_of(patient_id: str, held_out_percent: int = HELD_OUT_PERCENT) -> str:
    """Deterministic patient-level split: ``"test"`` or ``"train"`` from an md5 bucket of the id."""
    bucket = int(hashlib.md5(str(patient_id).encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < held_out_percent else "train"


def read_grey(path: str | Path) -> np.ndarray:
    """Read an 8/16-bit greyscale PNG/JPEG as float32 presentation values."""
    with Image.open(path) as im:
        if im.mode not in ("L", "I;16", "I"):
            im = im.convert("L")
        return np.asarray(im, dtype=np.float32)


@dataclass
class GridSet:
    """Images on the model grid: ``images`` (N,S,S) float32 in [0,1], optional ``lungs`` (N,S,S) bool."""

    images: np.ndarray
    ids: list[str]
    patients: list[str]
    lungs: np.ndarray | None = None
    labels: np.ndarray | None = None  # (N, 5) float, NaN = unknown
    abnormal: np.ndarray | None = None  # (N,) float
    boxes: list[list[tuple[int, list[float]]]] = field(default_factory=list)  # per image: (class idx, model-px box)
    source_boxes: list[list[tuple[int, list[float]]]] = field(default_factory=list)  # source px
    spacing: np.ndarray | None = None  # model-grid mm / px

    def subset(self, idx: np.ndarray) -> GridSet:
        """Return the rows ``idx``."""
        idx = np.asarray(idx, dtype=int)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return GridSet(
            images=self.images[idx],
            ids=[self.ids[i] for i in idx],
            patients=[self.patients[i] for i in idx],
            lungs=pick(self.lungs),
            labels=pick(self.labels),
            abnormal=pick(self.abnormal),
            boxes=[self.boxes[i] for i in idx] if self.boxes else [],
            source_boxes=[self.source_boxes[i] for i in idx] if self.source_boxes else [],
            spacing=pick(self.spacing),
        )

    def split(self, which: str) -> GridSet:
        """Return the patient-level ``"train"`` or ``"test"`` part."""
        return self.subset(np.array([i for i, p in enumerate(self.patients) if split_of(p) == which], dtype=int))


def grid_from_pairs(
    pairs: list[tuple[str, str | None]], size: int = INPUT_SIZE, spacing_mm: float | None = None
) -> GridSet:
    """Prepare (image path, lung-mask path or None) pairs; the patient id is the file stem."""
    images, lungs, ids, sp = [], [], [], []
    for img_path, mask_path in pairs:
        pix = load_radiograph(img_path).pixels
        prep = prepare(pix, size)
        images.append(prep.tensor[0, 0])
        if mask_path is not None:
            lungs.append(prepare_mask(read_grey(mask_path) > 127, size))
        ids.append(Path(img_path).stem)
        sp.append((spacing_mm or 0.7) / prep.geometry.scale)
    return GridSet(
        images=np.stack(images).astype(np.float32),
        ids=ids,
        patients=list(ids),
        lungs=np.stack(lungs) if lungs else None,
        spacing=np.asarray(sp, dtype=np.float32),
    )


def openist_pairs(root: str | Path) -> list[tuple[str, str]]:
    """(image, lung mask) paths of the OpenIST normal set (``images/*.jpg``, ``lung_masks/*.png``)."""
    root = Path(root)
    out = []
    for img in sorted((root / "images").glob("*.jpg")):
        m = root / "lung_masks" / (img.stem + ".png")
        if m.exists():
            out.append((str(img), str(m)))
    return out


def augment_batch(rng: np.random.Generator, images: np.ndarray, *targets: np.ndarray, flip: bool = True):
    """Random horizontal flip, small shift and gamma: the same geometry for images and targets.

    ``images`` (B,S,S); each target (B,C,h,w) or (B,h,w) at any resolution (shift scales).
    """
    images = images.copy()
    targets = [t.copy() for t in targets]
    size = images.shape[-1]
    for b in range(images.shape[0]):
        if flip and rng.random() < 0.5:
            images[b] = images[b, :, ::-1]
            for t in targets:
                t[b] = t[b][..., ::-1]
        dy, dx = rng.integers(-12, 13, size=2)
        images[b] = np.roll(images[b], (dy, dx), axis=(0, 1))
        for t in targets:
            f = t.shape[-1] / size
            t[b] = np.roll(t[b], (int(round(dy * f)), int(round(dx * f))), axis=(-2, -1))
        images[b] = np.clip(images[b], 0, 1) ** rng.uniform(0.7, 1.4)
    return (images, *targets)


CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}


def grid_from_records(records: list, size: int = INPUT_SIZE) -> GridSet:
    """Prepare :class:`training.datasets.records.CxrRecord` items: labels, abnormality and boxes.

    Boxes are kept in source pixels and mapped to the model grid with the letterbox.
    """
    from training.datasets.records import load_mask

    images, labels, abnormal, boxes, sboxes, spacing, lungs = [], [], [], [], [], [], []
    have_lungs = all(r.masks and "lung" in r.masks for r in records) and records
    for r in records:
        pix = load_radiograph(r.image_path).pixels  # the inference loader
        prep = prepare(pix, size)
        images.append(prep.tensor[0, 0])
        labels.append(r.label_vector())
        abnormal.append(0.0 if r.is_normal else 1.0)
        bx, sbx = [], []
        for cls, x1, y1, x2, y2 in r.boxes:
            sbx.append((CLASS_INDEX[cls], [x1, y1, x2, y2]))
            bx.append((CLASS_INDEX[cls], prep.geometry.box_to_model([x1, y1, x2, y2])))
        boxes.append(bx)
        sboxes.append(sbx)
        spacing.append((r.pixel_spacing_mm or 0.7) / prep.geometry.scale)
        if have_lungs:
            lungs.append(prepare_mask(load_mask(r.masks["lung"]), size))
    return GridSet(
        images=np.stack(images).astype(np.float32),
        ids=[r.image_id for r in records],
        patients=[r.patient_id for r in records],
        lungs=np.stack(lungs) if have_lungs else None,
        labels=np.stack(labels).astype(np.float32),
        abnormal=np.asarray(abnormal, dtype=np.float32),
        boxes=boxes,
        source_boxes=sboxes,
        spacing=np.asarray(spacing, dtype=np.float32),
    )


def box_masks(boxes: list[tuple[int, list[float]]], size: int, grid: int) -> np.ndarray:
    """Rasterise model-pixel boxes into (5, grid, grid) weak masks at ``grid`` resolution."""
    out = np.zeros((len(CLASSES), grid, grid), dtype=np.float32)
    f = grid / size
    for cls, (x1, y1, x2, y2) in boxes:
        xa, ya = int(np.floor(x1 * f)), int(np.floor(y1 * f))
        xb, yb = int(np.ceil(x2 * f)), int(np.ceil(y2 * f))
        out[cls, max(ya, 0) : max(yb, 0), max(xa, 0) : max(xb, 0)] = 1.0
    return out


def downsample_mask(mask: np.ndarray, grid: int) -> np.ndarray:
    """Area-average a (S,S) bool mask to (grid, grid) fractions."""
    s = mask.shape[0] // grid
    return mask.reshape(grid, s, grid, s).mean(axis=(1, 3)).astype(np.float32)


def synthetic_sample(
    image: np.ndarray, lung: np.ndarray, spacing_mm: float, rng: np.random.Generator, kinds: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``kinds`` into a model-grid normal; return the image and (5,S,S) exact masks."""
    from training.synthesis.cxr_lesions import SynthesisError, synthesize

    masks = np.zeros((len(CLASSES),) + image.shape, dtype=bool)
    try:
        out, per_kind = synthesize(image, lung, spacing_mm, kinds, rng)
    except SynthesisError:
        return image, masks
    for k, m in per_kind.items():
        masks[CLASS_INDEX[k]] = m
    return out, masks


def synthetic_eval_set(normals: GridSet, seed: int = 1234) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out synthetic set: each normal once clean and once per class (fixed seed).

    Returns images (M,S,S), labels (M,5) and exact masks (M,5,S,S).
    """
    rng = np.random.default_rng(seed)
    imgs, labs, masks = [], [], []
    for img, lung, sp in zip(normals.images, normals.lungs, normals.spacing):
        imgs.append(img)
        labs.append(np.zeros(len(CLASSES), dtype=np.float32))
        masks.append(np.zeros((len(CLASSES),) + img.shape, dtype=bool))
        for k in CLASSES:
            out, m = synthetic_sample(img, lung, float(sp), rng, [k])
            imgs.append(out)
            labs.append(m.any(axis=(1, 2)).astype(np.float32))
            masks.append(m)
    return np.stack(imgs), np.stack(labs), np.stack(masks)


def nih_records(root: str | Path) -> list:
    """CxrRecords of the NIH folder (``labels.json`` + ``images/``), mapped by ``class_map``.

    Report-mined NIH labels (``label_quality="report"``), plus positives of the Google 2019
    radiologist labels; boxes mapped with the table of their source (ChestX-Det10 or NIH).
    Used until a shared loader in ``training.datasets`` provides the same.
    """
    from training.datasets.class_map import map_label, split_labels
    from training.datasets.records import CxrRecord

    root = Path(root)
    out = []
    for rec in json.loads((root / "labels.json").read_text()):
        ours, other = split_labels(rec["nih_labels"], "nih")
        for name, val in (rec.get("expert_labels_google2019") or {}).items():
            cls = map_label(name, "google2019")
            if val and cls:
                ours.add(cls)
        boxes, other_boxes = [], []
        for b in rec["boxes"]:
            src = "chestx-det" if "ChestX-Det" in b.get("source", "") else "nih"
            cls = map_label(b["label"], src)
            x1, y1, x2, y2 = (float(v) for v in b["box"])
            if cls:
                boxes.append((cls, x1, y1, x2, y2))
                ours.add(cls)
            else:
                other_boxes.append((b["label"], x1, y1, x2, y2))
        out.append(CxrRecord(
            image_id=Path(rec["file"]).stem, patient_id=str(rec["patient_id"]), image_path=str(root / rec["file"]),
            labels=ours, boxes=boxes, pixel_spacing_mm=rec.get("pixel_spacing_mm"), view=rec.get("view", ""),
            source="nih", label_quality="report", other_labels=other, other_boxes=other_boxes,
        ))
    return out
