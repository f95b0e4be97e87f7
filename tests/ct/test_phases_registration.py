"""Phase identification (headers, content) and registration to the portal-venous phase."""
from __future__ import annotations

import numpy as np
import pytest

from models.ct.phases import from_content, from_header, identify
from models.ct.registration import register
from models.ct.volume import load_series, read_nifti
from training.synthesis.ct_liver import PHASES, move, rigid_matrix, simulate


@pytest.mark.parametrize("desc,phase", [("Abdomen ARTERIAL 1.0", "arterial"), ("Late arterial", "arterial"),
                                        ("PV 3mm", "portal-venous"), ("Portal venous", "portal-venous"),
                                        ("Delayed 3 min", "delayed"), ("Equilibrium", "delayed"),
                                        ("Native", "non-contrast"), ("NON-CONTRAST", "non-contrast")])
def test_header_description(desc, phase):
    assert from_header({"series_description": desc}).phase == phase


@pytest.mark.parametrize("dt,phase", [(30, "arterial"), (75, "portal-venous"), (200, "delayed")])
def test_header_timing(dt, phase):
    call = from_header({"series_description": "Body 3.0", "contrast_bolus_agent": "Iohexol",
                        "contrast_bolus_start_time": 36000.0, "acquisition_time": 36000.0 + dt})
    assert call.phase == phase and call.source == "header:timing"


def test_header_without_contrast_agent_is_non_contrast():
    assert from_header({"series_description": "Body", "contrast_bolus_agent": ""}).phase == "non-contrast"
    assert from_header({"series_description": "Body"}) is None


def test_real_dicom_series_is_portal_venous_by_timing(totalseg):
    v = load_series(totalseg / "dicom_series")
    call = identify([v])[0]
    assert call.phase == "portal-venous" and call.evidence["seconds_after_contrast"] == pytest.approx(96, abs=1)


@pytest.fixture(scope="module")
def phases():
    from tests.conftest import SHARED_DATA

    d = SHARED_DATA / "ct" / "totalseg"
    if not d.is_dir():
        pytest.skip("shared CT data missing")
    v = read_nifti(d / "example_ct_sm.nii.gz")
    masks = {k: read_nifti(d / "masks" / f"{k}.nii.gz").hu > 0 for k in ("aorta", "liver", "spleen")}
    mp = simulate(v.hu, v.spacing, masks, np.random.default_rng(7), n_lesions=1)
    return v, masks, mp


def test_content_identifies_every_simulated_phase(phases):
    v, masks, mp = phases
    vols = []
    for ph in PHASES:
        w = v.with_array(mp.aligned[ph])
        w.meta = {"series_description": "Body 3.0"}
        assert from_content(w).phase == ph, (ph, from_content(w).evidence)
        vols.append(w)
    # identify(): no header evidence → content
    assert [c.phase for c in identify(vols)] == list(PHASES)


def test_content_with_liver_mask_uses_portal_vessels(phases):
    v, masks, mp = phases
    call = from_content(v.with_array(mp.aligned["arterial"]), liver=masks["liver"])
    assert call.phase == "arterial" and "portal_vessels_hu" in call.evidence


@pytest.mark.parametrize("ang,shift", [((0.0, 0.0, 0.0), (3.0, 0.0, -4.0)), ((-2.5, 2.0, 3.0), (-3.0, 5.0, -5.0))])
def test_registration_recovers_known_rigid_misalignment(phases, ang, shift):
    v, masks, mp = phases
    fixed = v.with_array(mp.aligned["portal-venous"])
    moving = v.with_array(move(mp.aligned["arterial"], v.spacing, ang, shift))
    r = register(fixed, moving)
    pts = np.argwhere(masks["liver"])[::100].astype(float)
    sp = np.asarray(v.spacing)
    c = (np.asarray(v.shape) - 1) / 2 * sp
    true = v.voxel_to_patient(((pts * sp - c) @ rigid_matrix(ang, sp).T + c + np.asarray(shift)) / sp)
    src = v.voxel_to_patient(pts)
    est = np.array([r.map_point(p) for p in src])
    before = np.linalg.norm(true - src, axis=1).mean()
    after = np.linalg.norm(true - est, axis=1).mean()
    assert before > 4.0
    assert after < 1.0, (before, after)
    # and the resampled arterial phase matches the aligned one inside the liver
    inner = masks["liver"].copy()
    inner[:3] = inner[-3:] = False
    assert np.abs(r.moved.hu - mp.aligned["arterial"])[inner].mean() < 15


def test_content_on_real_scans(totalseg):
    """Real contrast scans: the aortic crop is arterial (its contrast_phase.json says
    arterial_early), the real DICOM series is portal venous (96 s after contrast)."""
    a = read_nifti(totalseg / "aortic_crop" / "ct_cropped.nii.gz")
    assert from_content(a).phase == "arterial"
    v = load_series(totalseg / "dicom_series")
    assert from_content(v).phase == "portal-venous"
