"""Image geometry: aspect-preserving resize with symmetric padding ("letterbox") and the
exact mapping between model pixels and source pixels.

Coordinates are *continuous pixel coordinates*: ``(x, y)`` with ``(0, 0)`` the top-left
corner of the top-left pixel, so the centre of pixel ``[row i, column j]`` is
``(j + 0.5, i + 0.5)`` and an image of width ``W`` spans ``[0, W]``.  In that convention
the mapping is a pure scale-and-shift::

    x_model = x_source * scale + pad_x        y_model = y_source * scale + pad_y

and the resampling below uses exactly the same transform (one scale for both axes), so
boxes and contours computed on the model grid map back exactly with
:meth:`Letterbox.to_source`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Letterbox:
    """The transform between a source image and its ``size x size`` letterboxed version.

    Attributes
    ----------
    scale : float
        Model pixels per source pixel (same on both axes).
    pad_x, pad_y : int
        Zero columns on the left / rows on the top of the model image.
    src_h, src_w : int
        Source image shape.
    size : int
        Model image side.
    """

    scale: float
    pad_x: int
    pad_y: int
    src_h: int
    src_w: int
    size: int

    @classmethod
    def for_shape(cls, src_h: int, src_w: int, size: int) -> Letterbox:
        """The letterbox of a ``src_h x src_w`` image into ``size x size``."""
        if src_h <= 0 or src_w <= 0 or size <= 0:
            raise ValueError(f"letterbox needs positive shapes, got {src_h}x{src_w} -> {size}")
        scale = size / max(src_h, src_w)
        new_w, new_h = _floor_px(src_w * scale, size), _floor_px(src_h * scale, size)
        return cls(scale=scale, pad_x=(size - new_w) // 2, pad_y=(size - new_h) // 2,
                   src_h=int(src_h), src_w=int(src_w), size=int(size))

    @property
    def content_box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` of the source image inside the model image (model px)."""
        return (self.pad_x, self.pad_y, self.pad_x + self.src_w * self.scale, self.pad_y + self.src_h * self.scale)

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` model-pixel ``(x, y)`` points to source pixels."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return (xy - np.array([self.pad_x, self.pad_y])) / self.scale

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` source-pixel ``(x, y)`` points to model pixels."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return xy * self.scale + np.array([self.pad_x, self.pad_y])

    def box_to_source(self, box: tuple[float, float, float, float] | np.ndarray,
                      clip: bool = True) -> list[float]:
        """Map a model-pixel box ``[x1, y1, x2, y2]`` to source pixels (clipped to the image).

        Four numbers: Python float arithmetic (the same IEEE double operations as
        :meth:`to_source`, without building arrays).
        """
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1))
        xs = [(x - self.pad_x) / self.scale for x in (x1, x2)]
        ys = [(y - self.pad_y) / self.scale for y in (y1, y2)]
        if clip:
            xs = [min(max(x, 0.0), float(self.src_w)) for x in xs]
            ys = [min(max(y, 0.0), float(self.src_h)) for y in ys]
        return [xs[0], ys[0], xs[1], ys[1]]

    def box_to_model(self, box: tuple[float, float, float, float] | np.ndarray) -> list[float]:
        """Map a source-pixel box ``[x1, y1, x2, y2]`` to model pixels."""
        return [float(v) for v in self.to_model(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(-1)]

    def unletterbox(self, model_map: np.ndarray) -> np.ndarray:
        """Resample a ``(size, size)`` map back onto the source grid (see :func:`unletterbox`)."""
        return unletterbox(model_map, self)

    def to_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale, "pad_x": self.pad_x, "pad_y": self.pad_y,
                "src_h": self.src_h, "src_w": self.src_w, "size": self.size}


def _resample(arr: np.ndarray, out_w: int, out_h: int, box: tuple[float, float, float, float],
              nearest: bool) -> np.ndarray:
    """PIL resampling of region ``box`` (continuous source coords) onto an ``out_h x out_w`` grid.

    Bilinear uses PIL's area-aware (antialiased) filter when shrinking.
    """
    if nearest:
        if arr.dtype == np.bool_:
            img, back = Image.fromarray(arr.astype(np.uint8), mode="L"), np.bool_
        elif arr.dtype == np.uint8:
            img, back = Image.fromarray(arr, mode="L"), np.uint8
        else:
            if arr.min(initial=0) < np.iinfo(np.int32).min or arr.max(initial=0) > np.iinfo(np.int32).max:
                raise ValueError("label maps must fit in int32")
            img, back = Image.fromarray(arr.astype(np.int32), mode="I"), arr.dtype
        out = np.asarray(img.resize((out_w, out_h), Image.Resampling.NEAREST, box=box))
        return out.astype(back)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return np.asarray(float_image(arr).resize((out_w, out_h), Image.Resampling.BILINEAR, box=box), dtype=np.float32)


def float_image(arr: np.ndarray) -> Image.Image:
    """A read-only PIL mode "F" image over a C-contiguous float32 (H, W) array, without a copy.

    ``Image.fromarray`` copies mode "F" data (only some modes are mapped); this maps the
    array's buffer the way ``Image.frombuffer`` maps those modes (``core.map_buffer``, raw
    "F" rows of 4 bytes per pixel), which saves copying a 4 MB grid per resize.  Falls
    back to ``fromarray`` where that interface is missing.  The image keeps the buffer alive.
    """
    if arr.dtype != np.float32 or arr.ndim != 2 or not arr.flags.c_contiguous:
        return Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    try:
        im = Image.new("F", (0, 0))
        im = im._new(Image.core.map_buffer(arr, (arr.shape[1], arr.shape[0]), "raw", 0, ("F", 0, 1)))
        im.readonly = 1
        return im
    except (AttributeError, TypeError, ValueError):
        return Image.fromarray(arr, mode="F")


def reduction_factors(shape: tuple[int, int], size: int, reducing_gap: float) -> tuple[int, int]:
    """The integer box-reduction factors (ky, kx) :func:`letterbox` uses for ``shape`` -> ``size``."""
    lb = Letterbox.for_shape(shape[0], shape[1], size)
    new_w, new_h = _content_wh(lb)
    return _factors(_source_box(lb, new_w, new_h), new_w, new_h, reducing_gap)


def _factors(box: tuple[float, float, float, float], new_w: int, new_h: int, gap: float) -> tuple[int, int]:
    return int((box[3] - box[1]) / new_h / gap) or 1, int((box[2] - box[0]) / new_w / gap) or 1


def letterbox(image: np.ndarray, size: int, reducing_gap: float | None = None,
              reduced: tuple[np.ndarray, int, int] | None = None) -> tuple[np.ndarray, Letterbox]:
    """Aspect-preserving resize of a 2-D image into ``size x size`` with symmetric zero padding.

    Parameters
    ----------
    image : (H, W) array
        Grey-level image (converted to float32).
    size : int
        Side of the square output.
    reducing_gap : float, optional
        Two-step shrink as ``PIL.Image.resize(reducing_gap=...)``: box reduction by the
        integer factor that leaves a shrink >= ``reducing_gap`` (:func:`box_reduce`), then the
        antialiased bilinear filter; None is the exact one-step filter.
    reduced : (array, ry, rx), optional
        ``box_reduce(image, ry, rx)`` already computed (e.g. for a second, finer grid of the
        same image).  Used when (ry, rx) are this grid's factors, or when the image shape is
        a multiple of this grid's factors and those are multiples of (ry, rx): block means
        of block means are then the block means.

    ``image`` may also be an :class:`models.imaging.AffineGrey` (stored values and their
    affine presentation map): it is box-reduced without the full-size float image.

    Returns
    -------
    (size, size) float32 array, Letterbox
    """
    if image.ndim != 2:
        raise ValueError(f"letterbox expects a 2-D (H, W) image, got shape {image.shape}")
    lb = Letterbox.for_shape(image.shape[0], image.shape[1], size)
    new_w, new_h = _content_wh(lb)
    # the source region seen by the new_w x new_h content grid under the exact transform
    box = _source_box(lb, new_w, new_h)
    if reducing_gap:
        # PIL's two-step shrink (Image.resize(reducing_gap=...)): the integer box reduction
        # is done here in numpy, straight from the caller's array (PIL would first copy the
        # full-size image into its own buffer), then PIL filters the small image
        ky, kx = _factors(box, new_w, new_h, reducing_gap)
        if kx > 1 or ky > 1:
            h, w = image.shape
            if reduced is not None and (ky, kx) == (reduced[1], reduced[2]):
                image = reduced[0]
            elif (reduced is not None and ky % reduced[1] == 0 and kx % reduced[2] == 0
                    and h % ky == 0 and w % kx == 0):
                ry, rx = ky // reduced[1], kx // reduced[2]
                image = box_reduce(reduced[0], ry, rx) if ry > 1 or rx > 1 else reduced[0]
            elif hasattr(image, "box_reduce"):
                image = image.box_reduce(ky, kx)
            else:
                image = box_reduce(np.asarray(image, dtype=np.float32), ky, kx)
            box = (box[0] / kx, box[1] / ky, box[2] / kx, box[3] / ky)
    content = _resample(np.asarray(image, dtype=np.float32), new_w, new_h, box, nearest=False)
    out = np.zeros((size, size), dtype=np.float32)
    out[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w] = content
    return out, lb


def box_reduce_halves(reduce_rows: Any, h: int, w: int, ky: int, kx: int, pool: Any = None) -> np.ndarray:
    """The ``(ceil(h/ky), ceil(w/kx))`` box reduction, its top and bottom halves at the same time.

    ``reduce_rows(r0, r1, out)`` writes the block rows of source rows [r0, r1) into ``out``.
    The halves meet on a multiple of ``ky`` rows, so every block lies in one of them and the
    result is that of one call; with ``pool`` (an executor) its thread does the top half.
    """
    out = np.empty((-(-h // ky), -(-w // kx)), np.float32)
    cut = (h // ky) // 2 * ky
    if pool is None or cut == 0:
        reduce_rows(0, h, out)
        return out
    top = pool.submit(reduce_rows, 0, cut, out)
    reduce_rows(cut, h, out)
    top.result()
    return out


def box_reduce(image: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Mean over ``ky x kx`` blocks anchored at (0, 0), as ``PIL.Image.reduce``.

    The last row/column of blocks averages the pixels it has when the shape is not a
    multiple of the factor.  Rows are summed with whole-row adds and columns with
    strided adds, in order (``((a0 + a1) + a2) + ...``, what ``numpy.sum`` does over a
    non-contiguous axis, and faster): one pass over the full-size image.
    """
    h, w = image.shape
    nh, nw = -(-h // ky), -(-w // kx)
    hf, wf = h // ky * ky, w // kx * kx
    rows = np.empty((nh, w), np.float32)
    if ky > 1:
        blocks = image[:hf].reshape(h // ky, ky, w)
        np.add(blocks[:, 0], blocks[:, 1], out=rows[:h // ky])
        for i in range(2, ky):
            rows[:h // ky] += blocks[:, i]
        if hf < h:
            np.sum(image[hf:], axis=0, out=rows[-1])
    else:
        rows[:] = image
    out = np.empty((nh, nw), np.float32)
    full = out[:, :w // kx]
    if kx > 1:
        np.add(rows[:, 0:wf:kx], rows[:, 1:wf:kx], out=full)
    else:
        np.copyto(full, rows[:, 0:wf:kx])
    for j in range(2, kx):
        full += rows[:, j:wf:kx]
    if wf < w:
        np.sum(rows[:, wf:], axis=1, out=out[:, -1])
    # full blocks: one scalar multiply; a partial last row/column of blocks: its own counts
    out[:h // ky, :w // kx] *= np.float32(1.0 / (ky * kx))
    if hf < h:
        out[-1, :w // kx] *= np.float32(1.0 / ((h - hf) * kx))
    if wf < w:
        out[:h // ky, -1] *= np.float32(1.0 / (ky * (w - wf)))
    if hf < h and wf < w:
        out[-1, -1] *= np.float32(1.0 / ((h - hf) * (w - wf)))
    return out


def _floor_px(extent: float, size: int) -> int:
    # whole model pixels fully covered by the source (floor, so the resampling box never
    # leaves the source image; at most a sliver < 1 model pixel of the source is dropped)
    return min(size, max(1, int(np.floor(extent + 1e-6))))


def _content_wh(lb: Letterbox) -> tuple[int, int]:
    return _floor_px(lb.src_w * lb.scale, lb.size), _floor_px(lb.src_h * lb.scale, lb.size)


def _source_box(lb: Letterbox, new_w: int, new_h: int) -> tuple[float, float, float, float]:
    return (0.0, 0.0, min(float(lb.src_w), new_w / lb.scale), min(float(lb.src_h), new_h / lb.scale))


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Letterbox a label mask (bool or integer) with nearest-neighbour sampling.

    Same geometry as :func:`letterbox` on an image of the same shape.
    """
    if mask.ndim != 2:
        raise ValueError(f"letterbox_mask expects a 2-D mask, got shape {mask.shape}")
    lb = Letterbox.for_shape(mask.shape[0], mask.shape[1], size)
    new_w, new_h = _content_wh(lb)
    content = _resample(mask, new_w, new_h, _source_box(lb, new_w, new_h), nearest=True)
    out = np.zeros((size, size), dtype=content.dtype)
    out[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w] = content
    return out


def unletterbox(model_map: np.ndarray, lb: Letterbox, nearest: bool | None = None) -> np.ndarray:
    """Resample a ``(size, size)`` model-grid map onto the ``(src_h, src_w)`` source grid.

    Float maps (probabilities) are interpolated bilinearly, bool/integer maps with nearest
    neighbour (override with ``nearest``).  For large sources prefer mapping contours or
    boxes with :meth:`Letterbox.to_source`, which costs nothing.
    """
    if model_map.shape != (lb.size, lb.size):
        raise ValueError(f"expected a ({lb.size}, {lb.size}) map, got {model_map.shape}")
    if nearest is None:
        nearest = not np.issubdtype(model_map.dtype, np.floating)
    # one edge-replicated row/column so the source's last sliver (< 1 model px, see
    # letterbox) stays inside the resampling box
    padded = np.pad(model_map, ((0, 1), (0, 1)), mode="edge")
    box = (float(lb.pad_x), float(lb.pad_y), lb.pad_x + lb.src_w * lb.scale, lb.pad_y + lb.src_h * lb.scale)
    return _resample(padded, lb.src_w, lb.src_h, box, nearest=nearest)
