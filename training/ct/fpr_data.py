"""Training samples of the nodule false-positive-reduction classifier (numpy only).

Positives: nodules (4-30 mm, all types) inserted on the fly at random lung positions of the
TRAINING region (slices < ``NODULE_SPLIT_Z`` of the 1.5 mm crop), patch centred near the
nodule (jitter like a blob detector's offset).  Negatives: the candidates
(:func:`models.ct.blobs.lung_candidates`, both passes) of the same region without nodules:
vessels, bifurcations, fissures, walls.  Every source exists five times: as reconstructed,
degraded to 3 mm and to 2 mm isotropic, with 3 mm slices, and with a soft kernel plus noise
(other reconstructions of the training region, each resampled back to 1.5 mm), plus random
blur / flips / axis permutations / contrast / noise per patch.

With ``anatomy_aug`` (1.3.0 onwards) the one training anatomy is varied further: a share of
the patches is cut under a uniformly random 3-D rotation and an isotropic scale
(:func:`rotated_patch`: vessels, fissures and walls at orientations and calibres the
training region does not have), and a share of the negatives are synthetic vessel
junctions drawn into real lung (:func:`draw_vessels`: a curved tube through the candidate
point with a branch or a crossing there: the blob-like vessel structures an earlier diagnosis
took for the highest-scoring false positives; docs/ct.md says why that diagnosis was wrong).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.ct.blobs import lung_candidates
from models.ct.lungs import lung_mask
from models.ct.nodules import FPR_PATCH, candidate_patches, cut_patches, normalise
from models.ct.volume import CTVolume, resample
from training.ct.data import LungVolume
from training.synthesis.ct_nodules import insert_nodule, random_spec


def lowres_copy(vol: CTVolume, spacing_mm: float = 3.0) -> CTVolume:
    """``vol`` resampled to ``spacing_mm`` isotropic and back onto its own grid (linear)."""
    import SimpleITK as sitk

    low = resample(vol, (spacing_mm,) * 3)
    out = sitk.Resample(low.to_sitk(), vol.to_sitk(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return vol.with_array(sitk.GetArrayFromImage(out))


def thick_copy(vol: CTVolume, slice_mm: float = 3.0) -> CTVolume:
    """``vol`` with ``slice_mm`` thick slices (in-plane spacing kept), back on its own grid:
    a thick-slice reconstruction of the same anatomy."""
    import SimpleITK as sitk

    sp = vol.spacing
    low = resample(vol, (slice_mm, sp[1], sp[2]))
    out = sitk.Resample(low.to_sitk(), vol.to_sitk(), sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return vol.with_array(sitk.GetArrayFromImage(out))


def smooth_copy(vol: CTVolume, sigma_mm: float = 1.2, noise_hu: float = 0.0, seed: int = 0) -> CTVolume:
    """``vol`` blurred (a soft reconstruction kernel) with optional added noise."""
    hu = ndimage.gaussian_filter(vol.hu.astype(np.float32), sigma_mm / np.asarray(vol.spacing))
    if noise_hu > 0:
        hu = hu + np.random.default_rng(seed).normal(0, noise_hu, hu.shape).astype(np.float32)
    return vol.with_array(hu)


def candidate_region(lungs: np.ndarray) -> np.ndarray:
    """Where candidates are searched: the lungs dilated by 3 voxels (4.5 mm)."""
    return ndimage.binary_dilation(lungs, iterations=3)


@dataclass
class FprSource:
    lv: LungVolume
    negatives: np.ndarray  # (N, 3) candidate voxel centres
    name: str
    _depth: np.ndarray | None = None

    def nodule_centre(self, diameter_mm: float, rng: np.random.Generator) -> np.ndarray:
        """A random lung voxel deep enough for the nodule (as :func:`sample_centres`, cached)."""
        if self._depth is None:
            pts = self.lv.points
            self._depth = self.lv.dist[tuple(pts.T)]
        ok = np.nonzero(self._depth >= max(1.5, 0.6 * diameter_mm / 2))[0]
        if not len(ok):
            return self.lv.points[rng.integers(len(self.lv.points))].astype(float)
        return self.lv.points[ok[rng.integers(len(ok))]].astype(float)


SOURCE_KINDS = ("sharp", "lowres3mm", "lowres2mm", "thick3mm", "smooth")


def fpr_sources(train_lv: LungVolume, floor: float = 4.0, max_candidates: int = 1500,
                kinds: tuple[str, ...] = SOURCE_KINDS) -> list[FprSource]:
    """The training region as reconstructed and as other reconstructions of it (3 mm and
    2 mm isotropic, 3 mm slices, soft kernel + noise), each with the candidates of
    :func:`models.ct.blobs.lung_candidates` (both passes, as at inference)."""
    make = {"sharp": lambda v: v, "lowres3mm": lowres_copy, "lowres2mm": lambda v: lowres_copy(v, 2.0),
            "thick3mm": thick_copy, "smooth": lambda v: smooth_copy(v, 1.2, 15.0)}
    out = []
    for name in kinds:
        vol = make[name](train_lv.vol)
        lungs = lung_mask(vol.hu, vol.spacing)
        c = lung_candidates(vol.hu, vol.spacing, lungs, floor=floor, max_candidates=max_candidates)
        out.append(FprSource(LungVolume(vol, lungs), np.array([x.zyx for x in c]), name))
    return out


def cut_sources(sources: list[FprSource], cuts: tuple[int, ...] = (33, 66), band: int = 10,
                floor: float = 4.0, max_candidates: int = 1500) -> list[FprSource]:
    """The training sources cut at axial planes ``cuts``, each part as a study that ends
    there: its negatives are the candidates of :func:`models.ct.blobs.lung_candidates` on
    that part within ``band`` voxels of its cut face (what the detector finds at a first or
    last slice, which the whole region shows only at its own two faces)."""
    from training.ct.data import sub_volume

    out = []
    for src in sources:
        n = src.lv.vol.shape[0]
        for z in cuts:
            for lo, hi in ((0, z), (z, n)):
                sub = sub_volume(src.lv.vol, lo, hi)
                lungs = src.lv.lungs[lo:hi]
                face = hi - lo - 1 if lo == 0 else 0
                c = lung_candidates(sub.hu, sub.spacing, lungs, floor=floor, max_candidates=max_candidates)
                neg = np.array([x.zyx for x in c if abs(x.zyx[0] - face) <= band])
                if len(neg):
                    out.append(FprSource(LungVolume(sub, lungs), neg, f"{src.name}_cut{z}_{'lower' if lo == 0 else 'upper'}"))
    return out


def _augment(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, flips, axis permutations (1.5 mm is isotropic), contrast/brightness and noise."""
    if rng.random() < 0.3:
        p = ndimage.gaussian_filter(p, float(rng.uniform(0.3, 1.0)))
    for ax in range(3):
        if rng.random() < 0.5:
            p = np.flip(p, ax)
    if rng.random() < 0.5:
        p = np.swapaxes(p, 1, 2)
    if rng.random() < 0.2:  # z with an in-plane axis
        p = np.swapaxes(p, 0, int(rng.integers(1, 3)))
    if rng.random() < 0.5:  # scanner calibration / kernel: ±5 % contrast, ±20 HU offset
        p = p * float(rng.uniform(0.95, 1.05)) + float(rng.uniform(-20, 20)) / 1400.0
    p = p + rng.normal(0, float(rng.uniform(0.0, 0.03)), p.shape).astype(np.float32)
    return np.ascontiguousarray(p, np.float32)


SCALE_RANGE = (0.85, 1.15)


def rotation_margin(size: int = FPR_PATCH, scale_max: float = SCALE_RANGE[1]) -> int:
    """Side of the cube to cut so that a ``size`` patch under any rotation and a scale up to
    ``scale_max`` stays inside it."""
    return 2 * int(np.ceil(size / 2 * np.sqrt(3) * scale_max)) + 2


def rotated_patch(hu: np.ndarray, centre, rng: np.random.Generator, size: int = FPR_PATCH,
                  scale_range=SCALE_RANGE) -> np.ndarray:
    """Normalised ``[size]^3`` patch of ``hu`` around ``centre`` under a uniformly random
    3-D rotation and an isotropic scale drawn from ``scale_range`` (linear interpolation,
    mirrored at the volume border like :func:`candidate_patches`; isotropic spacing assumed).
    Output voxel ``size // 2`` is the rounded centre, as in :func:`candidate_patches`."""
    from scipy.spatial.transform import Rotation

    big = rotation_margin(size, scale_range[1])
    src = cut_patches(hu, np.asarray(centre, float)[None], big)[0]
    m = Rotation.random(random_state=rng).as_matrix() * float(rng.uniform(*scale_range))
    offset = np.full(3, big // 2, float) - m @ np.full(3, size // 2, float)
    out = ndimage.affine_transform(src, m, offset=offset, output_shape=(size,) * 3, order=1, mode="nearest")
    return normalise(out)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def draw_vessels(hu: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> np.ndarray:
    """``hu`` (a cube, HU) with a synthetic vessel junction at its centre voxel: a gently
    curved tube through the centre (radius 0.75-3 mm, enhanced-vessel HU, partial-volume
    edge) and, at the centre, a branch (a thinner half-tube leaving it) or a crossing tube,
    or neither.  A vessel is drawn as the brighter of itself and the anatomy behind it."""
    c = np.full(3, hu.shape[0] // 2, float)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in hu.shape], indexing="ij"), -1)
    rel = (grid - c.astype(np.float32)) * np.float32(spacing_mm)  # mm from the centre
    out = hu.astype(np.float32).copy()

    def tube(u: np.ndarray, radius: float, level: float, half: bool, bend: float) -> None:
        w = np.cross(u, _unit(rng))
        w /= max(np.linalg.norm(w), 1e-6)
        t = rel @ u.astype(np.float32)
        axis = t[..., None] * u + (bend * t * t)[..., None] * w  # quadratic bend (1/mm)
        d = np.linalg.norm(rel - axis.astype(np.float32), axis=-1)
        cover = np.clip((radius - d) / spacing_mm + 0.5, 0.0, 1.0)  # one-voxel partial-volume edge
        if half:
            cover = cover * np.clip(t / spacing_mm + 0.5, 0.0, 1.0)
        np.maximum(out, out + cover * (level - out), out=out)

    r = float(rng.uniform(0.75, 3.0))
    level = float(rng.uniform(-80.0, 250.0))
    tube(_unit(rng), r, level, False, float(rng.uniform(-0.006, 0.006)))
    kind = rng.random()
    if kind < 0.45:  # branch leaving the junction
        tube(_unit(rng), r * float(rng.uniform(0.5, 0.9)), level + float(rng.uniform(-40, 40)), True,
             float(rng.uniform(-0.006, 0.006)))
    elif kind < 0.75:  # another vessel crossing it
        tube(_unit(rng), float(rng.uniform(0.75, 3.0)), float(rng.uniform(-80.0, 250.0)), False,
             float(rng.uniform(-0.006, 0.006)))
    return out


def face_mirror(patch: np.ndarray, rng: np.random.Generator, anchor: int | None = None,
                max_offset: int = 10) -> np.ndarray:
    """``patch`` as if the scan ended at an axial plane ``0..max_offset`` voxels beyond
    ``anchor`` (default: the centre voxel; for a nodule patch, its centre) on a random side:
    beyond the plane the patch is the mirror image of what lies before it, as
    :func:`models.ct.nodules.cut_patches` fills it at a real first or last slice.  Training
    otherwise sees only the two faces of the training region; every study has two."""
    n = patch.shape[0]
    a = n // 2 if anchor is None else int(anchor)
    flip = rng.random() < 0.5
    p = patch[::-1] if flip else patch
    if flip:
        a = n - 1 - a
    e = min(a + int(rng.integers(0, max_offset + 1)), n - 1)  # last slice inside the "scan"
    out = p.copy()
    for i in range(e + 1, n):
        out[i] = p[max(2 * e + 1 - i, 0)]  # numpy "symmetric" padding: the edge slice repeats
    return np.ascontiguousarray(out[::-1] if flip else out)


DIAMETER_RANGE = (4.0, 30.0)
SMALL_RANGE = (4.0, 8.0)


def positive_diameter(rng: np.random.Generator, p_small: float = 0.0) -> float:
    """A training nodule's diameter (mm), log-uniform over 4-30 mm; with ``p_small`` > 0 that
    share is drawn from 4-8 mm instead (the sizes that score lowest on the validation cases).
    With ``p_small`` = 0 the random stream is the one of earlier versions."""
    lo, hi = SMALL_RANGE if p_small > 0 and rng.random() < p_small else DIAMETER_RANGE
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def fpr_sample(sources: list[FprSource], rng: np.random.Generator, p_pos: float = 0.4,
               size: int = FPR_PATCH, anatomy_aug: bool = False, p_rotate: float = 0.5,
               p_vessel: float = 0.2, p_face: float = 0.0, p_small: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(patch [size]^3 normalised, label [1]) from a random source.  ``anatomy_aug``: with
    probability ``p_rotate`` the patch is cut under a random rotation and scale
    (:func:`rotated_patch`); a share ``p_vessel`` of the negatives is a synthetic vessel
    junction in real lung (:func:`draw_vessels`).  ``p_face``: the share of patches cut as
    if the scan ended near the candidate (:func:`face_mirror`; for a nodule, beyond its
    centre, so it stays in the scan).  ``p_small``: the share of nodules drawn from 4-8 mm
    (:func:`positive_diameter`)."""
    face = rng.random() < p_face
    src = sources[rng.integers(len(sources))]
    hu = src.lv.vol.hu
    sp = src.lv.vol.spacing
    rotate = anatomy_aug and rng.random() < p_rotate
    if rng.random() < p_pos:
        d = positive_diameter(rng, p_small)
        c = src.nodule_centre(d, rng)
        spec = random_spec(rng, c, (d, d))
        half = (rotation_margin(size) if rotate else size) // 2 + 4
        lo = np.maximum(np.round(c).astype(int) - half, 0)
        hi = np.minimum(np.round(c).astype(int) + half, hu.shape)
        crop = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        local = type(spec)(**{**spec.__dict__, "centre_zyx": tuple(np.asarray(c) - lo)})
        crop, _ = insert_nodule(crop, sp, local, rng)
        j = int(np.clip(round(0.3 * d / 2 / sp[0]), 1, 3))
        centre = np.asarray(c) - lo + rng.integers(-j, j + 1, 3)
        patch = rotated_patch(crop, centre, rng, size) if rotate else candidate_patches(crop, centre[None], size)[0]
        if face and not rotate:
            patch = face_mirror(patch, rng, anchor=size // 2 + int(round(c[0] - lo[0] - centre[0])))
        label = 1.0
    else:
        if anatomy_aug and rng.random() < p_vessel:
            deep = src.nodule_centre(8.0, rng)  # lung at least ~2.4 mm from the wall
            big = rotation_margin(size)
            cube = draw_vessels(cut_patches(hu, deep[None], big)[0], float(sp[0]), rng)
            patch = rotated_patch(cube, np.full(3, big // 2, float), rng, size) if rotate else \
                candidate_patches(cube, np.full((1, 3), big // 2, float), size)[0]
            return _augment(patch, rng), np.array([0.0], np.float32)
        if rng.random() < 0.9 and len(src.negatives):
            centre = src.negatives[rng.integers(len(src.negatives))] + rng.integers(-1, 2, 3)
        else:
            centre = src.lv.points[rng.integers(len(src.lv.points))]
        centre = np.asarray(centre, float)
        patch = rotated_patch(hu, centre, rng, size) if rotate else candidate_patches(hu, centre[None], size)[0]
        if face and not rotate:
            patch = face_mirror(patch, rng)
        label = 0.0
    return _augment(patch, rng), np.array([label], np.float32)
