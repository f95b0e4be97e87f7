"""Image embeddings for similar-case retrieval (numpy + ONNX Runtime).

Chest radiographs
    The first model found in the registry among :data:`CXR_MODELS` whose ONNX graph has
    an ``embedding`` output: the lesion network's pooled encoder features
    (``cxr-lesions``) when it is installed, otherwise the dedicated retrieval network
    ``cxr-embed`` (trained in ``training/embedding`` with a supervised contrastive loss
    so that radiographs sharing a finding class lie close).  Input: the same
    letterboxed, percentile-normalised grid as the findings pipeline
    (:func:`models.cxr.preprocess.prepare`).  A region (a drawn box or a finding's box)
    is cropped with a margin and embedded the same way.

CT (per series and per lesion crop)
    :class:`CtDescriptor` -- a documented hand-crafted descriptor, not a network:
    histograms of HU (64 bins, -1000..1000 HU), of gradient magnitude (16 bins) and of
    local standard deviation (texture, 16 bins) over the voxels denser than air
    (> -950 HU), each normalised to sum 1, square-rooted (Hellinger) and the whole
    vector L2-normalised (96 dims).  Cosine similarity is then the Bhattacharyya
    coefficient of the concatenated histograms: series with the same tissue mix and
    texture (e.g. lung window chest vs contrast abdomen) lie close.

Every vector is float32 and L2-normalised, so inner product = cosine similarity.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import ModelError

logger = logging.getLogger(__name__)

#: Registry models with an ``embedding`` output, in order of preference.
CXR_MODELS: tuple[str, ...] = ("cxr-lesions", "cxr-embed")
EMBEDDING_OUTPUT = "embedding"
CT_DESCRIPTOR = ("ct-hist-texture", "1.0.0")
#: Fraction of the box size added on each side of a region before embedding it.
REGION_MARGIN = 0.25
MIN_REGION_PX = 24


class EmbeddingError(ModelError):
    """No embedding model is available, or an input cannot be embedded."""


def l2_normalise(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """``v / ||v||`` along ``axis`` (zero vectors stay zero), float32."""
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class EmbeddingModel:
    """Name, version and dimension of the model that produced a vector."""

    name: str
    version: str
    dim: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "dim": self.dim}


def crop_box(shape: tuple[int, ...], box: tuple[float, float, float, float],
             margin: float = REGION_MARGIN, min_px: int = MIN_REGION_PX) -> tuple[int, int, int, int]:
    """Integer crop ``(x0, y0, x1, y1)`` (exclusive) around ``box`` in an image of ``shape``
    (H, W): ``margin`` of the box size on each side, at least ``min_px`` wide, clipped."""
    h, w = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = (float(b) for b in box)
    if not (x2 > x1 and y2 > y1):
        raise EmbeddingError(f"region box {box} must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    bw = max((x2 - x1) * (1 + 2 * margin), min_px)
    bh = max((y2 - y1) * (1 + 2 * margin), min_px)
    x0, x3 = int(np.floor(max(0, cx - bw / 2))), int(np.ceil(min(w, cx + bw / 2)))
    y0, y3 = int(np.floor(max(0, cy - bh / 2))), int(np.ceil(min(h, cy + bh / 2)))
    if x3 - x0 < 2 or y3 - y0 < 2:
        raise EmbeddingError(f"region box {box} lies outside the {w}x{h} image")
    return x0, y0, x3, y3


class CxrEmbedder:
    """Chest radiograph -> L2-normalised embedding (``pre_process -> predict``).

    Parameters
    ----------
    registry : models.registry.Registry, optional
    threads : int, optional
        ONNX Runtime intra-op threads.
    names : sequence of str
        Registry models to try, in order (default :data:`CXR_MODELS`).

    Raises
    ------
    EmbeddingError
        When none of ``names`` is installed with an ``embedding`` output.
    """

    def __init__(self, registry: Any = None, threads: int | None = None,
                 names: tuple[str, ...] = CXR_MODELS) -> None:
        from models.registry import Registry

        reg = registry or Registry()
        tried = []
        for name in names:
            try:
                entry = reg.get(name)
                session = reg.session(name, entry.card.version, threads=threads)
            except ModelError as e:
                tried.append(f"{name}: {e}")
                continue
            if EMBEDDING_OUTPUT not in session.output_names:
                tried.append(f"{name}: no '{EMBEDDING_OUTPUT}' output")
                continue
            self.entry, self.session = entry, session
            self.size = int(entry.card.input.get("size", 256))
            out = [o for o in session._session.get_outputs() if o.name == EMBEDDING_OUTPUT][0]
            dim = out.shape[-1] if isinstance(out.shape[-1], int) else None
            if dim is None:
                dim = int(self._run(np.zeros((1, 1, self.size, self.size), np.float32)).shape[-1])
            self.model = EmbeddingModel(entry.card.name, entry.card.version, int(dim))
            logger.info("cxr embedding: %s %s (%d dims)", self.model.name, self.model.version, self.model.dim)
            return
        raise EmbeddingError("no chest X-ray embedding model installed (" + "; ".join(tried) + ")")

    def pre_process(self, pixels: np.ndarray) -> np.ndarray:
        """Letterbox + normalise exactly as the findings pipeline (model input (1,1,S,S))."""
        from models.cxr.preprocess import prepare

        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 2 or min(pixels.shape) < 2:
            raise EmbeddingError(f"expected a 2-D radiograph, got shape {pixels.shape}")
        return prepare(pixels, self.size).tensor.astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if set(self.session.input_names) != {"image"}:
            raise EmbeddingError(f"{self.model.name}: expected one input 'image', has {self.session.input_names}")
        return self.session.run({"image": x})[EMBEDDING_OUTPUT]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run ONNX Runtime; returns (D,) L2-normalised."""
        return l2_normalise(self._run(x)[0])

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Embedding of a whole radiograph (presentation values, higher = brighter)."""
        return self.predict(self.pre_process(pixels))

    def embed_region(self, pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """Embedding of the region ``box`` = (x1, y1, x2, y2) in source pixels (with a margin)."""
        x0, y0, x1, y1 = crop_box(np.shape(pixels), box)
        return self.embed(np.asarray(pixels)[y0:y1, x0:x1])


class CtDescriptor:
    """CT volume or crop -> 96-dim L2-normalised histogram/texture descriptor (see module doc)."""

    HU_RANGE = (-1000.0, 1000.0)
    HU_BINS = 64
    GRAD_RANGE = (0.0, 400.0)
    STD_RANGE = (0.0, 200.0)
    TEX_BINS = 16
    AIR_HU = -950.0

    model = EmbeddingModel(CT_DESCRIPTOR[0], CT_DESCRIPTOR[1], HU_BINS + 2 * TEX_BINS)

    @staticmethod
    def _downsample(hu: np.ndarray, max_px: int) -> np.ndarray:
        step = max(1, int(np.ceil(max(hu.shape[1:]) / max_px)))
        return hu[:, ::step, ::step]

    def embed(self, hu: np.ndarray, max_px: int = 192) -> np.ndarray:
        """Descriptor of a volume (z, y, x) in HU (a 2-D slice is accepted as one plane)."""
        from scipy import ndimage as ndi

        hu = np.asarray(hu, dtype=np.float32)
        if hu.ndim == 2:
            hu = hu[None]
        if hu.ndim != 3 or hu.size == 0:
            raise EmbeddingError(f"expected a CT volume (z, y, x), got shape {hu.shape}")
        hu = self._downsample(hu, max_px)
        body = hu > self.AIR_HU
        if body.sum() < 16:
            raise EmbeddingError("the CT region holds (almost) nothing denser than air")
        # in-plane gradient magnitude and 3x3 local standard deviation (per slice)
        gy = ndi.sobel(hu, axis=1) / 8.0
        gx = ndi.sobel(hu, axis=2) / 8.0
        grad = np.hypot(gx, gy)
        m = ndi.uniform_filter(hu, size=(1, 3, 3))
        m2 = ndi.uniform_filter(hu * hu, size=(1, 3, 3))
        std = np.sqrt(np.maximum(m2 - m * m, 0.0))
        parts = [np.histogram(np.clip(hu[body], *self.HU_RANGE), self.HU_BINS, self.HU_RANGE)[0],
                 np.histogram(np.clip(grad[body], *self.GRAD_RANGE), self.TEX_BINS, self.GRAD_RANGE)[0],
                 np.histogram(np.clip(std[body], *self.STD_RANGE), self.TEX_BINS, self.STD_RANGE)[0]]
        vec = np.concatenate([np.sqrt(p / max(p.sum(), 1)) for p in parts]).astype(np.float32)
        return l2_normalise(vec)

    def embed_crop(self, hu: np.ndarray, box: tuple[float, float, float, float],
                   z_range: tuple[int, int] | None = None) -> np.ndarray:
        """Descriptor of a lesion crop: in-plane ``box`` (x1, y1, x2, y2) with a margin, on
        slices ``z_range`` (inclusive-exclusive; default all)."""
        hu = np.asarray(hu, dtype=np.float32)
        if hu.ndim == 2:
            hu = hu[None]
        x0, y0, x1, y1 = crop_box(hu.shape[1:], box)
        z0, z1 = z_range if z_range is not None else (0, hu.shape[0])
        z0, z1 = max(0, int(z0)), min(hu.shape[0], int(z1))
        if z1 <= z0:
            raise EmbeddingError(f"slice range {z_range} is outside the {hu.shape[0]}-slice volume")
        return self.embed(hu[z0:z1, y0:y1, x0:x1], max_px=64)
