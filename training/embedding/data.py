"""Retrieval training data: real NIH radiographs (patient-level split) and OpenIST
normals with synthetic lesions (image-level split), on the same model grid as inference.

Label sets per image (relevance = the two sets share a label):
``nodule_mass``, ``consolidation``, ``interstitial_opacity``, ``pleural_effusion``,
``pneumothorax`` (our classes), ``other`` (an NIH finding outside them) and ``normal``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.cxr.preprocess import INPUT_SIZE, prepare
from training.cxr.data import read_grey, split_of
from training.datasets.class_map import CLASSES, NORMAL_LABELS
from training.datasets.shared_cxr import load_nih_labels_json, load_openist_normals
from training.synthesis.cxr_lesions import KINDS, SynthesisError, insert

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = (*CLASSES, "other", "normal")
OPENIST_SPACING_MM = 0.8  # approximate: ~500 px across a PA chest


@dataclass
class EmbedSet:
    """Images on the model grid (N, S, S) float16, multi-hot labels (N, L), group ids."""

    images: np.ndarray
    labels: np.ndarray
    groups: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def label_vector(names: set[str]) -> np.ndarray:
    v = np.zeros(len(LABELS), dtype=np.float32)
    for n in names:
        v[LABELS.index(n)] = 1.0
    return v


def nih_label_set(labels: set[str], other: set[str]) -> set[str]:
    """Our classes, plus ``other`` for abnormal findings outside them, else ``normal``."""
    out = set(labels)
    if {o for o in other if o.lower() not in NORMAL_LABELS}:
        out.add("other")
    return out or {"normal"}


def _image_split(image_id: str, held_out_percent: int = 20) -> str:
    bucket = int(hashlib.md5(image_id.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < held_out_percent else "train"


def load_nih(folder: Path, split: str, size: int = INPUT_SIZE) -> EmbedSet:
    """NIH radiographs of ``split`` (``train``/``test``, by patient as the lesion model)."""
    imgs, labs, groups = [], [], []
    for r in load_nih_labels_json(folder):
        if split_of(r.patient_id) != split:
            continue
        imgs.append(prepare(read_grey(r.image_path), size).tensor[0, 0].astype(np.float16))
        labs.append(label_vector(nih_label_set(r.labels, r.other_labels)))
        groups.append(r.patient_id)
    return EmbedSet(np.stack(imgs), np.stack(labs), groups, "nih")


def load_synthetic(folder: Path, split: str, per_image: int = 5, seed: int = 0,
                   size: int = INPUT_SIZE) -> EmbedSet:
    """OpenIST normals of ``split`` (by image): the normal itself plus ``per_image`` copies
    with one synthetic lesion each (kinds in turn), labelled with that kind."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    imgs, labs, groups = [], [], []
    for r in load_openist_normals(folder):
        if _image_split(r.image_id) != split:
            continue
        img = read_grey(r.image_path)
        with Image.open(r.masks["lung"]) as m:
            lung = np.asarray(m.convert("L")) > 127
        imgs.append(prepare(img, size).tensor[0, 0].astype(np.float16))
        labs.append(label_vector({"normal"}))
        groups.append(r.image_id)
        for j in range(per_image):
            kind = KINDS[(j + int(rng.integers(len(KINDS)))) % len(KINDS)]
            try:
                ins = insert(kind, img, lung, OPENIST_SPACING_MM, rng)
            except SynthesisError as e:
                logger.debug("%s: %s", r.image_id, e)
                continue
            imgs.append(prepare(ins.image, size).tensor[0, 0].astype(np.float16))
            labs.append(label_vector({kind}))
            groups.append(r.image_id)
    return EmbedSet(np.stack(imgs), np.stack(labs), groups, "synthetic")


def cached(path: Path, build) -> EmbedSet:
    """Load an :class:`EmbedSet` from ``path`` (.npz) or build and save it."""
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return EmbedSet(z["images"], z["labels"], [str(g) for g in z["groups"]], str(z["source"]))
    s = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=s.images, labels=s.labels, groups=np.array(s.groups), source=np.array(s.source))
    return s
