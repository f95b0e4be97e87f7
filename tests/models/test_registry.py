from __future__ import annotations

import json

import numpy as np
import pytest

from models.errors import ModelError, ModelIntegrityError, ModelNotFoundError
from models.registry import ACTIVE_FILE, Registry, default_dirs
from models.session import OrtModel, resolve_threads
from tests.models.conftest import install_model


def test_list_sorted_by_semver(registry_dir):
    cards = Registry([registry_dir]).list()
    assert [(c.name, c.version) for c in cards] == [
        ("other", "0.1.0"), ("tiny", "1.0.0"), ("tiny", "1.2.0"), ("tiny", "1.10.0-rc.1")]


def test_get_highest_version_and_pinned(registry_dir):
    reg = Registry([registry_dir])
    assert reg.get("tiny").card.version == "1.10.0-rc.1"
    assert reg.get("tiny", "1.0.0").onnx_path == registry_dir / "tiny" / "1.0.0" / "model.onnx"
    with pytest.raises(ModelNotFoundError, match="no version"):
        reg.get("tiny", "9.9.9")
    with pytest.raises(ModelNotFoundError, match="known models"):
        reg.get("nope")


def test_active_pointer_promote_and_rollback(registry_dir):
    reg = Registry([registry_dir])
    reg.set_active("tiny", "1.2.0", note="promoted")
    assert reg.get("tiny").card.version == "1.2.0"
    reg.set_active("tiny", "1.0.0", note="rollback")
    assert reg.get("tiny").card.version == "1.0.0"
    history = reg.pointer_history("tiny")
    assert [h["version"] for h in history] == ["1.2.0", "1.0.0"]
    assert history[1]["previous"] == "1.2.0"
    with pytest.raises(ModelNotFoundError):
        reg.set_active("tiny", "3.0.0")
    reg.clear_active("tiny")
    assert reg.get("tiny").card.version == "1.10.0-rc.1"


def test_pointer_to_missing_version_is_an_error(registry_dir):
    (registry_dir / "tiny" / ACTIVE_FILE).write_text(json.dumps({"version": "7.0.0"}))
    with pytest.raises(ModelNotFoundError, match="active pointer"):
        Registry([registry_dir]).get("tiny")


def test_later_dir_overrides_and_env(registry_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_model(site, "tiny", "1.2.0", 5.0)
    reg = Registry([registry_dir, site])
    assert reg.get("tiny", "1.2.0").onnx_path.is_relative_to(site)
    monkeypatch.setenv("MEDWS_MODELS_DIR", f"{registry_dir}{__import__('os').pathsep}{site}")
    assert default_dirs()[1:] == [registry_dir, site]


def test_invalid_cards_are_skipped(registry_dir):
    (registry_dir / "tiny" / "1.0.0" / "card.json").write_text("{}")
    bad = registry_dir / "tiny" / "2.0.0"
    bad.mkdir()
    (bad / "card.json").write_text((registry_dir / "other" / "0.1.0" / "card.json").read_text())
    versions = [c.version for c in Registry([registry_dir]).list() if c.name == "tiny"]
    assert versions == ["1.2.0", "1.10.0-rc.1"]


def test_session_runs_and_verifies_sha(registry_dir):
    reg = Registry([registry_dir])
    model = reg.session("tiny", "1.2.0", threads=1)
    assert isinstance(model, OrtModel)
    assert model.input_names == ["image"] and model.output_names == ["prob"]
    assert "CPUExecutionProvider" in model.providers
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = model.run({"image": x})["prob"]
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-2 * x)), rtol=1e-6)
    with pytest.raises(ModelError, match="missing"):
        model.run({"x": x})
    # tamper with the weights: the load must refuse
    path = registry_dir / "tiny" / "1.0.0" / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.session("tiny", "1.0.0")


def test_threads_from_env(monkeypatch):
    monkeypatch.setenv("MEDWS_ORT_THREADS", "3")
    assert resolve_threads(None) == 3
    assert resolve_threads(1) == 1
    monkeypatch.setenv("MEDWS_ORT_THREADS", "many")
    with pytest.raises(ModelError, match="MEDWS_ORT_THREADS"):
        resolve_threads(None)


def test_missing_onnx_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        OrtModel(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        OrtModel(bad)


def test_cuda_provider_preferred_when_available(monkeypatch):
    import onnxruntime as ort

    from models.session import default_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert default_providers() == ["CPUExecutionProvider"]


def test_session_options(registry_dir):
    import onnxruntime as ort

    model = Registry([registry_dir]).session("tiny", "1.0.0", threads=2, providers=["CPUExecutionProvider"])
    opts = model._session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert model.providers == ["CPUExecutionProvider"]


def test_rollback_uses_the_pointer_history(registry_dir):
    reg = Registry([registry_dir])
    with pytest.raises(ModelError, match="roll back"):
        reg.rollback("tiny")
    reg.set_active("tiny", "1.0.0")
    reg.set_active("tiny", "1.2.0")
    assert reg.rollback("tiny") == "1.0.0"
    assert reg.get("tiny").card.version == "1.0.0"
    assert reg.pointer_history("tiny")[-1]["note"] == "rollback"


def test_every_shipped_model_is_registered_under_its_own_folder() -> None:
    """Each ``models/zoo/<name>/<version>/`` card names that model and version (the
    registry skips a mismatch with only a warning) and its weights match the card."""
    import json
    from pathlib import Path

    from models.registry import Registry

    zoo = Path(__file__).resolve().parents[2] / "models" / "zoo"
    folders = sorted(p.parent for p in zoo.glob("*/*/card.json"))
    assert folders
    registry = Registry([zoo])
    for folder in folders:
        card = json.loads((folder / "card.json").read_text())
        assert (card["name"], card["version"]) == (folder.parent.name, folder.name), folder
        registry.get(card["name"], card["version"]).verify()
