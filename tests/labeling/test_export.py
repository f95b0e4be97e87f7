"""Dataset export: refuses identified data, patient-level splits, manifest, loader."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from labeling_tool.core.errors import ExportError, NotDeidentifiedError
from labeling_tool.core.export import export_dataset, split_for_patient
from labeling_tool.core.preannotate import (
    accept,
    edit,
    findings_to_proposals,
    import_reader_decisions,
    proposal_stats,
    propose,
    reject,
)
from labeling_tool.core.sources import FolderSource
from labeling_tool.core.store import LabelStore
from training.datasets.medws_export import DatasetFormatError, load_medws_export, verify_export

from .conftest import make_identified_dataset


def _label_all(store):
    for i, row in enumerate(store.images()):
        iid = row["image_id"]
        if i % 2 == 0:
            store.add(iid, "alice", "box", "nodule_mass", {"x1": 3, "y1": 4, "x2": 20, "y2": 30})
            store.paint(iid, "alice", "consolidation", (64, 48), [(10, 40), (30, 40)], 4)
            store.add(iid, "alice", "polygon", "pleural_effusion", {"points": [[2, 50], [40, 50], [40, 60], [2, 60]]})
        else:
            store.set_image_label(iid, "alice", "normal")
        store.mark_labelled(iid, "alice")
        store.review(iid, "rev", "approve")


@pytest.mark.parametrize("mask_format", ["nifti", "seg"])
def test_export_and_load(deid_folder, tmp_path, mask_format):
    store = LabelStore.open_for(FolderSource(deid_folder))
    _label_all(store)
    out = tmp_path / "ds"
    manifest = export_dataset(store, out, mask_format=mask_format, fractions=(0.5, 0.25, 0.25), seed=3,
                              version="v1")
    assert manifest["dataset_version"] == "v1" and len(manifest["images"]) == 8
    assert verify_export(out)["content_sha256"] == manifest["content_sha256"]
    # patient-level split integrity: no patient in two splits
    splits = {}
    for e in manifest["images"]:
        assert splits.setdefault(e["patient_id"], e["split"]) == e["split"]
    sets = [set(manifest["patients"][s]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(splits) == 7  # P1 has two images
    records = load_medws_export(out)
    assert len(records) == 8
    with_findings = [r for r in records if r.labels]
    assert len(with_findings) == 4
    r = with_findings[0]
    assert r.labels == {"nodule_mass", "consolidation", "pleural_effusion"}
    assert r.boxes == [("nodule_mass", 3.0, 4.0, 20.0, 30.0)]
    assert r.masks["consolidation"].shape == (64, 48) and r.masks["consolidation"][40, 20]
    assert r.masks["pleural_effusion"][55, 20] and not r.masks["pleural_effusion"][10, 20]
    assert all(rec.is_normal for rec in records if not rec.labels)
    ds = pydicom.dcmread(r.image_path)
    assert ds.PatientIdentityRemoved == "YES"
    if mask_format == "seg":  # a valid SEG that references its source image
        label_doc = json.loads((out / [e for e in manifest["images"] if e["image_id"] == r.image_id][0]["labels"])
                               .read_text())
        seg = pydicom.dcmread(out / label_doc["masks"]["consolidation"])
        assert seg.Modality == "SEG"
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == r.image_id
    # tampering is detected
    first = out / manifest["images"][0]["labels"]
    first.write_text(first.read_text() + " ")
    with pytest.raises(DatasetFormatError):
        verify_export(out)


def test_split_stable_and_roughly_proportional():
    splits = [split_for_patient(f"p{i}", (0.7, 0.15, 0.15)) for i in range(2000)]
    assert 0.65 < splits.count("train") / 2000 < 0.75
    assert split_for_patient("p1", (0.7, 0.15, 0.15)) == splits[1]


def test_export_refuses_identified_data(deid_folder, tmp_path):
    make_identified_dataset("SECRET-X").save_as(deid_folder / "identified.dcm", enforce_file_format=True)
    store = LabelStore.open_for(FolderSource(deid_folder))
    _label_all(store)
    out = tmp_path / "ds"
    with pytest.raises(NotDeidentifiedError):
        export_dataset(store, out)
    assert not out.exists() and not (tmp_path / "ds.partial").exists()


def test_export_needs_reviewed_images(deid_folder, tmp_path):
    store = LabelStore.open_for(FolderSource(deid_folder))
    with pytest.raises(ExportError):
        export_dataset(store, tmp_path / "ds")


def test_png_with_burned_text_refused(shared_data, tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    (folder / "00000150_002.png").write_bytes((shared_data / "cxr/nih/images/00000150_002.png").read_bytes())
    store = LabelStore.open_for(FolderSource(folder))
    iid = store.images()[0]["image_id"]
    store.set_image_label(iid, "a", "normal")
    store.mark_labelled(iid, "a")
    store.review(iid, "r", "approve")
    with pytest.raises(NotDeidentifiedError):
        export_dataset(store, tmp_path / "ds")
    m = export_dataset(store, tmp_path / "ds2", allow_burned_text=True)
    assert m["images"][0]["patient_id"].startswith("pt-")


def test_preannotation_states_and_reader_import(deid_folder, tmp_path):
    store = LabelStore.open_for(FolderSource(deid_folder))
    ids = [r["image_id"] for r in store.images()]
    findings = [{"label": "consolidation", "probability": 0.9, "box": [1, 2, 10, 20],
                 "contour": [[1, 2], [10, 2], [10, 20]]},
                {"label": "pneumothorax", "probability": 0.2, "box": [1, 1, 5, 5]}]
    props = propose(store, ids[0], findings_to_proposals(findings, 0.5), "cxr@1.0")
    assert len(props) == 2 and store.status(ids[0]) == "unlabelled"
    accept(store, props[0].id, "alice")
    edit(store, props[1].id, "alice", data={"points": [[1, 2], [12, 2], [12, 22]]})
    props2 = propose(store, ids[1], findings_to_proposals(findings), "cxr@1.0")
    reject(store, props2[0].id, "alice")
    assert proposal_stats(store) == {"proposed": 2, "accepted": 1, "edited": 1, "rejected": 1}
    assert store.status(ids[0]) == "in_progress"
    path = tmp_path / "decisions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"sop_instance_uid": ids[2], "label": "nodule_mass", "decision": "accepted", "reader": "dr_a",
         "box": [5, 5, 15, 15]},
        {"sop_instance_uid": ids[3], "label": "pneumothorax", "decision": "rejected", "reader": "dr_a"},
        {"sop_instance_uid": "not-here", "label": "pneumothorax", "decision": "accepted"},
    ]))
    assert import_reader_decisions(store, path) == 2
    assert store.annotations(ids[2])[0].annotator == "reader:dr_a"
    assert store.image_labels(ids[3]) == set()  # rejected decisions are not labels


def test_export_dataset_cli(deid_folder, tmp_path):
    import subprocess
    import sys

    store = LabelStore.open_for(FolderSource(deid_folder))
    _label_all(store)
    store.close()
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "medws", "export-dataset", "--folder", str(deid_folder), "--out", str(out),
                        "--version", "v7"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert verify_export(out)["dataset_version"] == "v7"
    r = subprocess.run([sys.executable, "-m", "medws", "label", "--folder", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
