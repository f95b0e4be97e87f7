"""Fixed non-subsampled directional filter bank (the network's 15 sub-band input).

A numpy design of a contourlet-like, non-subsampled directional wavelet frame in the
spirit of the seed's input (Kang, Min and Ye, "A deep convolutional neural network
using directional wavelets for low-dose X-ray CT reconstruction", Med Phys 44 (2017)
e360): three band-pass scales split into 8, 4 and 2 directions plus one low-pass,
15 sub-bands in all.  Radial windows are nested Gaussians (``sqrt(L_j^2 - L_{j+1}^2)``)
and angular windows raised cosines whose squares sum to one, so the untruncated bank
is a tight frame (``sum_k |H_k|^2 = 1``).  The kernels are truncated to ``size x size``
and applied as one fixed convolution *inside* the network graph (the ONNX file carries
them); training builds the layer from :func:`directional_filter_bank`.
"""
from __future__ import annotations

import numpy as np

#: Directions per band-pass scale, finest first; plus one low-pass = 15 sub-bands.
DIRECTIONS: tuple[int, ...] = (8, 4, 2)


def _angular_windows(theta: np.ndarray, n: int) -> list[np.ndarray]:
    """Raised-cosine windows over orientation (period pi); squares sum to one."""
    step = np.pi / n
    out = []
    for k in range(n):
        d = np.angle(np.exp(2j * (theta - k * step))) / 2.0  # wrapped to (-pi/2, pi/2]
        w = np.where(np.abs(d) < step, np.cos(0.5 * np.pi * np.abs(d) / step), 0.0)
        out.append(w)
    return out


def directional_filter_bank(size: int = 13, grid: int = 128) -> np.ndarray:
    """Return the real spatial kernels, shape ``(15, size, size)``, float32.

    Parameters
    ----------
    size : odd kernel size after truncation.
    grid : frequency grid used for the design.
    """
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    w = np.fft.fftfreq(grid) * 2 * np.pi
    wy, wx = np.meshgrid(w, w, indexing="ij")
    r = np.hypot(wy, wx)
    theta = np.arctan2(wy, wx)
    cut = [np.pi / 2, np.pi / 4, np.pi / 8]
    low = [np.ones_like(r)] + [np.exp(-0.5 * (r / c) ** 2) for c in cut]
    responses = []
    for j, n in enumerate(DIRECTIONS):
        band = np.sqrt(np.clip(low[j] ** 2 - low[j + 1] ** 2, 0.0, None))
        for a in _angular_windows(theta, n):
            responses.append(band * a)
    responses.append(low[-1])
    kernels = []
    h = size // 2
    for resp in responses:
        k = np.real(np.fft.fftshift(np.fft.ifft2(resp)))
        c = grid // 2
        kernels.append(k[c - h : c + h + 1, c - h : c + h + 1])
    return np.stack(kernels).astype(np.float32)
