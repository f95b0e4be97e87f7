"""Tiled inference with overlap and no seams.

The image is reflect-padded by ``margin``; each tile is the ``tile`` x ``tile`` core
plus ``margin`` context on every side, and only the core of each prediction is kept.
When ``margin`` covers the network's receptive-field radius, every output pixel sees
exactly the context it would see in whole-image inference of the padded image, so the
tiled result equals the whole-image result (no seams, no blending needed).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of core tiles covering ``[0, length)``; the last tile is shifted inwards."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile, tile))
    starts.append(length - tile)
    return starts


def predict_tiled(
    image: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    tile: int = 512,
    margin: int = 32,
    multiple: int = 2,
) -> np.ndarray:
    """Apply ``fn`` (``(N,1,h,w) -> (N,1,h,w)``) to a 2-D image tile by tile.

    Parameters
    ----------
    image : (H, W) float32 array.
    fn : the network (e.g. an ONNX Runtime call).
    tile : core tile size; a tile larger than the image processes it whole.
    margin : context on each side (>= the receptive-field radius for exact results).
    multiple : tile offsets and sizes are kept multiples of this (space-to-depth nets).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    h, w = image.shape
    margin = int(np.ceil(margin / multiple) * multiple)
    # pad so that H and W are multiples of ``multiple`` too
    eh, ew = (-h) % multiple, (-w) % multiple
    padded = np.pad(image, ((margin, margin + eh), (margin, margin + ew)), mode="reflect")
    H, W = h + eh, w + ew
    th = min(int(np.ceil(tile / multiple) * multiple), H)
    tw = min(int(np.ceil(tile / multiple) * multiple), W)
    out = np.empty((H, W), dtype=np.float32)
    for y in tile_starts(H, th):
        for x in tile_starts(W, tw):
            patch = padded[y : y + th + 2 * margin, x : x + tw + 2 * margin]
            pred = fn(np.ascontiguousarray(patch[None, None], dtype=np.float32))[0, 0]
            out[y : y + th, x : x + tw] = pred[margin : margin + th, margin : margin + tw]
    return out[:h, :w]
