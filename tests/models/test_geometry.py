from __future__ import annotations

import numpy as np
import pytest

from models.geometry import Letterbox, letterbox, letterbox_mask, unletterbox


def asymmetric(h: int, w: int) -> np.ndarray:
    """An image whose every flip or transpose differs: an L-shaped bright mark near the top-left."""
    img = np.zeros((h, w), dtype=np.float32)
    img[h // 10: h // 10 + h // 5, w // 10: w // 10 + w // 20] = 1.0   # vertical bar
    img[h // 10 + h // 5 - h // 20: h // 10 + h // 5, w // 10: w // 10 + w // 4] = 1.0  # foot to the right
    return img


@pytest.mark.parametrize("shape,size", [((300, 200), 128), ((200, 300), 128), ((1024, 1024), 256),
                                        ((333, 777), 256), ((2000, 1500), 256)])
def test_geometry_no_flip_and_exact_mapping(shape, size):
    img = asymmetric(*shape)
    out, lb = letterbox(img, size)
    assert out.shape == (size, size) and out.dtype == np.float32
    # padding is symmetric to within one pixel and zero
    new_w, new_h = round(shape[1] * lb.scale), round(shape[0] * lb.scale)
    assert abs(lb.pad_x - (size - new_w) / 2) <= 1 and abs(lb.pad_y - (size - new_h) / 2) <= 1
    assert out[:, :lb.pad_x].max(initial=0) == 0 and out[:lb.pad_y].max(initial=0) == 0
    # the bright pixel centroid maps back to the source centroid (no flip, exact transform)
    ys, xs = np.nonzero(img > 0.5)
    src_c = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]])
    w = out.astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    model_c = np.array([[(w * (xx + 0.5)).sum() / w.sum(), (w * (yy + 0.5)).sum() / w.sum()]])
    np.testing.assert_allclose(lb.to_source(model_c), src_c, atol=1.0 / lb.scale)
    np.testing.assert_allclose(lb.to_model(lb.to_source(model_c)), model_c, atol=1e-9)
    # round trip back to the source grid: the mark is where it was
    back = unletterbox(out, lb)
    assert back.shape == shape
    assert np.corrcoef(back.ravel(), img.ravel())[0, 1] > 0.9


def test_to_source_known_values():
    lb = Letterbox.for_shape(200, 400, 100)  # scale 0.25, content 100x50, pad_y 25
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.25, 0, 25)
    np.testing.assert_allclose(lb.to_source([[0, 25], [100, 75], [50, 50]]), [[0, 0], [400, 200], [200, 100]])
    assert lb.box_to_source([10, 0, 20, 200]) == [40.0, 0.0, 80.0, 200.0]  # clipped to the image
    assert lb.box_to_model([40, 100, 80, 200]) == [10.0, 50.0, 20.0, 75.0]


def test_letterbox_mask_nearest_and_same_geometry():
    mask = np.zeros((300, 200), dtype=np.uint8)
    mask[30:90, 20:60] = 3
    out = letterbox_mask(mask, 100)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 3}
    img_out, lb = letterbox(mask.astype(np.float32), 100)
    assert (out > 0).sum() == pytest.approx((img_out > 1.5).sum(), rel=0.15)
    ys, xs = np.nonzero(out)
    np.testing.assert_allclose(lb.to_source([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]]),
                               [[20, 30], [60, 90]], atol=1 / lb.scale)
    b = letterbox_mask(mask > 0, 100)
    assert b.dtype == np.bool_ and (b == (out > 0)).all()


def test_unletterbox_nearest_for_labels():
    lb = Letterbox.for_shape(300, 200, 100)
    labels = np.zeros((100, 100), dtype=np.int32)
    labels[10:20, 30:40] = 2
    back = unletterbox(labels, lb)
    assert back.shape == (300, 200) and set(np.unique(back)) == {0, 2}
    with pytest.raises(ValueError):
        unletterbox(np.zeros((50, 50), np.float32), lb)


def test_bad_inputs():
    with pytest.raises(ValueError):
        letterbox(np.zeros((4, 4, 3), np.float32), 8)
    with pytest.raises(ValueError):
        Letterbox.for_shape(0, 10, 8)


def _box_reduce_reference(image: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """The block mean with numpy.sum over the block axes (rows, then columns)."""
    h, w = image.shape
    nh, nw = -(-h // ky), -(-w // kx)
    padded_rows = [image[i * ky:(i + 1) * ky].sum(axis=0, dtype=np.float32) for i in range(nh)]
    rows = np.stack(padded_rows)
    out = np.stack([rows[:, j * kx:(j + 1) * kx].sum(axis=1, dtype=np.float32) for j in range(nw)], axis=1)
    counts = np.outer([min(ky, h - i * ky) for i in range(nh)], [min(kx, w - j * kx) for j in range(nw)])
    return out / counts


def test_box_reduce_is_the_block_mean():
    from models.geometry import box_reduce

    rng = np.random.default_rng(1)
    for _ in range(200):
        h, w = rng.integers(1, 60, 2)
        ky, kx = rng.integers(1, 7, 2)
        img = rng.random((h, w)).astype(np.float32)
        np.testing.assert_allclose(box_reduce(img, ky, kx), _box_reduce_reference(img, ky, kx), rtol=1e-6)
    # the chest X-ray grids: sums in order, the same numbers as numpy.sum over the block axis
    img = rng.random((1024, 1024)).astype(np.float32)
    for k in (2, 4):
        blocks = img.reshape(1024 // k, k, 1024).sum(axis=1)
        want = blocks.reshape(1024 // k, 1024 // k, k).transpose(2, 0, 1)
        acc = want[0].copy()
        for j in range(1, k):
            acc += want[j]
        assert np.array_equal(box_reduce(img, k, k), acc * np.float32(1.0 / (k * k)))


def test_float_image_maps_the_array_without_a_copy():
    import gc

    from PIL import Image

    from models.geometry import float_image

    a = np.random.default_rng(4).random((37, 53)).astype(np.float32)
    im = float_image(a.copy())  # the only reference to the array is the image's
    gc.collect()
    assert im.mode == "F" and im.size == (53, 37)
    assert np.array_equal(np.asarray(im), a)
    ref = Image.fromarray(a, mode="F")
    box = (1.5, 2.0, 50.25, 33.0)
    assert np.array_equal(np.asarray(im.resize((20, 13), Image.Resampling.BILINEAR, box=box)),
                          np.asarray(ref.resize((20, 13), Image.Resampling.BILINEAR, box=box)))
    strided = float_image(a[:, ::2])  # not contiguous: copied, same values
    assert np.array_equal(np.asarray(strided), a[:, ::2])


def test_box_to_source_equals_the_array_transform():
    """box_to_source (Python floats) gives exactly to_source + clip on arrays."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, w, size = int(rng.integers(50, 3000)), int(rng.integers(50, 3000)), int(rng.choice([256, 512]))
        lb = Letterbox.for_shape(h, w, size)
        box = rng.uniform(-5, size + 5, 4)
        pts = lb.to_source(box.reshape(2, 2))
        assert lb.box_to_source(box, clip=False) == [float(v) for v in pts.reshape(-1)]
        pts[:, 0] = np.clip(pts[:, 0], 0, lb.src_w)
        pts[:, 1] = np.clip(pts[:, 1], 0, lb.src_h)
        assert lb.box_to_source(box) == [float(v) for v in pts.reshape(-1)]
