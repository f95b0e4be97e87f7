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


def test_workstation_decisions_flow_back(tmp_path):
    """Decisions saved by the workstation's ReadingStore become reader labels."""
    ws = pytest.importorskip("workstation.core.store")
    review = pytest.importorskip("workstation.core.review")
    import subprocess
    import sys

    import pydicom

    from dicom_node.archive import Archive
    from dicom_node.config import load_config
    from dicom_node.db import Database

    root = tmp_path / "archive"
    root.mkdir()
    config = load_config(root, env={})
    db = Database(config.database_url)
    db.init_schema()
    files = write_deidentified_folder(tmp_path / "incoming", patients=("A", "B"))
    for f in files:
        Archive(config, db).store_file(f)
    db.close()
    sops = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    study = [str(pydicom.dcmread(f).StudyInstanceUID) for f in files]
    store = ws.ReadingStore.open(root)
    a = review.ReviewItem(id="t1", label="consolidation", box=[1, 2, 20, 30], sop_uid=sops[0], status="accepted")
    b = review.ReviewItem(id="t2", label="pneumothorax", box=[3, 3, 9, 9], sop_uid=sops[1], status="rejected")
    for st, item, action in ((study[0], a, "accept"), (study[1], b, "reject")):
        store.save_decision(st, review.Decision(item.id, action, "dr_x", "now", {}, {}, {}), item)
    r = subprocess.run([sys.executable, "-m", "medws", "import-decisions", "--root", str(root)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    labels = LabelStore(root / "labels.sqlite")
    got = {x.image_id: x for x in labels.annotations()}
    assert got[sops[0]].annotator == "reader:dr_x" and got[sops[0]].ai_state == "accepted"
    assert got[sops[0]].box() == (1, 2, 20, 30)
    assert got[sops[1]].ai_state == "rejected" and labels.image_labels(sops[1]) == set()
