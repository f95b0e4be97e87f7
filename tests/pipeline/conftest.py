"""Fixtures of the analysis-pipeline tests: a node root, real radiographs, the CXR models."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import Database

SHARED_CR = "cxr/samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


@pytest.fixture(scope="session")
def cxr_models() -> None:
    """Skips when the chest X-ray models are not in the registry (models/zoo or MEDWS_MODELS_DIR)."""
    from models.errors import ModelError
    from models.registry import Registry

    try:
        reg = Registry()
        reg.get("cxr-lung")
        reg.get("cxr-lesions")
    except ModelError as e:
        pytest.skip(f"chest X-ray models not installed: {e}")


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    root = tmp_path / "root"
    root.mkdir()
    return load_config(root, overrides={"host": "127.0.0.1", "port": 0, "quiet_period_s": 0.3,
                                        "ae_title": "MEDWS"}, env={})


@pytest.fixture
def db(config: NodeConfig) -> Iterator[Database]:
    from dicom_node.analysis import ensure_schema

    database = Database(config.database_url)
    ensure_schema(database)
    yield database
    database.close()


@pytest.fixture
def chest_cr(shared_data: Path) -> Path:
    """A real chest radiograph (CR DICOM) from ../shared/data."""
    path = shared_data / SHARED_CR
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


def copy_as(src: Path, dst: Path, **changes: str) -> Path:
    """``src`` saved to ``dst`` with attributes changed (e.g. a new SOP Instance UID)."""
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        setattr(ds, key, value)
        if key == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = value
    ds.save_as(dst)
    return dst
