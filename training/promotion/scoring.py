"""Per-case scores of a registry model on the locked test set (ONNX Runtime, as shipped)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.cxr.preprocess import prepare

logger = logging.getLogger(__name__)


def read_pixels(path: str | Path) -> np.ndarray:
    """Greyscale presentation pixels of a PNG/JPEG or DICOM file (MONOCHROME1 inverted)."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32)
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    arr = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[0]
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def locked_labels(records: Sequence, classes: Sequence[str]) -> np.ndarray:
    """(N, C) 0/1 labels of ``records`` in ``classes`` order."""
    return np.array([[1.0 if c in r.labels else 0.0 for c in classes] for r in records], dtype=np.float64)


def score_records(model, records: Sequence, classes: Sequence[str], card_classes: Sequence[str],
                  size: int, output: str = "scores", batch: int = 8) -> np.ndarray:
    """Run an :class:`models.session.OrtModel` on every record; (N, C) scores in ``classes`` order."""
    cols = [list(card_classes).index(c) for c in classes]
    out = []
    for i in range(0, len(records), batch):
        x = np.concatenate([prepare(read_pixels(r.image_path), size).tensor for r in records[i:i + batch]])
        res = model.run({"image": x.astype(np.float32)})
        scores = res[output] if output in res else next(iter(res.values()))
        out.append(np.asarray(scores, dtype=np.float64).reshape(len(x), -1)[:, cols])
    return np.concatenate(out) if out else np.zeros((0, len(classes)))
