"""Fixtures for the models/ and training/datasets tests: tiny real ONNX models and registries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.card import ModelCard, sha256_file


def write_tiny_onnx(path: Path, scale: float = 2.0) -> Path:
    """A real ONNX graph: ``prob = sigmoid(image * scale)``, image (N, 1, H, W) float32."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "H", "W"])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "k"], ["z"]), helper.make_node("Sigmoid", ["z"], ["prob"])],
        "tiny", [x], [y], initializer=[k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_card(name: str = "tiny", version: str = "1.0.0", sha256: str = "0" * 64) -> ModelCard:
    return ModelCard(
        name=name, version=version, task="test",
        input={"name": "image", "size": 8, "channels": 1, "normalisation": "none"},
        outputs={"prob": "sigmoid(2x)"}, classes=["a"], thresholds={"a": 0.5},
        training_data="none: a fixed test graph", metrics={}, sha256=sha256,
    )


def install_model(root: Path, name: str = "tiny", version: str = "1.0.0", scale: float = 2.0) -> Path:
    """Write ``<root>/<name>/<version>/{model.onnx, card.json}`` and return the folder."""
    folder = root / name / version
    onnx_path = write_tiny_onnx(folder / "model.onnx", scale)
    make_card(name, version, sha256_file(onnx_path)).save(folder / "card.json")
    return folder


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    install_model(root, "tiny", "1.0.0", 1.0)
    install_model(root, "tiny", "1.2.0", 2.0)
    install_model(root, "tiny", "1.10.0-rc.1", 3.0)
    install_model(root, "other", "0.1.0", 1.0)
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
