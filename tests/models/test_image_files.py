"""Batch inputs: folders expand to the images below them (``models.imaging.image_files``)."""
from __future__ import annotations

from pathlib import Path

from models.imaging import image_files


def _dicom_without_suffix(path: Path) -> Path:
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    return path


def test_folders_expand_recursively_sorted_and_skip_non_images(tmp_path):
    top = tmp_path / "study"
    (top / "b").mkdir(parents=True)
    (top / "a").mkdir()
    (top / ".cache").mkdir()
    want = [top / "a" / "img.PNG", top / "a" / "x.jpeg", top / "b" / "1.dcm", _dicom_without_suffix(top / "b" / "IM0001")]
    for p in want[:3]:
        p.write_bytes(b"x")
    (top / "b" / "notes.txt").write_text("not an image")
    (top / ".cache" / "thumb.png").write_bytes(b"x")
    (top / "a" / ".hidden.png").write_bytes(b"x")
    single = tmp_path / "single.png"
    single.write_bytes(b"x")
    missing = tmp_path / "missing.dcm"
    assert image_files([single, top, missing]) == [single, *want, missing]


def test_an_empty_folder_gives_nothing(tmp_path):
    assert image_files([tmp_path]) == []
