"""Interoperability with DCMTK: echoscu, storescu, findscu, movescu, getscu against medws."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.scp import Node
from tests.conftest import get_port
from tests.node.conftest import BACKENDS, TEST_AE
from tests.support import dcmtk


def _addr(node: Node) -> list[str]:
    return ["-aet", TEST_AE, "-aec", node.config.ae_title, "127.0.0.1", str(node.port)]


def test_echoscu(node: Node) -> None:
    proc = dcmtk.run("echoscu", *_addr(node))
    assert proc.returncode == 0, proc.stderr


def test_echoscu_unregistered_is_rejected(node: Node) -> None:
    proc = dcmtk.run("echoscu", "-aet", "STRANGER", "-aec", "MEDWS", "127.0.0.1", str(node.port))
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stderr + proc.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_storescu_then_findscu_getscu_movescu(node: Node, ct_files: list[Path], tmp_path: Path) -> None:
    proc = dcmtk.run("storescu", *_addr(node), *[str(p) for p in ct_files[:6]])
    assert proc.returncode == 0, proc.stderr
    # compressed files, each proposed in its own transfer syntax (storescu -x? options)
    compressed = {"MR_small_jp2klossless.dcm": "-xv", "JPEG2000.dcm": "-xw", "MR_small_jpeg_ls_lossless.dcm": "-xt",
                  "emri_small_RLE.dcm": "-xr", "JPEG-lossy.dcm": "-xx", "SC_rgb_jpeg_dcmtk.dcm": "-xy", "JPEG-LL.dcm": "-xs", "image_dfl.dcm": "-xd"}
    for name, option in compressed.items():
        proc = dcmtk.run("storescu", option, *_addr(node), get_testdata_file(name))
        assert proc.returncode == 0, (name, proc.stderr)
    distinct = {pydicom.dcmread(get_testdata_file(n), stop_before_pixels=True).SOPInstanceUID for n in compressed}
    assert node.archive.counts()["instances"] == 6 + len(distinct)  # some test files share a SOP Instance UID
    stored_ts = {r[0] for r in node.db.query("SELECT transfer_syntax_uid FROM instances")}
    # (the J2K lossless MR shares its SOP Instance UID with the JPEG-LS one, which replaced it)
    assert {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1.99"} <= stored_ts
    study = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID

    # C-FIND, Study Root, study and image level
    out = tmp_path / "find"
    out.mkdir()
    proc = dcmtk.run("findscu", "-S", "-X", "--output-directory", str(out), "-k", "QueryRetrieveLevel=STUDY",
                     "-k", "PatientID=MEDWS-CT-0001", "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances",
                     *_addr(node))
    assert proc.returncode == 0, proc.stderr
    responses = [pydicom.dcmread(p) for p in out.iterdir()]
    assert [(r.StudyInstanceUID, int(r.NumberOfStudyRelatedInstances)) for r in responses] == [(study, 6)]

    # C-GET into a folder
    got = tmp_path / "get"
    got.mkdir()
    proc = dcmtk.run("getscu", "-S", "-od", str(got), "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={study}", *_addr(node))
    assert proc.returncode == 0, proc.stderr
    assert len(list(got.iterdir())) == 6

    # C-MOVE to movescu's own storage SCP, registered as a peer
    move_port = get_port()
    node.peers.add("movescu", "MOVESCU", "127.0.0.1", move_port)
    moved = tmp_path / "move"
    moved.mkdir()
    proc = dcmtk.run("movescu", "-S", "-aem", "MOVESCU", "--port", str(move_port), "-od", str(moved),
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     "-aet", "MOVESCU", "-aec", "MEDWS", "127.0.0.1", str(node.port))
    assert proc.returncode == 0, proc.stderr
    moved_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in moved.iterdir()}
    expected = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in ct_files[:6]}
    assert moved_uids == expected
