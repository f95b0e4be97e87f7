"""``medws label --root``: images read from the medws archive through dicom_node's index."""
from __future__ import annotations

import pytest

from labeling_tool.core.sources import ArchiveSource
from labeling_tool.core.store import LabelStore

from .conftest import write_deidentified_folder


def test_archive_source_lists_indexed_instances(tmp_path):
    archive_mod = pytest.importorskip("dicom_node.archive")
    from dicom_node.config import load_config
    from dicom_node.db import Database

    root = tmp_path / "archive"
    root.mkdir()
    config = load_config(root, env={})
    db = Database(config.database_url)
    db.init_schema()
    archive = archive_mod.Archive(config, db)
    files = write_deidentified_folder(tmp_path / "incoming", patients=("A", "A", "B"))
    for f in files:
        archive.store_file(f)
    db.close()
    source = ArchiveSource(root)
    assert source._indexed() is not None  # read through the index, not a directory scan
    refs = source.images()
    assert len(refs) == 3 and all(r.kind == "dicom" and r.path.is_file() for r in refs)
    assert all(str(r.path).startswith(str(root / "dicom")) for r in refs)
    store = LabelStore.open_for(source)
    assert store.path == root / "labels.sqlite" and len(store.images()) == 3
    assert len({r.patient_key for r in refs}) == 2
