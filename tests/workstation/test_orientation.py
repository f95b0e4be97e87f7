"""An asymmetric image goes through the whole display path without a flip or transpose.

Stored through the archive, loaded by ``study.py``, windowed by ``display.py``, painted by
the viewer: the bright block in the top-left corner must stay top-left everywhere, and the
edge labels must follow PatientOrientation (PS3.3 C.7.6.1.1.1).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage

from dicom_node import samples
from workstation.core import display
from workstation.core.session import ReadingSession
from workstation.core.store import ReadingStore
from workstation.core.study import load_study_files
from workstation.qt.viewer import ImageViewer

ROWS, COLS = 60, 90


def asymmetric() -> np.ndarray:
    img = np.zeros((ROWS, COLS), np.uint16)
    img[:, :] = np.linspace(0, 1000, COLS, dtype=np.uint16)[None, :] // 4  # left dark → right brighter
    img[2:14, 3:20] = 4000  # block at top-left
    img[ROWS - 6:, COLS - 4:] = 0  # notch at bottom-right
    return img


def make_dx(photometric: str) -> object:
    ds = samples.dx_chest(size=64, seed=3, patient_id="ORIENT-1")
    ds.Rows, ds.Columns = ROWS, COLS
    ds.PixelData = asymmetric().tobytes()
    ds.PhotometricInterpretation = photometric
    ds.WindowCenter, ds.WindowWidth = "2000", "4000"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = ds.PixelSpacing = ["0.5", "0.25"]
    return ds


def gray(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_Grayscale8)
    arr = np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * img.height())
    return arr.reshape(img.height(), img.bytesPerLine())[:, : img.width()].copy()


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_no_flip_anywhere(qtbot, tmp_path, photometric):
    store = ReadingStore.open(tmp_path / "root")
    ds = make_dx(photometric)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "a.dcm"
        ds.save_as(p, enforce_file_format=True)
        store.archive.store_file(p)
    study = load_study_files(store.study_paths(str(ds.StudyInstanceUID)))
    series = study.series[0]
    src = asymmetric().astype(np.float32)
    assert np.array_equal(series.frames[0], src)  # loading: no flip
    assert series.edge_labels == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    assert series.spacing == (0.5, 0.25) and series.invert == (photometric == "MONOCHROME1")

    from workstation.core.review import ReviewState
    session = ReadingSession(study, ReviewState([]))
    expected = display.window_to_uint8(src, display.Window(2000, 4000), invert=series.invert)
    assert np.array_equal(session.current_image8(), expected)  # windowing: no flip
    block = 255 if photometric == "MONOCHROME2" else 0
    assert expected[5, 5] == block

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(400, 300)
    viewer.show()
    viewer.set_session(session)
    assert np.array_equal(gray(viewer.render_current()), expected)  # QImage: no flip
    shot = gray(viewer.grab().toImage())
    t = session.transform

    def at(x: float, y: float) -> int:
        vx, vy = t.image_to_view(x, y)
        return int(shot[int(vy), int(vx)])

    # painted: the top-left block is where the transform says, the other corners are not the block
    assert at(10, 8) == block
    assert abs(at(COLS - 10, 8) - block) > 60
    assert abs(at(10, ROWS - 8) - block) > 60
    notch = 0 if photometric == "MONOCHROME2" else 255
    assert at(COLS - 2, ROWS - 2) == notch
    # distance uses (row, column) spacing in the right order
    assert display.distance_mm((0, 0), (4, 0), series.spacing) == pytest.approx(1.0)
    assert display.distance_mm((0, 0), (0, 4), series.spacing) == pytest.approx(2.0)
    store.close()
