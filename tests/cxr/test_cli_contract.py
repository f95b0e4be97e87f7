"""``medws infer cxr PATH... --json`` on real DICOM/PNG inputs with the shipped models."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from models.cxr.preprocess import CLASSES
from models.registry import Registry

DCM = "samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _infer(*paths) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "medws", "infer", "cxr", *map(str, paths), "--json", "--threads", "2"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_json_contract_on_real_dicom_png_and_bad_inputs(cxr_data, tmp_path):
    lateral = tmp_path / "lateral.dcm"
    ds = pydicom.dcmread(cxr_data / DCM)
    ds.ViewPosition = "LL"
    ds.save_as(lateral)
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    paths = [cxr_data / DCM, cxr_data / "samples" / "00000001_000.png", lateral, junk, tmp_path / "missing.png"]
    recs = _infer(*paths)
    assert [r["path"] for r in recs] == [str(p) for p in paths]
    card = Registry().get("cxr-lesions").card
    sizes = {0: (1024, 1024), 1: (512, 512)}
    for i, r in enumerate(recs):
        assert set(r) == {"path", "skipped", "abnormality", "scores", "findings", "model"}
        assert r["model"] == {"name": card.name, "version": card.version}
        if i in sizes:
            assert r["skipped"] is None
            assert 0.0 <= r["abnormality"] <= 1.0
            assert list(r["scores"]) == list(CLASSES) and all(0 <= v <= 1 for v in r["scores"].values())
            w, h = sizes[i]
            for f in r["findings"]:
                assert f["label"] in CLASSES and f["laterality"] in ("left", "right", "bilateral")
                assert f["zone"] in ("upper", "middle", "lower") and 0 <= f["probability"] <= 1
                x1, y1, x2, y2 = f["box"]
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
                assert all(0 <= x <= w and 0 <= y <= h for x, y in f["contour"])
                assert f["probability"] <= r["scores"][f["label"]] + 1e-4
                assert r["scores"][f["label"]] >= card.thresholds[f["label"]] - 1e-4
        else:
            assert isinstance(r["skipped"], str) and r["skipped"] and r["scores"] is None
    assert "lateral" in recs[2]["skipped"].lower()


def test_dicom_and_png_of_the_same_image_agree(cxr_data, tmp_path):
    """A PNG written from the DICOM's presentation pixels gives the same scores (coordinates too)."""
    import numpy as np
    from PIL import Image

    from models.imaging import load_radiograph

    r = load_radiograph(cxr_data / DCM)
    png = tmp_path / "same.png"
    Image.fromarray(np.round(r.pixels * 255).astype(np.uint8)).save(png)
    a, b = _infer(cxr_data / DCM, png)
    for c in CLASSES:
        assert a["scores"][c] == pytest.approx(b["scores"][c], abs=0.03)


def test_a_folder_is_read_image_by_image(cxr_data, tmp_path):
    """``medws infer cxr FOLDER``: one record per DICOM/PNG/JPEG below it (sorted), other files left out."""
    import shutil

    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(cxr_data / DCM, folder / "sub" / "IM0001")  # archives often store instances without a suffix
    shutil.copy(cxr_data / "samples" / "00000001_000.png", folder / "a.png")
    (folder / "readme.txt").write_text("not an image")
    recs = _infer(folder)
    assert [Path(r["path"]).relative_to(folder).as_posix() for r in recs] == ["a.png", "sub/IM0001"]
    assert all(r["skipped"] is None for r in recs)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "medws", "infer", "cxr", str(empty), "--json"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 1 and out.stdout == "" and "no images found" in out.stderr
