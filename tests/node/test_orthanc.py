"""Interoperability with a real Orthanc PACS: Orthanc pushes to medws, medws
retrieves from Orthanc by C-MOVE, medws sends to Orthanc (CLI and SCU)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_node import samples, scu
from dicom_node.scp import Node, write_run_file
from tests.support.orthanc import Orthanc, orthanc_binary


@pytest.fixture
def pacs(node: Node, tmp_path: Path) -> Iterator[Orthanc]:
    orthanc_binary()
    server = Orthanc(tmp_path / "orthanc", modalities={"medws": ("MEDWS", "127.0.0.1", node.port)})
    node.peers.add("orthanc", "ORTHANC", "127.0.0.1", server.dicom_port)
    server.start()
    yield server
    server.stop()


def _medws(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medws", "node", *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


def _uids(paths: list[Path]) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}


def test_orthanc_push_medws_retrieve_and_send(node: Node, pacs: Orthanc, ct_files: list[Path], tmp_path: Path) -> None:
    # 1. the PACS pushes a CT study to medws
    for f in ct_files[:5]:
        pacs.upload(f)
    study_a = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID
    pacs.push_study(study_a, "medws")
    assert {r["sop_instance_uid"] for r in node.archive.instances(study_uid=study_a)} == _uids(ct_files[:5])

    # 2. medws queries the PACS and retrieves another study by C-MOVE (CLI, node serving)
    dx = samples.save(samples.dx_chest(256, seed=7, patient_id="MEDWS-DX-ORTH"), tmp_path / "dx.dcm")
    pacs.upload(dx)
    study_b = pydicom.dcmread(dx, stop_before_pixels=True).StudyInstanceUID
    root = node.config.root
    found = _medws(root, "query", "orthanc", "--patient-id", "MEDWS-DX-ORTH", "--json")
    assert found.returncode == 0, found.stderr
    assert [m["StudyInstanceUID"] for m in json.loads(found.stdout)] == [study_b]
    write_run_file(node.config, node.port)  # as `node serve` does
    moved = _medws(root, "retrieve", "orthanc", "--study", study_b)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["completed"] == 1
    assert [r["sop_instance_uid"] for r in node.archive.instances(study_uid=study_b)] == list(_uids([dx]))

    # 3. medws sends a study it holds (and the PACS lacks) to the PACS
    local = [samples.save(ds, tmp_path / f"local_{i}.dcm")
             for i, ds in enumerate(samples.ct_series(3, size=128, seed=11, patient_id="MEDWS-LOCAL"))]
    for f in local:
        node.archive.store_file(f)
    study_c = pydicom.dcmread(local[0], stop_before_pixels=True).StudyInstanceUID
    sent = _medws(root, "send", "orthanc", "--study", study_c)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"sent": 3, "failed": 0}
    assert pacs.study_instance_uids(study_c) == _uids(local)

    # echo through the CLI, and the SCU API for a series-level C-FIND
    assert _medws(root, "echo", "orthanc").returncode == 0
    series = scu.find(node.peers.get("orthanc"), "MEDWS", "SERIES", {"StudyInstanceUID": study_a})
    assert len(series) == 1 and series[0]["Modality"] == "CT"
