"""``medws node serve`` stops cleanly on SIGTERM, also while its analysis services start."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import get_port
from tests.support.medws_process import medws_process, terminate


@pytest.mark.timeout(120)
def test_sigterm_during_model_warm_up_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM right after "listening" lands while the chest X-ray models load (ONNX Runtime
    sessions created in the start-up thread); exiting under them used to hang the process."""
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "medws", "node", "init", "--root", str(root)], check=True,
                   capture_output=True)
    for _ in range(3):
        with medws_process("node", "serve", "--root", str(root), "--host", "127.0.0.1", "--port", str(get_port()),
                           "--ae-title", "MEDWS") as (proc, event):
            assert event["event"] == "listening"
            assert terminate(proc) == 0
