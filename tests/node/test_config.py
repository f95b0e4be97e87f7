from pathlib import Path

import pytest

from dicom_node.config import load_config, write_default_config
from dicom_node.errors import ConfigError


def test_layers_defaults_file_env_cli(tmp_path: Path) -> None:
    assert load_config(tmp_path, env={}).port == 11112
    write_default_config(tmp_path, port=4242, ae_title="FILEAE")
    assert load_config(tmp_path, env={}).port == 4242
    cfg = load_config(tmp_path, env={"MEDWS_PORT": "5000", "MEDWS_REQUIRE_REGISTERED": "false"})
    assert (cfg.port, cfg.ae_title, cfg.require_registered) == (5000, "FILEAE", False)
    cfg = load_config(tmp_path, overrides={"port": 6000, "ae_title": None}, env={"MEDWS_PORT": "5000"})
    assert (cfg.port, cfg.ae_title) == (6000, "FILEAE")


def test_root_from_environment(tmp_path: Path) -> None:
    assert load_config(env={"MEDWS_ROOT": str(tmp_path)}).root == tmp_path


@pytest.mark.parametrize("bad", [{"port": 70000}, {"ae_title": "X" * 17}, {"duplicate_policy": "newest"},
                                 {"workers": 0}])
def test_invalid_settings_raise(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path, overrides=bad, env={})


def test_bad_env_value_names_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(tmp_path, env={"MEDWS_PORT": "eleven"})
