"""Fixtures of the chest X-ray tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def cxr_data(shared_data: Path) -> Path:
    """``../shared/data/cxr`` (skips when absent)."""
    root = shared_data / "cxr"
    if not root.is_dir():
        pytest.skip(f"no chest X-ray data at {root}")
    return root


@pytest.fixture
def openist_case(cxr_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """One real normal radiograph (float32 in [0,1]) and its manual lung mask."""
    img = sorted((cxr_data / "normal-openist" / "images").glob("*.jpg"))[0]
    mask = cxr_data / "normal-openist" / "lung_masks" / (img.stem + ".png")
    return (np.asarray(Image.open(img).convert("L"), dtype=np.float32) / 255.0,
            np.asarray(Image.open(mask).convert("L")) > 127)
