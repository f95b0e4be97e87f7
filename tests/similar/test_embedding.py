"""Embeddings: CT descriptor, crops, the shipped radiograph model, ONNX export parity."""
from __future__ import annotations

import numpy as np
import pytest

from models.embedding import CtDescriptor, EmbeddingError, crop_box, l2_normalise


def phantom(seed: int, soft: float = 40.0, lung: float = -850.0, n: int = 4, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (0.45 * size)) ** 2 + ((xx - size / 2) / (0.48 * size)) ** 2 < 1
    lungs = (((yy - size / 2) / (0.3 * size)) ** 2 + ((np.abs(xx - size / 2) - 0.2 * size) / (0.15 * size)) ** 2) < 1
    sl = np.full((size, size), -1000.0, np.float32)
    sl[body] = soft
    sl[lungs] = lung
    return np.stack([sl + rng.normal(0, 15, sl.shape) for _ in range(n)]).astype(np.float32)


def test_ct_descriptor_is_normalised_and_discriminates():
    d = CtDescriptor()
    a, a2 = d.embed(phantom(0)), d.embed(phantom(1))
    b = d.embed(phantom(2, soft=250.0, lung=-400.0))  # contrast-enhanced, denser lungs
    assert a.shape == (d.model.dim,) and a.dtype == np.float32
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert float(a @ a2) > 0.98  # same tissue mix, different noise
    assert float(a @ b) < float(a @ a2) - 0.1
    crop = d.embed_crop(phantom(0), (30, 30, 50, 50), z_range=(1, 3))
    assert np.linalg.norm(crop) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(EmbeddingError):
        d.embed(np.full((2, 32, 32), -1000.0, np.float32))  # air only
    with pytest.raises(EmbeddingError):
        d.embed_crop(phantom(0), (10, 10, 20, 20), z_range=(9, 12))


def test_crop_box_margin_and_clipping():
    assert crop_box((100, 200), (50, 40, 70, 60)) == (45, 35, 75, 65)  # 25% margin of a 20 px box, min 24 px
    assert crop_box((100, 200), (0, 0, 100, 50)) == (0, 0, 125, 63)
    x0, y0, x1, y1 = crop_box((100, 100), (95, 95, 99, 99))
    assert x1 == 100 and y1 == 100 and x1 - x0 >= 2
    for bad in [(10, 10, 5, 20), (10, 10, 10, 20)]:
        with pytest.raises(EmbeddingError):
            crop_box((100, 100), bad)
    with pytest.raises(EmbeddingError):
        crop_box((100, 100), (300, 300, 400, 400))


def test_l2_normalise():
    v = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(v, [[0.6, 0.8], [0.0, 0.0]])


def test_shipped_cxr_model(cxr_embed_model, nih):
    from PIL import Image

    from models.embedding import CxrEmbedder

    folder, records = nih
    e = CxrEmbedder(threads=1)
    with Image.open(folder / records[0]["file"]) as im:
        px = np.asarray(im.convert("L"), np.float32) / 255.0
    v = e.embed(px)
    assert v.shape == (e.model.dim,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(v, e.embed(px), atol=1e-6)  # deterministic
    flipped = e.embed(px[::-1])
    assert float(v @ flipped) < 0.9999  # the network sees the image, not a constant
    r = e.embed_region(px, (100, 100, 200, 220))
    assert np.linalg.norm(r) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(EmbeddingError):
        e.embed(np.zeros((4,), np.float32))


def test_shipped_retrieval_model_card():
    """``cxr-embed`` ships with the package: weights match the card, metrics were measured."""
    from models.embedding import CxrEmbedder
    from models.registry import Registry

    entry = Registry().get("cxr-embed")
    entry.verify()
    m = entry.card.metrics["real_nih_heldout_patients"]["model"]["all_queries"]
    assert m["queries"] > 100 and 0 <= m["precision_at_k"] <= 1
    assert entry.card.extra["parity_max_abs_diff"] < 1e-4
    e = CxrEmbedder(threads=1, names=("cxr-embed",))
    v = e.embed(np.random.default_rng(0).random((300, 260)).astype(np.float32))
    assert e.model.dim == 128 and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)


def test_onnx_export_parity(tmp_path):
    """The retrieval network exported to ONNX gives the torch embedding (ORT CPU)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from training.embedding.export import export_onnx, parity
    from training.embedding.nets import EmbedNet, supcon_loss

    torch.manual_seed(0)
    model = EmbedNet().eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).random((3, 1, 256, 256)).astype(np.float32)
    assert parity(model, path, x) < 1e-4
    # the loss prefers embeddings where images sharing a label agree
    y = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]]), dim=1)
    bad = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0, 1], [1, 0.1], [0.1, 1]]), dim=1)
    assert supcon_loss(good, y) < supcon_loss(bad, y)


def test_retrieval_metrics():
    from training.embedding.metrics import retrieval_metrics

    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    perfect = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    m = retrieval_metrics(perfect, labels, ["a", "b", "c", "d"], k=1)
    assert m["precision_at_k"] == 1.0 and m["map"] == 1.0 and m["chance"] == pytest.approx(1 / 3)
    worst = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    assert retrieval_metrics(worst, labels, ["a", "b", "c", "d"], k=1)["precision_at_k"] == 0.0
    # same-group items are never counted
    assert retrieval_metrics(perfect, labels, ["a", "a", "c", "c"], k=1)["queries"] == 0
