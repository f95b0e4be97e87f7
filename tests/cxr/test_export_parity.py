"""The shipped ONNX models reproduce their torch weights on real radiographs (ORT vs torch)."""
from __future__ import annotations

import numpy as np
import pytest

from models.registry import Registry

torch = pytest.importorskip("torch")
pytest.importorskip("monai")


@pytest.fixture
def real_inputs(cxr_data):
    from models.cxr.preprocess import prepare
    from models.imaging import load_radiograph

    paths = [cxr_data / "samples" / "00000001_000.png", cxr_data / "samples" / "00027426_000.png",
             cxr_data / "samples" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]
    return np.concatenate([prepare(load_radiograph(p).pixels).tensor for p in paths])


def test_lesion_onnx_matches_torch(real_inputs):
    from training.cxr.nets import LESION_OUTPUTS, CxrLesionNet

    entry = Registry().get("cxr-lesions")
    net = CxrLesionNet()
    net.load_state_dict(torch.load(entry.directory / "weights.pt", map_location="cpu"))
    net.eval()
    ort_model = Registry().session("cxr-lesions", threads=2)  # sha256 verified
    got = ort_model.run({"image": real_inputs})
    with torch.no_grad():
        want = dict(zip(LESION_OUTPUTS, (t.numpy() for t in net(torch.from_numpy(real_inputs)))))
    for name in ("scores", "abnormality", "seg"):
        assert np.abs(got[name] - want[name]).max() < 1e-3, name
    assert np.abs(got["embedding"] - want["embedding"]).max() < 1e-3


def test_lung_onnx_matches_torch(real_inputs):
    from training.cxr.nets import LungProbabilities, lung_unet

    entry = Registry().get("cxr-lung")
    net = lung_unet()
    net.load_state_dict(torch.load(entry.directory / "weights.pt", map_location="cpu"))
    model = LungProbabilities(net).eval()
    got = Registry().session("cxr-lung", threads=2).run({"image": real_inputs})["lung"]
    with torch.no_grad():
        want = model(torch.from_numpy(real_inputs)).numpy()
    assert np.abs(got - want).max() < 1e-3


def test_cards_hold_measured_metrics():
    for name in ("cxr-lung", "cxr-lesions"):
        entry = Registry().get(name)
        entry.verify()
        assert entry.onnx_path.stat().st_size < 30 * 2**20
        assert entry.card.metrics.get("measured_by", "").startswith("training.cxr.evaluate")
    les = Registry().get("cxr-lesions").card
    assert set(les.metrics["real_nih_heldout"]["per_class"]) == set(les.classes)
    assert "ci95" in les.metrics["synthetic_heldout"]["per_class"]["pneumothorax"]


def test_nodule_onnx_matches_torch(cxr_data):
    from models.cxr.preprocess import prepare
    from models.imaging import load_radiograph
    from training.cxr.nets import CxrLesionNet, NoduleMap

    entry = Registry().get("cxr-nodule")
    net = CxrLesionNet()
    net.load_state_dict(torch.load(entry.directory / "weights.pt", map_location="cpu"))
    model = NoduleMap(net).eval()
    x = prepare(load_radiograph(cxr_data / "samples" / "00000001_000.png").pixels, 256, fine_size=512).fine
    got = Registry().session("cxr-nodule", threads=2).run({"image": x})["nodule"]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 1, 128, 128) and np.abs(got - want).max() < 1e-3


def test_nodule_card_holds_measured_metrics():
    entry = Registry().get("cxr-nodule")
    entry.verify()
    assert entry.onnx_path.stat().st_size < 30 * 2**20
    m = entry.card.metrics
    assert m["measured_by"].startswith("training.cxr.evaluate_nodule")
    assert m["synthetic_heldout"]["nodule_mass"]["ci95"] and m["real_nih_heldout"]["nodule_mass"]["auroc"]
    assert 0.0 < entry.card.thresholds["nodule_mass"] < 1.0
