"""Fixtures of the similar-case tests: a small archive of real NIH radiographs wrapped as
CR DICOM (labels from ``labels.json``), a generated CT study, findings and reports."""
from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.archive import Archive
from dicom_node.config import NodeConfig, load_config
from dicom_node.db import Database

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def cr_dataset(pixels: np.ndarray, patient_id: str, study_uid: str, study_date: str) -> Dataset:
    """A CR Image Storage data set (PS3.3 A.2) holding 8-bit MONOCHROME2 ``pixels``."""
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, sop
    ds.PatientID, ds.PatientName = patient_id, "MEDWS^SYNTHETIC"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = study_date, "090000", ""
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


@dataclass
class SmallArchive:
    config: NodeConfig
    db: Database
    studies: dict[str, dict] = field(default_factory=dict)  # study uid -> {"labels", "sop", "modality"}

    @property
    def root(self) -> Path:
        return self.config.root


def _store(archive: Archive, ds: Dataset, tmp: Path) -> None:
    path = tmp / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    archive.store_file(path)
    path.unlink()


def add_finding(db: Database, study_uid: str, sop: str, label: str, box: list[float], task: str = "cxr") -> None:
    data = {"findings": [{"label": label, "probability": 0.9, "box": box, "laterality": "right",
                          "tracking_uid": generate_uid(), "image": {"sop_instance_uid": sop}}],
            "model": {"name": "test-findings", "version": "0.0.0"}}
    db.execute("INSERT INTO findings (study_uid, job_id, kind, model_name, model_version, data, created_at) "
               "VALUES (?, NULL, ?, 'test-findings', '0.0.0', ?, ?)", (study_uid, task, json.dumps(data), time.time()))


def sign_report(db: Database, study_uid: str, text: str) -> None:
    now = time.time()
    db.execute("INSERT INTO reports (study_uid, state, body, author, signed_at, created_at, updated_at) "
               "VALUES (?, 'signed', ?, 'dr', ?, ?, ?)", (study_uid, json.dumps({"text": text}), now, now, now))


@pytest.fixture
def nih(shared_data: Path) -> tuple[Path, list[dict]]:
    folder = shared_data / "cxr" / "nih"
    return folder, json.loads((folder / "labels.json").read_text())


def _pick(records: list[dict]) -> list[tuple[dict, str | None]]:
    """Four effusion cases, four normals (fixed, from labels.json order)."""
    eff = [r for r in records if "Effusion" in r["nih_labels"] and any(b["label"] == "Effusion" for b in r["boxes"])]
    normal = [r for r in records if r["nih_labels"] == ["No Finding"]]
    return [(r, "pleural_effusion") for r in eff[:4]] + [(r, None) for r in normal[:4]]


@pytest.fixture
def small_archive(tmp_path: Path, nih) -> Iterator[SmallArchive]:
    from PIL import Image

    from dicom_node.analysis import ensure_schema
    from dicom_node.samples import ct_series

    folder, records = nih
    root = tmp_path / "root"
    root.mkdir()
    config = load_config(root, overrides={"host": "127.0.0.1", "port": 0, "ae_title": "MEDWS"}, env={})
    db = Database(config.database_url)
    ensure_schema(db)
    archive = Archive(config, db)
    sa = SmallArchive(config, db)
    day = _dt.date(2024, 1, 1)
    for n, (rec, label) in enumerate(_pick(records)):
        with Image.open(folder / rec["file"]) as im:
            pixels = np.asarray(im.convert("L"))
        study_uid = generate_uid()
        date = (day + _dt.timedelta(days=30 * n)).strftime("%Y%m%d")
        ds = cr_dataset(pixels, f"P{n}", study_uid, date)
        _store(archive, ds, tmp_path)
        if label:
            box = next(b["box"] for b in rec["boxes"] if b["label"] == "Effusion")
            add_finding(db, study_uid, ds.SOPInstanceUID, label, box)
        sa.studies[study_uid] = {"label": label, "sop": ds.SOPInstanceUID, "modality": "CR", "date": date}
    for seed in (0, 1):
        ct_uid = generate_uid()
        slices = ct_series(n_slices=6, size=128, seed=seed, patient_id=f"PCT{seed}", study_uid=ct_uid)
        for ds in slices:
            _store(archive, ds, tmp_path)
        sa.studies[ct_uid] = {"label": None, "sop": slices[3].SOPInstanceUID, "modality": "CT", "date": "20240115"}
    db.execute("UPDATE studies SET state = 'stable'")
    yield sa
    db.close()


@pytest.fixture(scope="session")
def cxr_embed_model() -> None:
    from models.embedding import CxrEmbedder, EmbeddingError

    try:
        CxrEmbedder()
    except EmbeddingError as e:
        pytest.skip(f"no chest X-ray embedding model installed: {e}")
