"""Fixtures of the analysis-pipeline tests: a node root, real radiographs, the CXR models."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import Database
# index backends: fixtures ``backend`` (default sqlite), ``postgres_server``, ``db_url``
from tests.support.postgres import BACKENDS, backend, db_url, postgres_server  # noqa: F401

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
def config(tmp_path: Path, db_url: str) -> NodeConfig:
    root = tmp_path / "root"
    root.mkdir()
    return load_config(root, overrides={"host": "127.0.0.1", "port": 0, "quiet_period_s": 0.3,
                                        "ae_title": "MEDWS", "db_url": db_url or None}, env={})


@pytest.fixture
def db(config: NodeConfig) -> Iterator[Database]:
    from dicom_node.analysis import ensure_schema

    database = Database(config.database_url, root=config.root)
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


def sensitive_models(folder: Path, threshold: float = 0.05) -> Path:
    """A registry folder holding the installed chest X-ray models unchanged (same ONNX
    weights, sha256 verified) under an operating point low enough that every class
    fires, as version ``99.0.0`` so it is chosen: the end-to-end tests need findings
    (for SEG and GSPS) whatever the shipped model's operating point says about the
    test image.  Point ``MEDWS_MODELS_DIR`` at the returned folder."""
    import json
    import shutil

    from models.registry import Registry

    reg = Registry()
    for name in ("cxr-lung", "cxr-lesions") + (("cxr-nodule",) if reg.versions("cxr-nodule") else ()):
        entry = reg.get(name)
        dst = folder / name / "99.0.0"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(entry.onnx_path, dst / entry.onnx_path.name)
        card = json.loads(entry.card_path.read_text())
        card["version"] = "99.0.0"
        if name in ("cxr-lesions", "cxr-nodule"):
            card["thresholds"] = {k: threshold for k in card["thresholds"]}
            card.setdefault("extra", {})["seg_threshold"] = threshold
        (dst / entry.card_path.name).write_text(json.dumps(card, indent=2))
    return folder
