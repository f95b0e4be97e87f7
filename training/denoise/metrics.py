"""Image-quality metrics for denoising (numpy/scikit-image only).

All comparisons are against the real full-dose slice, in a fixed HU window
(default soft tissue W400/L40, i.e. [-160, 240] HU), as in the low-dose CT
literature (e.g. the AAPM Low Dose CT Grand Challenge evaluation).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import structural_similarity

WINDOW = (-160.0, 240.0)


def _win(a: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return np.clip(np.asarray(a, np.float64), *window)


def psnr(img: np.ndarray, ref: np.ndarray, window: tuple[float, float] = WINDOW, mask: np.ndarray | None = None) -> float:
    """PSNR [dB] of ``img`` vs ``ref`` after clipping both to ``window``."""
    d = _win(img, window) - _win(ref, window)
    if mask is not None:
        d = d[mask]
    mse = float(np.mean(d**2))
    return float(10 * np.log10((window[1] - window[0]) ** 2 / max(mse, 1e-12)))


def ssim(img: np.ndarray, ref: np.ndarray, window: tuple[float, float] = WINDOW) -> float:
    """SSIM (Wang et al. 2004, Gaussian weights) in ``window``."""
    return float(structural_similarity(_win(img, window), _win(ref, window), data_range=window[1] - window[0],
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def uniform_rois(ref: np.ndarray, size: int = 15, count: int = 4, hu_range: tuple[float, float] = (0.0, 120.0)) -> list[tuple[slice, slice]]:
    """The ``count`` flattest non-overlapping ``size`` x ``size`` soft-tissue regions of ``ref``."""
    ref = np.asarray(ref, np.float64)
    m = ndi.uniform_filter(ref, size)
    v = ndi.uniform_filter(ref**2, size) - m**2
    ok = (m > hu_range[0]) & (m < hu_range[1])
    ok &= ndi.minimum_filter(ref > -200, size * 2) > 0
    score = np.where(ok, v, np.inf)
    rois = []
    h = size // 2
    for _ in range(count):
        k = int(np.argmin(score))
        if not np.isfinite(score.flat[k]):
            break
        y, x = np.unravel_index(k, ref.shape)
        rois.append((slice(y - h, y + h + 1), slice(x - h, x + h + 1)))
        score[max(0, y - 2 * size): y + 2 * size, max(0, x - 2 * size): x + 2 * size] = np.inf
    return rois


def noise_sd(img: np.ndarray, rois: list[tuple[slice, slice]]) -> float:
    """Mean over ROIs of the standard deviation of ``img`` inside each ROI [HU]."""
    return float(np.mean([np.std(np.asarray(img, np.float64)[r]) for r in rois])) if rois else float("nan")


def edge_correlation(img: np.ndarray, ref: np.ndarray, window: tuple[float, float] = WINDOW, quantile: float = 0.9) -> float:
    """Edge preservation: Pearson correlation of Sobel gradient magnitudes of ``img``
    and ``ref`` (both windowed, lightly smoothed) on the strongest 10% of ``ref`` edges."""
    def grad(a):
        a = ndi.gaussian_filter(_win(a, window), 1.0)
        return np.hypot(ndi.sobel(a, 0), ndi.sobel(a, 1))

    gi, gr = grad(img), grad(ref)
    sel = gr >= np.quantile(gr, quantile)
    return float(np.corrcoef(gi[sel], gr[sel])[0, 1])


def all_metrics(img: np.ndarray, ref: np.ndarray, rois: list[tuple[slice, slice]]) -> dict[str, float]:
    return {"psnr_db": psnr(img, ref), "ssim": ssim(img, ref), "noise_sd_hu": noise_sd(img, rois),
            "edge_corr": edge_correlation(img, ref)}
