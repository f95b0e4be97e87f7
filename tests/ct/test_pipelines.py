"""Nodule and liver tasks end to end (DICOM → ONNX Runtime → JSON) with the shipped models,
on held-out synthetic lesions inserted into the real CT (seeds not used in training)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.ct.errors import CTError, PhaseError
from models.ct.volume import CTVolume
from training.synthesis.ct_dicom import write_series

REQUIRED = {"label", "centre_patient_mm", "centre_voxel_zyx", "long_axis_mm", "short_axis_mm", "volume_mm3",
            "mean_hu", "type", "category", "mask_label"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medws", "infer", *map(str, args)], capture_output=True, text=True)


def test_nodule_cli_and_heldout_nodule_covered(totalseg, tmp_path):
    """A 16 mm solid nodule in the held-out region: the CLI prints well-formed findings, the
    nodule lies inside a reported finding's mask, and that finding is measured as a solid
    nodule of about 16 mm (FROC, Dice and size accuracy over many cases are in the card)."""
    from models.ct.lungs import lung_mask
    from models.ct.nodules import NodulePipeline
    from models.ct.volume import read_nifti
    from training.ct.data import NODULE_SPLIT_Z, LungVolume, sub_volume
    from training.synthesis.ct_nodules import NoduleSpec, insert_nodule, sample_centres

    ao = read_nifti(totalseg / "aortic_crop" / "ct_cropped.nii.gz")
    te = sub_volume(ao, NODULE_SPLIT_Z + 8, ao.shape[0])  # held-out region
    lv = LungVolume(te, lung_mask(te.hu, te.spacing))
    rng = np.random.default_rng(99003)
    c = sample_centres(lv.lungs, te.spacing, 16.0, rng, 1)[0]
    hu, m = insert_nodule(te.hu, te.spacing, NoduleSpec(tuple(c), 16.0, "solid", 30.0, seed=5), rng)
    vol = te.with_array(hu)
    res = NodulePipeline()(vol)
    assert res["_mask"].shape == vol.shape
    hit = np.unique(res["_mask"][m])
    assert (hit > 0).any()
    f = res["findings"][int(hit[hit > 0][0]) - 1]
    assert REQUIRED <= set(f) and f["lobe"] and f["category"].startswith("Lung-RADS")
    assert f["type"] == "solid" and abs(f["mean_diameter_mm"] - 16.0) < 5.0  # ~30 %; card MAE 2.9 mm
    assert f["category"] in ("Lung-RADS 4A", "Lung-RADS 4B") and res["n_candidates"] >= res["n_nodules"]
    write_series(vol, tmp_path / "chest", series_description="Chest")
    out = _cli("ct-nodule", tmp_path / "chest", "--json")
    assert out.returncode == 0, out.stderr
    js = json.loads(out.stdout)
    from models.registry import Registry

    served = Registry().get("ct-nodule-fpr").card.version  # what the registry serves (newest, no pointer)
    assert served == Registry().versions("ct-nodule-fpr")[-1]
    assert js["task"] == "ct-nodule" and js["version"] == served and js["n_nodules"] == len(js["findings"])
    assert all(REQUIRED <= set(g) for g in js["findings"])


def test_nodule_task_rejects_a_scan_without_lungs():
    from models.ct.nodules import NodulePipeline

    v = CTVolume(np.full((20, 64, 64), 40.0, np.float32), (2.0, 1.0, 1.0), np.zeros(3))
    with pytest.raises(CTError, match="no lung"):
        NodulePipeline(model=object()).pre_process(v)


def test_liver_cli_multiphase_study(totalseg, tmp_path):
    from training.ct.liver_data import liver_case, liver_train_volume

    lv = liver_train_volume()
    vols, mp = liver_case(lv, np.random.default_rng(99002), n_lesions=1, diameter_range=(22.0, 24.0))
    for k, v in enumerate(vols):  # one folder, four series, phase named only by the description
        write_series(v, tmp_path / "study" / f"s{k}", series_description=v.meta["series_description"],
                     study_uid="1.2.826.0.1.3680043.8.498.99002", series_number=k + 1, seed=k)
    out = _cli("liver", tmp_path / "study", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert sorted(p["phase"] for p in res["phases"]) == sorted(["non-contrast", "arterial", "portal-venous",
                                                                "delayed"])
    assert set(res["registration"]) == {"non-contrast", "arterial", "delayed"}
    truth = lv.native.voxel_to_patient(np.argwhere(mp.lesion_labels == 1).mean(0))
    dists = [np.linalg.norm(np.asarray(f["centre_patient_mm"]) - truth) for f in res["findings"]]
    assert dists and min(dists) < 6.0
    f = res["findings"][int(np.argmin(dists))]
    assert REQUIRED <= set(f) and set(f["hu_by_phase"]) == set(mp.phases)
    les = mp.lesions[0]
    assert f["arterial_hyperenhancement"] == les.aphe


def test_liver_needs_a_contrast_phase(totalseg):
    from models.ct.liver import LiverPipeline
    from models.ct.volume import read_nifti

    v = read_nifti(totalseg / "example_ct_sm.nii.gz")
    v.meta = {"series_description": "Abdomen native", "contrast_bolus_agent": ""}
    with pytest.raises(PhaseError, match="portal-venous"):
        LiverPipeline(model=object()).pre_process([v])


def test_nodule_pipeline_segments_as_its_card_says(tmp_path, monkeypatch):
    """A card's numbers were measured with its segmentation and duplicate suppression: the
    pipeline takes ``extra.segmentation`` and ``extra.duplicate_suppression`` from the card it
    serves (the blob-radius opening and no touch rule without them)."""
    import shutil

    from models.ct.blobs import INSCRIBED_OPENING
    from models.ct.nodules import NodulePipeline
    from models.registry import Registry

    served = Registry().get("ct-nodule-fpr")
    base = NodulePipeline()
    _ = base.model
    assert base.segmentation == dict(served.card.extra.get("segmentation") or {})
    dst = tmp_path / "ct-nodule-fpr" / "99.0.0"
    dst.mkdir(parents=True)
    shutil.copy(served.onnx_path, dst / "model.onnx")
    card = json.loads((served.onnx_path.parent / "card.json").read_text())
    card["version"] = "99.0.0"
    card["extra"]["segmentation"] = INSCRIBED_OPENING
    card["extra"]["duplicate_suppression"] = {"touch_radius": 1.5}
    (dst / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("MEDWS_MODELS_DIR", str(tmp_path))
    pipe = NodulePipeline()
    _ = pipe.model
    assert pipe.version == "99.0.0" and pipe.segmentation == INSCRIBED_OPENING and pipe.touch_radius == 1.5
    assert base.touch_radius == float((served.card.extra.get("duplicate_suppression") or {}).get("touch_radius", 0))
