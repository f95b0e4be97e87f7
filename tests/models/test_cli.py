from __future__ import annotations

import json

from medws.cli import main
from tests.models.conftest import install_model


def test_models_list_json(registry_dir, capsys):
    assert main(["models", "list", "--json", "--dir", str(registry_dir)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["name"], d["version"]) for d in lines] == [
        ("other", "0.1.0"), ("tiny", "1.0.0"), ("tiny", "1.2.0"), ("tiny", "1.10.0-rc.1")]
    assert [d["active"] for d in lines] == [True, False, False, True]
    assert all(len(d["sha256"]) == 64 and d["path"].endswith("model.onnx") for d in lines)


def test_models_list_table_and_verify(registry_dir, capsys):
    path = registry_dir / "tiny" / "1.0.0" / "model.onnx"
    path.write_bytes(path.read_bytes() + b"x")
    assert main(["models", "list", "--verify", "--dir", str(registry_dir)]) == 1
    out = capsys.readouterr().out
    assert "NAME" in out and "1.10.0-rc.1" in out and "FAILED" in out


def test_models_list_env_dir(tmp_path, monkeypatch, capsys):
    install_model(tmp_path / "site", "sitemodel", "2.0.0")
    monkeypatch.setenv("MEDWS_MODELS_DIR", str(tmp_path / "site"))
    assert main(["models", "list", "--json"]) == 0
    names = [json.loads(x)["name"] for x in capsys.readouterr().out.splitlines()]
    assert "sitemodel" in names
