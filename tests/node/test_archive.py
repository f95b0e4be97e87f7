"""The archive: stored as received, indexed, duplicates, bad input, crash repair."""
from __future__ import annotations

import dataclasses
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.archive import Archive, StoreOutcome
from dicom_node.audit import Audit
from dicom_node.errors import (
    DuplicateRejectedError,
    InvalidDatasetError,
    OutOfResourcesError,
    SOPClassMismatchError,
    TooLargeError,
)
from tests.node.conftest import BACKENDS


def _split(path: Path) -> tuple[bytes, pydicom.dataset.FileMetaDataset]:
    meta = pydicom.filereader.read_file_meta_info(path)
    raw = Path(path).read_bytes()
    return raw[132 + 12 + int(meta.FileMetaInformationGroupLength):], meta


def _store(archive: Archive, path: Path, **kw):
    data, meta = _split(path)
    kw.setdefault("sop_class_uid", meta.MediaStorageSOPClassUID)
    kw.setdefault("sop_instance_uid", meta.MediaStorageSOPInstanceUID)
    return archive.store(data, transfer_syntax=meta.TransferSyntaxUID, source_ae="TESTSCU", **kw)


@pytest.fixture
def archive(config, db) -> Archive:
    return Archive(config, db)


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_writes_bytes_as_received_and_indexes(archive: Archive, ct_files: list[Path]) -> None:
    result = _store(archive, ct_files[0])
    assert result.outcome is StoreOutcome.STORED
    ds = pydicom.dcmread(ct_files[0])
    assert result.path == archive.root / "dicom" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert _split(result.path)[0] == _split(ct_files[0])[0]  # data set bytes unchanged
    assert pydicom.dcmread(result.path).pixel_array.shape == (512, 512)
    row = archive.db.query("SELECT * FROM instances")[0]
    assert (row["sop_class_uid"], row["rows_"], row["instance_number"]) == (ds.SOPClassUID, 512, 1)
    study = archive.db.query("SELECT * FROM studies")[0]
    assert (study["modalities"], study["num_instances"], study["state"]) == ("CT", 1, "receiving")
    series = archive.db.query("SELECT * FROM series")[0]
    assert (series["modality"], series["body_part"], series["slice_thickness"]) == ("CT", "CHEST", 2.5)
    assert archive.db.query("SELECT patient_name FROM patients")[0][0] == "MEDWS^SYNTHETIC"
    assert not list(archive.root.rglob("*.tmp"))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                  "emri_small_RLE.dcm", "image_dfl.dcm", "MR_small_implicit.dcm",
                                  "MR_small_bigendian.dcm", "JPEG-lossy.dcm", "JPEG-LL.dcm"])
def test_every_common_transfer_syntax_is_stored_unchanged(archive: Archive, name: str) -> None:
    path = Path(get_testdata_file(name))
    result = _store(archive, path)
    assert _split(result.path)[0] == _split(path)[0]
    assert archive.db.query("SELECT transfer_syntax_uid FROM instances")[0][0] == _split(path)[1].TransferSyntaxUID


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_duplicate_is_success_without_second_copy(archive: Archive, ct_files: list[Path]) -> None:
    first = _store(archive, ct_files[0])
    mtime = first.path.stat().st_mtime_ns
    again = _store(archive, ct_files[0])
    assert again.outcome is StoreOutcome.DUPLICATE
    assert first.path.stat().st_mtime_ns == mtime
    assert archive.counts()["instances"] == 1
    assert archive.db.query("SELECT num_instances FROM studies")[0][0] == 1


def _modified(path: Path, tmp_path: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "changed"
    out = tmp_path / "changed.dcm"
    ds.save_as(out)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_different_duplicate_keeps_newest_and_audits(archive: Archive, ct_files: list[Path], tmp_path: Path) -> None:
    _store(archive, ct_files[0])
    changed = _modified(ct_files[0], tmp_path)
    result = _store(archive, changed)
    assert result.outcome is StoreOutcome.REPLACED
    assert pydicom.dcmread(result.path).SeriesDescription == "changed"
    assert archive.counts()["instances"] == 1
    assert archive.db.query("SELECT num_instances FROM studies")[0][0] == 1
    assert [e["event"] for e in Audit(archive.db).events("instance.replaced")] == ["instance.replaced"]


def test_duplicate_policies_keep_first_and_reject(archive: Archive, ct_files: list[Path], tmp_path: Path) -> None:
    _store(archive, ct_files[0])
    changed = _modified(ct_files[0], tmp_path)
    keep_first = Archive(archive.config.replace(duplicate_policy="keep_first"), archive.db)
    assert _store(keep_first, changed).outcome is StoreOutcome.IGNORED
    assert pydicom.dcmread(archive.study_paths(pydicom.dcmread(changed).StudyInstanceUID)[0]).SeriesDescription != "changed"
    reject = Archive(archive.config.replace(duplicate_policy="reject"), archive.db)
    with pytest.raises(DuplicateRejectedError) as e:
        _store(reject, changed)
    assert e.value.status == 0x0111


def _assert_nothing_stored(archive: Archive) -> None:
    assert archive.counts()["instances"] == 0
    files = [p for p in (archive.root / "dicom").rglob("*") if p.is_file()] if (archive.root / "dicom").exists() else []
    assert files == []


@pytest.mark.parametrize("cut", [100, 1000, 5000, -10])
def test_truncated_data_set_is_refused(archive: Archive, ct_files: list[Path], cut: int) -> None:
    data, meta = _split(ct_files[1])
    with pytest.raises(InvalidDatasetError) as e:
        archive.store(data[:cut], transfer_syntax=meta.TransferSyntaxUID, sop_class_uid=meta.MediaStorageSOPClassUID,
                      sop_instance_uid=meta.MediaStorageSOPInstanceUID)
    assert e.value.status == 0xC000
    _assert_nothing_stored(archive)


def test_garbage_is_refused(archive: Archive) -> None:
    with pytest.raises(InvalidDatasetError):
        archive.store(b"\x01\x02garbage" * 50, transfer_syntax="1.2.840.10008.1.2.1", sop_class_uid="1.2.3",
                      sop_instance_uid="1.2.4")
    _assert_nothing_stored(archive)


def _rewrite(path: Path, tmp_path: Path, **changes) -> Path:
    ds = pydicom.dcmread(path)
    for k, v in changes.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    out = tmp_path / "rewritten.dcm"
    ds.save_as(out)
    return out


def test_missing_sop_instance_uid_is_refused(archive: Archive, ct_files: list[Path], tmp_path: Path) -> None:
    meta = pydicom.filereader.read_file_meta_info(ct_files[2])
    bad = _rewrite(ct_files[2], tmp_path, SOPInstanceUID=None)
    with pytest.raises(InvalidDatasetError, match="SOPInstanceUID") as e:
        _store(archive, bad, sop_instance_uid=meta.MediaStorageSOPInstanceUID)
    assert e.value.status == 0xC000
    _assert_nothing_stored(archive)


def test_sop_class_mismatch_is_refused(archive: Archive, ct_files: list[Path]) -> None:
    with pytest.raises(SOPClassMismatchError) as e:
        _store(archive, ct_files[2], sop_class_uid="1.2.840.10008.5.1.4.1.1.4")  # request says MR
    assert e.value.status == 0xA900
    _assert_nothing_stored(archive)


def test_path_traversal_uid_is_refused(archive: Archive, ct_files: list[Path], tmp_path: Path) -> None:
    bad = _rewrite(ct_files[2], tmp_path, StudyInstanceUID="../../etc")
    with pytest.raises(InvalidDatasetError):
        _store(archive, bad)
    _assert_nothing_stored(archive)


def test_oversize_is_refused(archive: Archive, ct_files: list[Path]) -> None:
    small = Archive(archive.config.replace(max_instance_bytes=100_000), archive.db)
    with pytest.raises(TooLargeError) as e:
        _store(small, ct_files[3])
    assert e.value.status == 0xA700
    _assert_nothing_stored(archive)


def test_write_error_is_out_of_resources_and_nothing_indexed(archive: Archive, ct_files: list[Path]) -> None:
    ds = pydicom.dcmread(ct_files[3], stop_before_pixels=True)
    blocker = archive.root / "dicom" / ds.StudyInstanceUID
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a folder")  # the study folder cannot be created
    with pytest.raises(OutOfResourcesError) as e:
        _store(archive, ct_files[3])
    assert e.value.status == 0xA700
    assert archive.counts()["instances"] == 0
    blocker.unlink()
    assert _store(archive, ct_files[3]).outcome is StoreOutcome.STORED  # and the next one works


@pytest.mark.parametrize("backend", BACKENDS)
def test_reconcile_repairs_after_crash(archive: Archive, ct_files: list[Path]) -> None:
    kept = _store(archive, ct_files[4])
    lost_row = _store(archive, ct_files[5])
    lost_file = _store(archive, ct_files[6])
    # crash between rename and commit: file without row
    archive.db.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (lost_row.sop_instance_uid,))
    # impossible by construction, but repaired anyway: row without file
    lost_file.path.unlink()
    tmp = kept.path.parent / ".x.dcm.1.abc.tmp"
    tmp.write_bytes(b"partial")
    stats = archive.reconcile()
    assert stats == {"temp_removed": 1, "rows_dropped": 1, "files_indexed": 1, "files_unreadable": 0}
    uids = {r["sop_instance_uid"] for r in archive.instances()}
    assert uids == {kept.sop_instance_uid, lost_row.sop_instance_uid}
    assert not tmp.exists()


def test_store_file_keeps_data_set_bytes(archive: Archive) -> None:
    path = Path(get_testdata_file("CT_small.dcm"))
    result = archive.store_file(path)
    assert _split(result.path)[0] == _split(path)[0]


def test_directory_sync_shares_fsyncs_and_covers_every_caller() -> None:
    import threading
    import time as _time

    from dicom_node.archive import DirectorySync

    events: list[tuple[str, int, float]] = []  # ("start"/"end", fsync number, time)
    lock = threading.Lock()

    def slow_fsync(folder: str) -> None:
        with lock:
            n = sum(1 for e in events if e[0] == "start")
            events.append(("start", n, _time.monotonic()))
        _time.sleep(0.02)
        with lock:
            events.append(("end", n, _time.monotonic()))

    sync = DirectorySync(slow_fsync)
    returned: list[tuple[float, float]] = []  # (ticket time, return time)

    def caller() -> None:
        t0 = _time.monotonic()
        sync.sync("/some/series")
        returned.append((t0, _time.monotonic()))

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for t in threads:
        t.start()
        _time.sleep(0.003)
    for t in threads:
        t.join()
    starts = {n: t for kind, n, t in events if kind == "start"}
    ends = {n: t for kind, n, t in events if kind == "end"}
    assert len(returned) == 12
    assert len(starts) < 12  # shared
    for t0, t1 in returned:  # each caller saw an fsync that started after its ticket and ended before it returned
        assert any(starts[n] >= t0 and ends[n] <= t1 for n in starts)
    assert sync._state == {}
