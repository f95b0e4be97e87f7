"""One record per radiograph, whatever public or local format it came from."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from training.datasets.class_map import CLASSES

logger = logging.getLogger(__name__)

LABEL_QUALITIES = ("expert", "report", "synthetic")

# a box: (our class, x1, y1, x2, y2) in source pixels (continuous coordinates, see models.geometry)
Box = tuple[str, float, float, float, float]


@dataclass(frozen=True)
class RleMask:
    """A run-length encoded mask kept encoded until needed (SIIM-ACR ``train-rle.csv``).

    ``counts`` are (start, length) pairs over the image flattened column-major (Fortran
    order, as in the SIIM files); ``relative`` means each start is an offset from the
    end of the previous run (the SIIM-ACR variant), otherwise 1-based absolute starts
    (the Kaggle/COCO-style standard).  Several encodings of one image are OR-ed.
    """

    encodings: tuple[str, ...]
    height: int
    width: int
    relative: bool = True

    def decode(self) -> np.ndarray:
        from training.datasets.siim import rle_decode

        out = np.zeros((self.height, self.width), dtype=bool)
        for enc in self.encodings:
            out |= rle_decode(enc, self.height, self.width, relative=self.relative)
        return out


MaskValue = Union[str, os.PathLike, np.ndarray, RleMask]


@dataclass
class CxrRecord:
    """One chest radiograph with its labels.

    Attributes
    ----------
    image_id : str
        Identifier unique within the source (e.g. NIH file stem).
    patient_id : str
        Used for patient-level splits (every image of a patient on the same side).
    image_path : str
        Image file (PNG/JPEG/DICOM).
    labels : set of str
        Our classes present (``training.datasets.class_map.CLASSES``).
    boxes : list of (class, x1, y1, x2, y2)
        Boxes of our classes, in source pixels.
    masks : dict or None
        Class (or ``"lung"``) -> mask file path, array or :class:`RleMask`.
    pixel_spacing_mm : float or None
        Isotropic spacing of ``image_path`` when known.
    view : str
        "PA", "AP", "LL" ... or "" when unknown.
    source : str
        Dataset name, e.g. "nih", "vindr", "rsna", "siim", "chestx-det", "tbx11k", "openist".
    label_quality : str
        "expert" (radiologist), "report" (mined from reports) or "synthetic".
    other_labels : set of str
        Public findings outside our classes (the image is then *not* normal).
    other_boxes : list of (name, x1, y1, x2, y2)
        Boxes of those findings.
    extra : dict
        Anything else from the source (age, sex, rad_id ...).
    """

    image_id: str
    patient_id: str
    image_path: str
    labels: set[str] = field(default_factory=set)
    boxes: list[Box] = field(default_factory=list)
    masks: dict[str, MaskValue] | None = None
    pixel_spacing_mm: float | None = None
    view: str = ""
    source: str = ""
    label_quality: str = "report"
    other_labels: set[str] = field(default_factory=set)
    other_boxes: list[Box] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.labels) - set(CLASSES)
        if unknown:
            raise ValueError(f"{self.image_id}: labels {sorted(unknown)} are not our classes {CLASSES}; "
                             "map public names with training.datasets.class_map")
        for b in self.boxes:
            if b[0] not in CLASSES:
                raise ValueError(f"{self.image_id}: box label {b[0]!r} is not one of {CLASSES}")
        if self.label_quality not in LABEL_QUALITIES:
            raise ValueError(f"{self.image_id}: label_quality must be one of {LABEL_QUALITIES}")

    @property
    def is_normal(self) -> bool:
        """No finding of ours and no other finding (an ``empty labels`` record with
        ``other_labels`` is abnormal for something outside our classes)."""
        return not self.labels and not self.other_labels

    def label_vector(self) -> np.ndarray:
        """Multi-hot float32 vector over :data:`CLASSES`."""
        return np.array([c in self.labels for c in CLASSES], dtype=np.float32)


def load_mask(value: MaskValue) -> np.ndarray:
    """A mask value (path, array or RleMask) as a bool array."""
    if isinstance(value, RleMask):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.astype(bool)
    from PIL import Image

    with Image.open(Path(value)) as im:
        return np.asarray(im.convert("L")) > 127
