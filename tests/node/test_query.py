"""C-FIND matching on the index."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicom_node import samples
from dicom_node.archive import Archive
from dicom_node.query import QueryError, find, instance_rows
from tests.node.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("backend", BACKENDS)  # SQLite and PostgreSQL index


@pytest.fixture
def filled(config, db, ct_files: list[Path], tmp_path: Path):
    archive = Archive(config, db)
    for f in ct_files[:3]:
        archive.store_file(f)
    archive.store_file(samples.save(samples.dx_chest(256), tmp_path / "dx.dcm"))
    archive.store_file(Path(get_testdata_file("CT_small.dcm")))
    return db


def test_study_level_filters(filled) -> None:
    assert len(find(filled, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""})) == 3
    ct = find(filled, {"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": "CT", "PatientID": "MEDWS*",
                       "NumberOfStudyRelatedInstances": ""})
    assert len(ct) == 1 and ct[0]["NumberOfStudyRelatedInstances"] == 3
    assert len(find(filled, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240101-20240131"})) == 1
    assert len(find(filled, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240201-"})) == 1
    assert len(find(filled, {"QueryRetrieveLevel": "STUDY", "PatientName": "MEDWS^SYNTH?TIC"})) == 2
    assert find(filled, {"QueryRetrieveLevel": "STUDY", "PatientID": "nobody"}) == []


def test_series_and_image_levels(filled) -> None:
    study = find(filled, {"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": "DX"})[0]["StudyInstanceUID"]
    series = find(filled, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "Modality": ""})
    assert [s["Modality"] for s in series] == ["DX"]
    images = find(filled, {"QueryRetrieveLevel": "IMAGE", "Modality": "CT", "InstanceNumber": "",
                           "PatientID": "MEDWS-CT-0001"})
    assert sorted(i["InstanceNumber"] for i in images) == [1, 2, 3]


def test_retrieve_selection_and_errors(filled) -> None:
    study = find(filled, {"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": "CT", "PatientID": "MEDWS*"})[0]
    assert len(instance_rows(filled, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study["StudyInstanceUID"]})) == 3
    with pytest.raises(QueryError):
        find(filled, {"QueryRetrieveLevel": "PATIENT"})
    with pytest.raises(QueryError):
        instance_rows(filled, {"QueryRetrieveLevel": "STUDY"})
