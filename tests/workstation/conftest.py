"""Fixtures for the workstation tests: a demo archive built through the node's public APIs."""
from __future__ import annotations

import pytest

from workstation.core import demo


@pytest.fixture
def demo_root(tmp_path):
    studies = demo.build(tmp_path / "root", ct_slices=8, extra_routine=2)
    return tmp_path / "root", studies
