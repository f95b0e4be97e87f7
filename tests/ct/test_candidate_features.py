"""Second-stage nodule candidate features (Hessian shape, attachment, lung wall, border)
and the logistic regression that adds their evidence to the FPR network's logit."""
from __future__ import annotations

import numpy as np
import pytest

from models.ct.candidate_features import (FEATURE_NAMES, HESSIAN_SIGMAS_VOX, SecondStage, candidate_features,
                                          fit_logistic, hessian_features)
from models.ct.errors import CTError
from models.ct.nodules import FPR_PATCH, candidate_patches, cut_patches

G = np.arange(FPR_PATCH) - FPR_PATCH // 2
Z, Y, X = np.meshgrid(G, G, G, indexing="ij")


def _feat(f: np.ndarray, name: str) -> np.ndarray:
    return f[:, FEATURE_NAMES.index(name)]


def test_hessian_eigen_ratios_tell_sphere_tube_and_plate():
    sphere = np.where(Z ** 2 + Y ** 2 + X ** 2 <= 9, 0.0, -900.0)
    tube = np.where(Y ** 2 + X ** 2 <= 4, 0.0, -900.0)
    plate = np.where(np.abs(Z) <= 1, 0.0, -900.0)
    f = hessian_features(np.stack([sphere, tube, plate]).astype(np.float32))
    f = f.reshape(3, len(HESSIAN_SIGMAS_VOX), 4)  # mag, l2/|l1|, l3/|l1|, blobness per scale
    assert np.all(f[0, :, 3] > 0.9)  # sphere: three equal negative eigenvalues
    assert np.all(f[1, :, 3] < 0.1) and np.all(f[1, :, 1] < -0.9) and np.all(np.abs(f[1, :, 2]) < 0.1)
    assert np.all(np.abs(f[2, :, 1]) < 0.1) and np.all(f[2, :, 3] < 0.01)  # plate: one large eigenvalue
    assert np.all(f[:, :, 0] < 0)  # bright structures: negative main curvature


def _features(hu: np.ndarray, lungs: np.ndarray, centres: np.ndarray, radius: float = 4.0, juxta=False):
    arr = candidate_patches(hu, centres)
    lp = cut_patches(lungs.astype(np.float32), centres, FPR_PATCH, 0.0)
    n = len(centres)
    return candidate_features(arr, lp, centres, hu.shape, np.full(n, radius), np.full(n, radius / np.sqrt(3)),
                              np.full(n, 20.0), np.full(n, juxta), np.tile([[2.0, 4.0]], (n, 1)))


def test_candidate_features_attachment_lung_wall_and_border():
    shape = (64, 64, 96)
    hu = np.full(shape, -850.0, np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    hu[(zz - 32) ** 2 + (yy - 32) ** 2 + (xx - 24) ** 2 <= 9] = 30.0  # isolated nodule (r 4.5 mm)
    hu[(zz - 32) ** 2 + (yy - 32) ** 2 + (xx - 70) ** 2 <= 9] = 30.0  # nodule on a vessel along z
    hu[((yy - 32) ** 2 + (xx - 70) ** 2 <= 2)] = 30.0
    lungs = np.ones(shape, bool)
    lungs[:, :, 88:] = False  # chest wall on the right
    f = _features(hu, lungs, np.array([[32.0, 32.0, 24.0], [32.0, 32.0, 70.0], [2.0, 32.0, 84.0]]), juxta=True)
    assert f.shape == (3, len(FEATURE_NAMES)) and np.isfinite(f).all()
    att = _feat(f, "attached_frac")
    assert att[0] == 0.0 and att[1] > 0.05  # the vessel crosses the shell around the second one
    assert _feat(f, "hu_mean_3mm")[0] > -100 and _feat(f, "hu_shell_10_16mm")[0] < -800
    assert _feat(f, "lung_frac_6mm")[0] == 1.0 and _feat(f, "lung_frac_20mm")[2] < 0.9
    assert _feat(f, "border_mm")[2] == pytest.approx(3.0) and _feat(f, "border_mm")[0] == pytest.approx(30.0)
    assert np.all(_feat(f, "juxta") == 1) and np.allclose(_feat(f, "cnn_logit"), 3.0)
    assert np.allclose(_feat(f, "cnn_flip_std"), 1.0)


def test_logistic_regression_separates_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2000, 3)).astype(np.float32)
    y = (x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.3, 2000) > 2.0).astype(float)  # ~ 10 % positives
    mean, scale, w, b = fit_logistic(x, y, l2=1.0)
    assert w[0] > 0 and w[1] < 0 and abs(w[2]) < 0.2 * abs(w[1])
    names = ("hu_mean_3mm", "attached_frac", "border_mm")
    st = SecondStage(names, mean, scale, [(w[None], np.array([b], np.float32))])
    feats = np.zeros((len(x), len(FEATURE_NAMES)), np.float32)
    for j, n in enumerate(names):
        feats[:, FEATURE_NAMES.index(n)] = x[:, j]
    feats[:, FEATURE_NAMES.index("cnn_logit")] = 1.5
    p = 1 / (1 + np.exp(-st.logit(feats)))
    assert ((p > 0.5) == (y > 0)).mean() > 0.9
    st2 = SecondStage.from_dict(st.to_dict())
    assert np.allclose(st2.combined_logit(feats), 1.5 + st.logit(feats), atol=1e-5)
    with pytest.raises(CTError):
        SecondStage.from_dict({**st.to_dict(), "features": ["no_such_feature", "border_mm", "juxta"]})
    with pytest.raises(CTError):
        SecondStage.from_dict({**st.to_dict(), "features": ["border_mm", "juxta"]})
    # two layers with a ReLU between them
    mlp = SecondStage(("border_mm",), np.zeros(1, np.float32), np.ones(1, np.float32),
                      [(np.array([[1.0], [-1.0]], np.float32), np.zeros(2, np.float32)),
                       (np.array([[2.0, 3.0]], np.float32), np.array([0.5], np.float32))])
    f = np.zeros((2, len(FEATURE_NAMES)), np.float32)
    f[:, FEATURE_NAMES.index("border_mm")] = [4.0, -2.0]
    assert np.allclose(SecondStage.from_dict(mlp.to_dict()).logit(f), [8.5, 6.5])
    # capped at 0: the second stage can only lower the network's logit
    veto = SecondStage.from_dict({**mlp.to_dict(), "max_logit": 0.0})
    f[:, FEATURE_NAMES.index("cnn_logit")] = 2.0
    assert np.allclose(veto.combined_logit(f), [2.0, 2.0])
    veto.layers[-1] = (veto.layers[-1][0], np.array([-10.0], np.float32))
    assert np.allclose(veto.combined_logit(f), [2.0 + 8.0 - 10.0, 2.0 + 6.0 - 10.0])


def test_pipeline_adds_the_second_stage_logit_to_the_network(tmp_path):
    """The shipped network on a synthetic chest; a second stage that only pushes down
    candidates near the scan's border moves exactly those by its logit."""
    from models.ct.nodules import NodulePipeline
    from models.ct.volume import CTVolume

    rng = np.random.default_rng(1)
    shape = (60, 90, 90)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    hu = np.full(shape, 40.0, np.float32)
    lungs = ((yy - 45) ** 2 / 38 ** 2 + (xx - 45) ** 2 / 38 ** 2) <= 1
    hu[lungs] = -850.0
    hu += rng.normal(0, 15, shape).astype(np.float32)
    hu[(zz - 30) ** 2 + (yy - 40) ** 2 + (xx - 50) ** 2 <= 16] = 20.0
    vol = CTVolume(hu, (1.5, 1.5, 1.5), np.zeros(3), np.eye(3), {})
    pipe = NodulePipeline()
    assert pipe.model is not None  # loads the served card and its second stage, if it has one
    x = pipe.pre_process(vol)
    logits, feats = pipe.predict_parts(x, features=True)
    served = pipe.second_stage
    expected = served.combined_logit(feats) if served is not None else logits.mean(1)
    assert np.allclose(pipe.predict_logit(x), expected, atol=1e-3)
    pipe.second_stage = None
    base = pipe.predict(x)
    assert np.allclose(base, 1 / (1 + np.exp(-logits.mean(1).astype(np.float64))), atol=1e-6)
    st = SecondStage(("border_mm",), np.zeros(1, np.float32), np.ones(1, np.float32),
                     [(np.ones((1, 1), np.float32), np.array([-30.0], np.float32))])
    pipe.second_stage = st
    both = pipe.predict(x)
    border = _feat(feats, "border_mm")
    z_new = np.log(both / (1 - both + 1e-12) + 1e-12)
    assert np.allclose(z_new, logits.mean(1) + border - 30.0, atol=1e-2)
    assert np.all((both <= base + 1e-6)[border < 30.0])
