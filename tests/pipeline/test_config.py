"""Pipeline settings from <root>/medws.toml and the environment."""
from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.analysis import load_analysis_config
from dicom_node.config import load_config
from dicom_node.errors import ConfigError


def test_settings_layers(tmp_path: Path) -> None:
    (tmp_path / "medws.toml").write_text(
        '[node]\nport = 11112\n[analysis]\nworkers = 2\nreport_language = "ko"\n'
        '[outbox]\nmax_attempts = 4\nbackoff_s = 0.5\n[routing]\ndisable = ["ct-denoise"]\n')
    load_config(tmp_path, env={})  # the node's loader accepts the file with the pipeline's tables
    cfg = load_analysis_config(tmp_path, env={})
    assert (cfg.workers, cfg.report_language, cfg.outbox_max_attempts, cfg.outbox_backoff_s) == (2, "ko", 4, 0.5)
    assert "ct-denoise" not in [r.task for r in cfg.rules] and "cxr" in [r.task for r in cfg.rules]
    env = load_analysis_config(tmp_path, env={"MEDWS_ANALYSIS_WORKERS": "3", "MEDWS_REPORT_LANGUAGE": "en"})
    assert (env.workers, env.report_language) == (3, "en")
    assert load_analysis_config(tmp_path / "missing", env={}).workers == 1


@pytest.mark.parametrize("text, message", [
    ("[analysis]\ncolour = 1\n", "unknown setting"),
    ("[analysis]\nreport_language = \"fr\"\n", "report_language"),
    ("[outbox]\nmax_attempts = 0\n", "max_attempts"),
    ("[analysis\n", "medws.toml"),
])
def test_bad_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "medws.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_analysis_config(tmp_path, env={})
