"""Coronary calcium task from DICOM: real cardiac anatomy (contrast removed), inserted calcium."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.ct import agatston
from models.ct.cac import CACPipeline, territories
from models.ct.volume import read_nifti
from training.synthesis.ct_calcium import decontrast_blood_pool, insert_calcium
from training.synthesis.ct_dicom import write_series


@pytest.fixture(scope="module")
def cardiac(shared_data_module):
    v = read_nifti(shared_data_module / "ct" / "totalseg" / "cardiac_crop" / "ct_cropped.nii.gz")
    hu, _ = decontrast_blood_pool(v.hu, seed=1)
    return v.with_array(hu)


@pytest.fixture(scope="module")
def shared_data_module():
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "ct" / "totalseg").is_dir():
        pytest.skip("shared CT data missing")
    return SHARED_DATA


@pytest.fixture(scope="module")
def base(cardiac):
    """The pipeline on the de-contrasted real heart without inserted calcium (input and result)."""
    p = CACPipeline()
    x = p.pre_process(cardiac)
    return x, p.post_process(p.predict(x), x)


def _plaque_sites(vol, base, n=3, seed=0):
    """Deterministic plaque centres inside the estimated coronary territory, away from any
    voxel ≥ 100 HU (so inserted plaques do not merge with other structures)."""
    from scipy import ndimage

    x = base[0]
    inner = ndimage.binary_erosion(x.region, iterations=4)
    dense = ndimage.binary_dilation(vol.hu >= 100, iterations=5)
    cand = np.argwhere(inner & ~dense)
    rng = np.random.default_rng(seed)
    picks = []
    for i in rng.permutation(len(cand)):
        c = cand[i]
        if all(np.abs(c - p).max() > 12 for p in picks):
            picks.append(c)
        if len(picks) == n:
            break
    return [tuple(int(v) for v in p) for p in picks]


RADII_HU = [((1, 2, 2), 450.0), ((1, 1, 2), 260.0), ((0, 1, 1), 180.0)]


def test_inserted_calcium_scored_exactly_from_dicom(cardiac, base, tmp_path):
    base_score = base[1]["agatston"]
    sites = _plaque_sites(cardiac, base)
    hu, lab = insert_calcium(cardiac.hu, sites, [r for r, _ in RADII_HU], [h for _, h in RADII_HU])
    # hand computation of the inserted plaques alone (uniform HU per plaque, 1.5 mm voxels)
    expect = 0.0
    for i, (_, peak) in enumerate(RADII_HU, start=1):
        for z in range(lab.shape[0]):
            n = int((lab[z] == i).sum())
            if n:
                expect += n * 1.5 * 1.5 * agatston.density_weight(peak) * 1.5 / 3.0
    assert expect > 0
    vol = cardiac.with_array(hu)
    write_series(vol, tmp_path / "cac", series_description="Calcium score 3.0 gated", seed=3)
    out = subprocess.run([sys.executable, "-m", "medws", "infer", "cac", str(tmp_path / "cac"), "--json"],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    assert set(res) >= {"agatston", "volume_mm3", "mass_mg", "per_artery", "category"}
    assert res["agatston"] - base_score == pytest.approx(expect, rel=1e-4, abs=1e-2)
    assert sum(a["agatston"] for a in res["per_artery"].values()) == pytest.approx(res["agatston"], abs=0.01)


def test_calcium_touching_bone_is_excluded(cardiac, base):
    base = base[1]["agatston"]
    bone = np.argwhere(cardiac.hu > 700)
    z, y, x = bone[len(bone) // 2]
    hu, _ = insert_calcium(cardiac.hu, [(z, y, x + 1)], [(1, 2, 2)], [500.0])
    assert CACPipeline()(cardiac.with_array(hu))["agatston"] == pytest.approx(base)


def test_given_aorta_mask_excludes_aortic_calcium(cardiac, base):
    site = _plaque_sites(cardiac, base, n=1, seed=5)[0]
    hu, lab = insert_calcium(cardiac.hu, [site], [(1, 2, 2)], [450.0])
    v = cardiac.with_array(hu)
    far = np.zeros(hu.shape, bool)
    far[:3, :3, :3] = True
    aorta = np.zeros(hu.shape, bool)
    aorta[lab > 0] = True  # pretend the plaque sits in the aortic wall
    without = CACPipeline()(v, aorta=far)
    with_ao = CACPipeline()(v, aorta=aorta)
    assert without["agatston"] - with_ao["agatston"] >= 4 * int((lab > 0).sum()) * 2.25 * 0.5 - 1e-6


def test_territories_by_side():
    heart = np.zeros((10, 20, 20), bool)
    heart[:, 5:15, 5:15] = True
    t = territories(heart, np.eye(3), (3.0, 1.0, 1.0))
    assert t[0, 6, 6] == 4           # patient right (low x) → RCA
    assert t[0, 6, 13] == 2          # left, anterior, low → LAD
    assert t[0, 13, 13] == 3         # left, posterior → LCX
    assert t[9, 6, 13] == 1          # left anterior, top 20 mm → LM
