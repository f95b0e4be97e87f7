"""The ``ct_denoise`` task: CT series in, derived (denoised) CT series out.

Pipeline per slice (``pre_process -> predict -> post_process``):
HU / 1000 → tiled ONNX Runtime inference of the noise (the directional wavelet filter
bank is inside the ONNX graph) → ``HU - noise`` → stored values with the source's
rescale.  :func:`denoise_series` builds the derived series: new Series Instance UID
and SOP Instance UIDs, Image Type ``DERIVED\\SECONDARY`` (PS3.3 C.7.6.1.1.2),
Derivation Description naming the model and version, Source Image Sequence pointing
at the originals, identical geometry (Image Position/Orientation, Pixel Spacing,
Frame of Reference, Slice Thickness) and rescale, same study.
"""
from __future__ import annotations

import copy
import datetime as _dt
import logging
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from models.denoise.errors import DenoiseError, NotCtSeriesError
from models.denoise.series import rescale, sort_slices, to_hu
from models.denoise.tiling import predict_tiled
from models.registry import Registry

logger = logging.getLogger(__name__)

TASK = "ct-denoise"
DEFAULT_MODEL = "ct-denoise-light"
HU_SCALE = 1000.0
INPUT_NAME = "image"
OUTPUT_NAME = "noise"


class CtDenoiser:
    """A denoising model from the registry, ready to run on HU slices.

    Parameters
    ----------
    model : registry name (default ``ct-denoise-light``).
    version : registry version (default: active / highest).
    registry : :class:`models.registry.Registry` (default: package zoo + env dirs).
    threads : ONNX Runtime intra-op threads.
    tile : core tile size in pixels (512: a 512 x 512 slice in one tile).
    """

    def __init__(self, model: str = DEFAULT_MODEL, version: str | None = None,
                 registry: Registry | None = None, threads: int | None = None, tile: int = 512) -> None:
        reg = registry or Registry()
        entry = reg.get(model, version)
        if entry.card.task != TASK:
            raise DenoiseError(f"model {model!r} is a {entry.card.task!r} model, not {TASK!r}")
        self.card = entry.card
        self.session = reg.session(model, entry.card.version, threads=threads)
        self.margin = int(self.card.extra.get("tile_margin", 32))
        self.multiple = int(self.card.extra.get("size_multiple", 2))
        self.tile = int(tile)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def pre_process(self, hu: np.ndarray) -> np.ndarray:
        return (np.asarray(hu, dtype=np.float32) / np.float32(HU_SCALE)).astype(np.float32)

    def _net(self, x: np.ndarray) -> np.ndarray:
        return self.session.run({INPUT_NAME: x})[OUTPUT_NAME]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted noise (network units) for one 2-D slice, tiled with overlap."""
        return predict_tiled(x, self._net, tile=self.tile, margin=self.margin, multiple=self.multiple)

    def post_process(self, hu: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return (np.asarray(hu, dtype=np.float32) - noise * np.float32(HU_SCALE)).astype(np.float32)

    def denoise_hu(self, hu: np.ndarray) -> np.ndarray:
        """Denoised HU slice (float32)."""
        return self.post_process(hu, self.predict(self.pre_process(hu)))


def hu_to_stored(hu: np.ndarray, ds: Dataset) -> np.ndarray:
    """Invert the modality LUT with the source's rescale and clip to the stored range."""
    slope, intercept = rescale(ds)
    bits = int(getattr(ds, "BitsStored", 16))
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    stored = np.clip(np.rint((hu - intercept) / slope), lo, hi)
    alloc = int(getattr(ds, "BitsAllocated", 16))
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16,
             (32, False): np.uint32, (32, True): np.int32}[(alloc, signed)]
    return stored.astype(dtype)


def derived_dataset(src: Dataset, hu: np.ndarray, series_uid: str, study_uid: str,
                    model_name: str, model_version: str, series_number: int | None = None) -> Dataset:
    """One derived CT image from its source and the denoised HU.

    Keeps patient, study, frame of reference and geometry; replaces pixels, SOP and
    series identity; marks the image DERIVED\\SECONDARY with a Derivation Description.
    """
    ds = copy.deepcopy(src)
    ds.remove_private_tags()
    now = _dt.datetime.now(_dt.timezone.utc)
    sop_class = str(getattr(src, "SOPClassUID", "") or "") or CTImageStorage
    sop_uid = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    if series_number is not None:
        ds.SeriesNumber = series_number
    old_type = list(getattr(src, "ImageType", []) or [])
    ds.ImageType = ["DERIVED", "SECONDARY"] + (old_type[2:3] if len(old_type) > 2 else ["AXIAL"])
    ds.DerivationDescription = f"Low-dose CT denoising by medws model {model_name} {model_version}"[:1024]
    desc = str(getattr(src, "SeriesDescription", "") or "CT")
    ds.SeriesDescription = f"{desc} denoised"[:64]
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    src_sop = str(getattr(src, "SOPInstanceUID", "") or "")
    if src_sop:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = src_sop
        ds.SourceImageSequence = DicomSequence([item])
    elif "SourceImageSequence" in ds:
        del ds.SourceImageSequence
    stored = hu_to_stored(hu, src)
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW" if stored.itemsize > 1 else "OB"
    for kw in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if kw in src:
            setattr(ds, kw, getattr(src, kw))
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    pydicom.dataset.validate_file_meta(ds.file_meta, enforce_standard=True)
    return ds


def denoise_series(datasets: Sequence[Dataset], model: str = DEFAULT_MODEL,
                   denoiser: CtDenoiser | None = None, version: str | None = None) -> list[Dataset]:
    """Denoise a CT series; returns the derived series (one dataset per source slice).

    Raises
    ------
    NotCtSeriesError
        When the datasets are not one single-frame CT series.
    """
    if not datasets:
        raise NotCtSeriesError("no datasets given")
    series_uids = {str(getattr(d, "SeriesInstanceUID", "") or "") for d in datasets}
    if len(series_uids) > 1:
        raise NotCtSeriesError(f"expected one series, got {len(series_uids)}; call once per series")
    den = denoiser or CtDenoiser(model, version)
    ordered = sort_slices(list(datasets))
    study_uid = str(getattr(ordered[0], "StudyInstanceUID", "") or "")
    if not study_uid:
        study_uid = generate_uid()
        logger.warning("source series has no Study Instance UID; the derived series gets a new one")
    series_uid = generate_uid()
    try:
        number = int(getattr(ordered[0], "SeriesNumber", 0) or 0) + 1000
    except (TypeError, ValueError):
        number = 1000
    out = []
    for src in ordered:
        hu = to_hu(src)
        out.append(derived_dataset(src, den.denoise_hu(hu), series_uid, study_uid, den.name, den.version, number))
    logger.info("denoised %d slices with %s %s", len(out), den.name, den.version)
    return out
