"""Hand-made shape and context features of nodule candidates, and the second-stage model
that adds their evidence to the FPR network's score (numpy only).

Classical CAD evidence (Li, Sone & Doi, Med. Phys. 30 (2003) 2040; Frangi et al., MICCAI
1998): at each candidate centre the Hessian of the Gaussian-smoothed image at four scales
(1.5-5.4 mm), as its eigenvalues sorted by magnitude |l1| >= |l2| >= |l3|: a sphere has
three similar negative eigenvalues, a tube (vessel cross-section) a small l3, a plate
(fissure, wall) small l2 and l3.  Per scale: sign(l1)·log(1 + σ²|l1|), l2/|l1|, l3/|l1|
and the Frangi-style blobness |l3|/|l1|·[all negative].  Local intensity: mean HU in
spheres of 3, 6 and 10 mm, in a 10-16 mm shell, HU spread and solid fraction (> -300 HU)
within 6 mm; attachment: the bright fraction of a shell just outside the candidate's
radius (a vessel or bifurcation crosses it, an isolated nodule does not); lung fraction in
spheres of 6, 12 and 20 mm (distance to the lung wall); distance to the nearest face of the
scan (structures cut by the scan range); candidate pass (free-standing / wall-flattened),
scale and dot response; the network's mean logit and its spread over the test-time flips.

The second stage (:class:`SecondStage`) is a small ReLU network (or a logistic regression)
on the standardised features except the network's; its logit is ADDED to the network's mean logit (the two
classifiers' evidence multiplied, as independent likelihood ratios), capped at
``max_logit`` (1.2.0: 0, so the features can only LOWER a candidate's score: they veto
vessel cross-sections, bifurcations and wall structures the network is sure of, but never
promote a candidate the network rejects — unbounded, the small network extrapolated to
+17 on structures unlike its training candidates, e.g. a padded field-of-view edge).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HESSIAN_SIGMAS_VOX = (1.0, 1.6, 2.4, 3.6)  # 1.5, 2.4, 3.6, 5.4 mm on the 1.5 mm work grid
SHAPE_CLIP = (-1000.0, -400.0)  # as the candidate filter (ground glass comparable to solid)
BORDER_CAP_MM = 30.0
HU_LO, HU_HI = -1000.0, 400.0  # the network patches' normalisation (models.ct.nodules.normalise)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"h{s}_{k}" for s in HESSIAN_SIGMAS_VOX for k in ("mag", "r2", "r3", "blob")),
    "hu_mean_3mm", "hu_mean_6mm", "hu_mean_10mm", "hu_shell_10_16mm", "hu_std_6mm", "solid_frac_6mm",
    "attached_frac", "lung_frac_6mm", "lung_frac_12mm", "lung_frac_20mm", "border_mm",
    "juxta", "log_response", "sigma_mm",
    "cnn_logit", "cnn_flip_std",
)
CNN_FEATURES = ("cnn_logit", "cnn_flip_std")


def _grid(size: int) -> np.ndarray:
    g = np.arange(size, dtype=np.float64) - size // 2  # candidate_patches puts the centre at size // 2
    return g


_KERNELS: dict[int, np.ndarray] = {}


def hessian_kernels(size: int) -> np.ndarray:
    """``[S * 6, size**3]`` Gaussian second-derivative kernels (zz, yy, xx, zy, zx, yx per
    scale, scale-normalised by σ²) evaluated at the patch centre: the dot product with a
    patch is σ²·H of the smoothed patch there."""
    if size not in _KERNELS:
        g = _grid(size)
        z, y, x = np.meshgrid(g, g, g, indexing="ij")
        ks = []
        for s in HESSIAN_SIGMAS_VOX:
            gauss = np.exp(-(z * z + y * y + x * x) / (2 * s * s))
            gauss /= gauss.sum()
            for a, b in ((z, z), (y, y), (x, x), (z, y), (z, x), (y, x)):
                k = gauss * (a * b / s ** 4 - (1.0 / s ** 2 if a is b else 0.0))
                ks.append(k * s * s)
        _KERNELS[size] = np.stack(ks).reshape(len(ks), -1).astype(np.float32)
    return _KERNELS[size]


def hessian_features(hu_patches: np.ndarray) -> np.ndarray:
    """``[N, 4 * len(HESSIAN_SIGMAS_VOX)]`` eigenvalue features at the patch centres."""
    n, size = hu_patches.shape[0], hu_patches.shape[-1]
    img = np.clip(hu_patches.reshape(n, -1), *SHAPE_CLIP).astype(np.float32)
    img = img - SHAPE_CLIP[0]
    h = img @ hessian_kernels(size).T  # [N, S*6]
    out = []
    for si in range(len(HESSIAN_SIGMAS_VOX)):
        zz, yy, xx, zy, zx, yx = (h[:, si * 6 + j] for j in range(6))
        m = np.empty((n, 3, 3), np.float64)
        m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = zz, yy, xx
        m[:, 0, 1] = m[:, 1, 0] = zy
        m[:, 0, 2] = m[:, 2, 0] = zx
        m[:, 1, 2] = m[:, 2, 1] = yx
        ev = np.linalg.eigvalsh(m)
        order = np.argsort(-np.abs(ev), axis=1)
        ev = np.take_along_axis(ev, order, axis=1)
        l1, l2, l3 = ev[:, 0], ev[:, 1], ev[:, 2]
        a1 = np.maximum(np.abs(l1), 1e-3)
        blob = np.where((l1 < 0) & (l2 < 0) & (l3 < 0), np.abs(l3) / a1, 0.0)
        out += [np.sign(l1) * np.log1p(np.abs(l1)), l2 / a1, l3 / a1, blob]
    return np.stack(out, 1)


_DIST: dict[tuple[int, float], np.ndarray] = {}


def _dist_mm(size: int, spacing_mm: float) -> np.ndarray:
    key = (size, spacing_mm)
    if key not in _DIST:
        g = _grid(size) * spacing_mm
        z, y, x = np.meshgrid(g, g, g, indexing="ij")
        _DIST[key] = np.sqrt(z * z + y * y + x * x).reshape(-1)
    return _DIST[key]


def _masked_mean(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Row means of ``v`` over the boolean mask ``m`` (one mask for all rows, or per row)."""
    if m.ndim == 1:
        return v[:, m].mean(1)
    return (v * m).sum(1) / np.maximum(m.sum(1), 1)


def candidate_features(norm_patches: np.ndarray, lung_patches: np.ndarray, centres_zyx: np.ndarray,
                       shape: tuple[int, int, int], radius_mm: np.ndarray, sigma_mm: np.ndarray,
                       response: np.ndarray, juxta: np.ndarray, cnn_logits: np.ndarray,
                       spacing_mm: float = 1.5) -> np.ndarray:
    """``[N, len(FEATURE_NAMES)]`` features (order of :data:`FEATURE_NAMES`).

    ``norm_patches``: the network's patches ``[N, s, s, s]`` (HU normalised to [0, 1] over
    [-1000, 400]); ``lung_patches``: the lung mask cut the same way (0/1); ``centres_zyx``:
    candidate voxels on the work grid of ``shape`` (isotropic ``spacing_mm``);
    ``cnn_logits``: ``[N, F]`` the network's logit for each test-time flip."""
    n = len(norm_patches)
    size = norm_patches.shape[-1]
    hu = norm_patches.reshape(n, -1).astype(np.float32) * (HU_HI - HU_LO) + HU_LO
    lung = lung_patches.reshape(n, -1).astype(np.float32)
    d = _dist_mm(size, spacing_mm)
    s6 = d <= 6.0
    feats = [hessian_features(hu.reshape(norm_patches.shape))]
    cols = [_masked_mean(hu, d <= 3.0), _masked_mean(hu, s6), _masked_mean(hu, d <= 10.0),
            _masked_mean(hu, (d > 10.0) & (d <= 16.0)), hu[:, s6].std(1), (hu[:, s6] > -300.0).mean(1)]
    r = np.asarray(radius_mm, np.float32)[:, None]
    core = d[None] <= np.maximum(0.6 * r, 1.6)
    level = _masked_mean(hu, core)
    t = 0.5 * (level + (-850.0))
    shell = (d[None] >= 1.2 * r + 1.5) & (d[None] <= 1.2 * r + 4.5)
    cols.append(_masked_mean((hu > t[:, None]).astype(np.float32), shell))
    cols += [_masked_mean(lung, d <= 6.0), _masked_mean(lung, d <= 12.0), _masked_mean(lung, d <= 20.0)]
    c = np.asarray(centres_zyx, float).reshape(-1, 3)
    far = np.minimum(c, np.asarray(shape, float) - 1 - c).min(1) * spacing_mm
    cols.append(np.minimum(np.maximum(far, 0.0), BORDER_CAP_MM))
    cols += [np.asarray(juxta, np.float32), np.log1p(np.maximum(np.asarray(response, float), 0.0)),
             np.asarray(sigma_mm, float)]
    lg = np.asarray(cnn_logits, np.float32).reshape(n, -1)
    cols += [lg.mean(1), lg.std(1)]
    feats.append(np.stack(cols, 1))
    return np.concatenate(feats, 1).astype(np.float32)


@dataclass
class SecondStage:
    """A small network (or, with one layer, a logistic regression) on standardised
    features; ``combined_logit`` adds its logit to the network's mean logit.  Stored in
    the FPR model card (``extra.second_stage``): feature names, standardisation and the
    layers (weight ``[out, in]``, bias ``[out]``; ReLU between layers)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    max_logit: float | None = None  # cap on the added logit (0: the features can only lower a score)

    def logit(self, feats: np.ndarray) -> np.ndarray:
        idx = [FEATURE_NAMES.index(f) for f in self.features]
        h = (feats[:, idx] - self.mean) / self.scale
        for k, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if k < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def combined_logit(self, feats: np.ndarray) -> np.ndarray:
        s = self.logit(feats)
        if self.max_logit is not None:
            s = np.minimum(s, self.max_logit)
        return feats[:, FEATURE_NAMES.index("cnn_logit")] + s

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": [float(v) for v in self.mean],
                "scale": [float(v) for v in self.scale],
                "layers": [{"weight": np.round(w.astype(float), 6).tolist(), "bias": np.round(b.astype(float), 6).tolist()}
                           for w, b in self.layers],
                "max_logit": self.max_logit,
                "score": "sigmoid(network mean logit + min(this model's logit, max_logit)); ReLU between layers"}

    @classmethod
    def from_dict(cls, d: dict) -> SecondStage:
        from models.ct.errors import CTError

        unknown = [f for f in d["features"] if f not in FEATURE_NAMES]
        if unknown:
            raise CTError(f"second stage uses unknown candidate features {unknown}")
        layers = [(np.asarray(ly["weight"], np.float32), np.asarray(ly["bias"], np.float32)) for ly in d["layers"]]
        n_in = len(d["features"])
        for w, b in layers:
            if w.ndim != 2 or w.shape[1] != n_in or b.shape != (w.shape[0],):
                raise CTError("second stage layer shapes do not chain")
            n_in = w.shape[0]
        if n_in != 1:
            raise CTError("second stage must end in one logit")
        cap = d.get("max_logit")
        return cls(tuple(d["features"]), np.asarray(d["mean"], np.float32), np.asarray(d["scale"], np.float32), layers,
                   None if cap is None else float(cap))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50,
                 balanced: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method on standardised ``x``.

    Returns (mean, scale, weights, bias).  ``balanced``: positives and negatives weigh the
    same in total (the candidates are ~1 % nodules)."""
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    z = (x - mean) / scale
    n, f = z.shape
    a = np.hstack([z, np.ones((n, 1))]).astype(np.float64)
    y = y.astype(np.float64)
    sw = np.ones(n)
    if balanced and 0 < y.sum() < n:
        sw = np.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = np.zeros(f + 1)
    reg = np.full(f + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
        g = a.T @ (sw * (p - y)) + reg * w
        hm = (a * (sw * p * (1 - p))[:, None]).T @ a + np.diag(reg + 1e-9)
        step = np.linalg.solve(hm, g)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return mean.astype(np.float32), scale.astype(np.float32), w[:-1].astype(np.float32), float(w[-1])
