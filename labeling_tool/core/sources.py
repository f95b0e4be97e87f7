"""Where the images to label come from: the medws archive or a plain folder."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labeling_tool.core.errors import LabelingError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageRef:
    """One image to label.

    ``image_id`` is the SOP Instance UID for DICOM and ``img-<hash of relative path>``
    for PNG/JPEG; ``patient_key`` groups images of one patient (PatientID for DICOM,
    the file-name prefix before the first ``_`` for PNG/JPEG, as in NIH names).
    """

    image_id: str
    path: Path
    kind: str  # "dicom" | "png"
    patient_key: str
    study_uid: str = ""


@dataclass
class LoadedImage:
    """Pixels (float32, modality LUT applied) and the default window."""

    pixels: np.ndarray
    window_center: float
    window_width: float
    invert: bool = False


def _png_ref(path: Path, root: Path) -> ImageRef:
    rel = str(path.relative_to(root))
    image_id = "img-" + hashlib.sha256(rel.encode()).hexdigest()[:16]
    return ImageRef(image_id, path, "png", path.stem.split("_")[0])


def _dicom_ref(path: Path) -> ImageRef | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        return None
    if "SOPInstanceUID" not in ds or "Rows" not in ds:
        return None
    return ImageRef(str(ds.SOPInstanceUID), path, "dicom", str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")))


class FolderSource:
    """A plain folder of DICOM/PNG/JPEG images (recursive); the label store lives in it."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.root = Path(folder).resolve()
        if not self.root.is_dir():
            raise LabelingError(f"folder {self.root} does not exist")

    @property
    def store_path(self) -> Path:
        return self.root / "medws-labels.sqlite"

    def images(self) -> list[ImageRef]:
        refs: list[ImageRef] = []
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or p.name.startswith("medws-labels"):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                refs.append(_png_ref(p, self.root))
            elif p.suffix.lower() in (".dcm", "") or p.suffix.lower() not in (".json", ".txt", ".csv"):
                ref = _dicom_ref(p)
                if ref is not None:
                    refs.append(ref)
        return refs


class ArchiveSource:
    """Images of the medws archive, read through ``dicom_node``'s index.

    Falls back to the documented file layout ``<root>/dicom/<Study>/<Series>/<SOP>.dcm``
    when the index cannot be opened.  The label store lives in the archive root.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise LabelingError(f"archive root {self.root} does not exist")

    @property
    def store_path(self) -> Path:
        return self.root / "labels.sqlite"

    def _indexed(self) -> list[Path] | None:
        try:
            from dicom_node.archive import Archive
            from dicom_node.config import load_config
            from dicom_node.db import Database

            config = load_config(self.root)
            db = Database(config.database_url, root=config.root)
            try:
                archive = Archive(config, db)
                return [archive.absolute(r["path"]) for r in archive.instances()]
            finally:
                db.close()
        except Exception as e:  # noqa: BLE001 - any index problem falls back to the file layout
            logger.warning("archive index not readable (%s); scanning %s/dicom", type(e).__name__, self.root)
            return None

    def images(self) -> list[ImageRef]:
        paths = self._indexed()
        if paths is None:
            paths = sorted((self.root / "dicom").rglob("*.dcm"))
        refs = [r for r in (_dicom_ref(p) for p in paths) if r is not None]
        return refs


def load_image(ref: ImageRef) -> LoadedImage:
    """Pixels for display and labelling (PS3.3 C.11: modality LUT, default VOI window)."""
    if ref.kind == "png":
        from PIL import Image

        with Image.open(ref.path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32)
        return LoadedImage(arr, 127.5, 255.0)
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(ref.path)
    arr = ds.pixel_array
    if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1:
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr.mean(axis=-1)
    arr = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        wc = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
        ww = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
    except (TypeError, ValueError):
        lo, hi = np.percentile(arr, [0.5, 99.5])
        wc, ww = float(lo + hi) / 2, float(max(hi - lo, 1.0))
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    return LoadedImage(arr, wc, ww, invert)
