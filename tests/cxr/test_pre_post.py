"""Pre/post-processing: model-grid results map back to the exact source pixels (asymmetric images)."""
from __future__ import annotations

import numpy as np
import pytest

from models.cxr.postprocess import laterality, lung_fields, post_process
from models.cxr.preprocess import CLASSES, prepare, prepare_mask
from models.geometry import letterbox_mask

H, W = 300, 520  # wide, non-square: a transposition or flip cannot pass


def _lungs_source() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[40:260, 60:230] = True  # image-left lung = patient's right
    m[40:260, 290:460] = True  # image-right lung = patient's left
    return m


def _maps(source_region: np.ndarray, cls: int, score: float = 0.9):
    seg = np.zeros((len(CLASSES), 256, 256), np.float32)
    seg[cls] = letterbox_mask(source_region, 256).astype(np.float32)
    scores = np.zeros(len(CLASSES), np.float32)
    scores[cls] = score
    lung = letterbox_mask(_lungs_source(), 256).astype(np.float32)
    return scores, seg, lung


def test_prepare_scales_content_and_zeroes_padding():
    img = np.linspace(0, 1000, H * W, dtype=np.float32).reshape(H, W)
    p = prepare(img)
    x0, y0, x1, y1 = p.content
    assert p.tensor.shape == (1, 1, 256, 256)
    assert (y0, y1) != (0, 256) and (x0, x1) == (0, 256)  # letterboxed vertically
    assert p.tensor[0, 0, :y0].max() == 0 and p.tensor[0, 0, y1:].max() == 0
    content = p.tensor[0, 0, y0:y1, x0:x1]
    assert content.min() == 0.0 and content.max() == 1.0
    assert content[-1].mean() > content[0].mean()  # bottom rows brighter, as in the source


def test_prepare_mask_follows_the_image_geometry():
    m = np.zeros((H, W), bool)
    m[10:60, 400:500] = True  # top right
    g = prepare_mask(m)
    ys, xs = np.nonzero(g)
    p = prepare(np.random.default_rng(0).random((H, W)).astype(np.float32))
    back = p.geometry.to_source(np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]]))
    assert np.allclose(back, [[400, 10], [500, 60]], atol=2.5)


def test_finding_box_and_contour_in_source_pixels():
    region = np.zeros((H, W), bool)
    region[60:120, 100:180] = True  # patient's right upper zone
    scores, seg, lung = _maps(region, CLASSES.index("nodule_mass"))
    geo = prepare(np.zeros((H, W), np.float32) + np.arange(W, dtype=np.float32)).geometry
    res = post_process(scores, 0.9, seg, lung, geo, {c: 0.5 for c in CLASSES})
    assert len(res.findings) == 1
    f = res.findings[0]
    assert f.label == "nodule_mass" and f.probability == pytest.approx(0.9)
    assert np.allclose(f.box, [100, 60, 180, 120], atol=1.0 / geo.scale + 0.01)
    c = np.asarray(f.contour)
    assert c[:, 0].min() >= 100 - 2 / geo.scale and c[:, 0].max() <= 180 + 2 / geo.scale
    assert c[:, 1].min() >= 60 - 2 / geo.scale and c[:, 1].max() <= 120 + 2 / geo.scale
    assert f.laterality == "right" and f.zone == "upper"
    d = f.to_dict()
    assert set(d) == {"label", "probability", "box", "contour", "laterality", "zone"}


def test_left_lower_and_bilateral_and_threshold():
    region = np.zeros((H, W), bool)
    region[200:250, 330:420] = True  # image right, low: patient's left lower zone
    scores, seg, lung = _maps(region, CLASSES.index("pleural_effusion"))
    geo = prepare(np.ones((H, W), np.float32)).geometry
    f = post_process(scores, 0.9, seg, lung, geo, {c: 0.5 for c in CLASSES}).findings[0]
    assert (f.laterality, f.zone) == ("left", "lower")
    assert post_process(scores, 0.9, seg, lung, geo, {c: 0.95 for c in CLASSES}).findings == []
    both = np.zeros((H, W), bool)
    both[120:170, 100:430] = True
    scores, seg, lung = _maps(both, CLASSES.index("interstitial_opacity"))
    f = post_process(scores, 0.9, seg, lung, geo, {c: 0.5 for c in CLASSES}).findings[0]
    assert (f.laterality, f.zone) == ("bilateral", "middle")


def test_finding_outside_the_lungs_is_dropped():
    region = np.zeros((H, W), bool)
    region[270:298, 240:280] = True  # below and between the lungs, beyond the margin
    scores, seg, lung = _maps(region, CLASSES.index("consolidation"))
    geo = prepare(np.ones((H, W), np.float32)).geometry
    res = post_process(scores, 0.9, seg, lung, geo, {c: 0.5 for c in CLASSES})
    assert res.findings == [] and res.dropped == 1


def test_lung_fields_split_by_side():
    lung = letterbox_mask(_lungs_source(), 256).astype(np.float32)
    lf = lung_fields(lung)
    assert np.nonzero(lf.right)[1].mean() < np.nonzero(lf.left)[1].mean()
    r = np.zeros((256, 256), bool)
    r[100:110, 20:30] = True
    assert laterality(r, lf) == "right"


def test_partial_sort_percentiles_equal_numpy():
    from models.cxr.preprocess import _percentiles

    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1000, 256 * 200):
        a = rng.random(n).astype(np.float32)
        np.testing.assert_allclose(_percentiles(a, (1.0, 99.0)), np.percentile(a, [1, 99]), atol=1e-7)


def test_two_step_shrink_stays_close_to_the_one_step_filter():
    from models.geometry import letterbox

    rng = np.random.default_rng(5)
    img = ndi_smooth(rng.random((1100, 900)).astype(np.float32))
    exact, lb1 = letterbox(img, 256)
    fast, lb2 = letterbox(img, 256, reducing_gap=2.0)
    assert lb1 == lb2
    assert np.abs(exact - fast).max() < 0.01 and np.abs(exact - fast).mean() < 1e-3


def ndi_smooth(a):
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(a, 3)


@pytest.mark.parametrize("shape", [(2048, 2048), (2500, 2048), (3001, 2477), (1024, 1024), (700, 900)])
def test_numpy_two_step_shrink_equals_pil_reducing_gap(shape):
    """letterbox(reducing_gap) does PIL's Image.resize(reducing_gap=2) with the box reduction in numpy."""
    from PIL import Image

    from models.geometry import _content_wh, _source_box, letterbox

    img = np.random.default_rng(6).random(shape).astype(np.float32)
    got, lb = letterbox(img, 256, reducing_gap=2.0)
    new_w, new_h = _content_wh(lb)
    want = np.asarray(Image.fromarray(img, mode="F").resize((new_w, new_h), Image.Resampling.BILINEAR,
                                                            box=_source_box(lb, new_w, new_h), reducing_gap=2.0))
    content = got[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w]
    np.testing.assert_allclose(content, want, atol=1e-6)


@pytest.mark.parametrize("kind", ["uniform", "clipped", "constant", "few_levels", "small"])
def test_tail_percentiles_are_exact(kind):
    """The bracketed order statistics equal numpy.percentile, also with long runs of equal values."""
    from models.cxr.preprocess import _percentiles

    rng = np.random.default_rng(3)
    x = {"uniform": rng.random(262144, dtype=np.float32),
         "clipped": np.clip(rng.normal(0.5, 0.5, 262144), 0, 1).astype(np.float32),  # window-clipped pixels
         "constant": np.full(70000, 0.25, np.float32),
         "few_levels": np.round(rng.random(65536) * 10).astype(np.float32),
         "small": rng.random(900).astype(np.float32)}[kind]
    for qs in ((1.0, 99.0), (0.5, 99.5), (50.0,), (0.0, 100.0)):
        np.testing.assert_allclose(_percentiles(x, qs), np.percentile(x.astype(np.float64), qs), atol=1e-6)


def test_tail_sample_is_not_fooled_by_row_structure():
    """A row-major image whose columns differ (a radiograph's left-right structure): the
    sample that brackets a tail percentile must see every column phase, so the fast path
    holds (a plain every-k-th sample saw one column in k and missed the bracket)."""
    from models.cxr.preprocess import _order_stats

    rng = np.random.default_rng(8)
    cols = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :]
    img = (0.8 * cols + 0.05 * rng.random((256, 256), dtype=np.float32)).astype(np.float32)
    flat = img.ravel()
    for q in (1.0, 99.0):
        i = int(np.floor(q / 100 * (flat.size - 1)))
        got = _order_stats(flat, [i, i + 1])
        assert got is not None
        want = np.sort(flat)
        assert got == {i: float(want[i]), i + 1: float(want[i + 1])}


def test_prepare_on_two_threads_is_identical():
    from models.cxr.preprocess import prepare

    img = ndi_smooth(np.random.default_rng(9).random((1203, 1001)).astype(np.float32))
    one = prepare(img, 256, fine_size=512, workers=1)
    two = prepare(img, 256, fine_size=512, workers=2)
    assert np.array_equal(one.tensor, two.tensor) and np.array_equal(one.fine, two.fine)
    assert one.geometry == two.geometry and one.content == two.content


@pytest.mark.parametrize("shape", [(2048, 2048), (2140, 1760), (1999, 2001), (3000, 2400)])
def test_prepare_from_stored_values_equals_prepare_from_pixels(shape):
    """A DICOM radiograph is prepared from its stored values (no full-size float image): same grids."""
    from models.cxr.preprocess import prepare
    from models.imaging import AffineGrey

    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    stored = ((np.sin(yy / 97.0) * np.cos(xx / 131.0) + 1) * 2000
              + np.random.default_rng(2).integers(0, 95, shape)).astype(np.uint16)
    grey = AffineGrey(stored, -1 / 3999, 1 + 47 / 3999)
    pixels = grey.full()
    for workers in (1, 2):
        want = prepare(pixels, 256, fine_size=512, workers=1)
        got = prepare(grey, 256, fine_size=512, workers=workers)
        assert np.array_equal(got.tensor, want.tensor) and np.array_equal(got.fine, want.fine)
        assert got.geometry == want.geometry and got.content == want.content
        coarse = prepare(grey, 256, workers=workers)
        assert np.array_equal(coarse.tensor, prepare(pixels, 256).tensor)


def test_regions_are_ranked_by_peak_with_boxes_of_the_whole_map():
    """Several regions of one class: the three highest peaks, each box where its pixels are.

    Post-processing labels only the bounding box of the thresholded pixels; the boxes
    must still be model-grid boxes (offset back), in peak order, tiny regions left out.
    """
    from scipy import ndimage as ndi

    seg = np.zeros((len(CLASSES), 256, 256), np.float32)
    cls = CLASSES.index("consolidation")
    spots = [((110, 60), 0.95, 5), ((150, 180), 0.7, 6), ((80, 200), 0.85, 4), ((200, 90), 0.6, 5), ((60, 100), 0.55, 0)]
    for (y, x), p, r in spots:
        seg[cls, y - r:y + r + 1, x - r:x + r + 1] = p  # the last one is a single pixel: too small
    scores = np.zeros(len(CLASSES), np.float32)
    scores[cls] = 0.9
    lung = np.zeros((256, 256), np.float32)
    lung[30:230, 30:120] = 1
    lung[30:230, 140:230] = 1
    geo = prepare(np.ones((256, 256), np.float32)).geometry  # identity letterbox
    res = post_process(scores, 0.9, seg, lung, geo, {c: 0.5 for c in CLASSES})
    lab, _ = ndi.label(seg[cls] >= 0.5 * 0.95)
    want = []
    for (y, x), p, r in sorted(spots[:4], key=lambda s: -s[1])[:3]:
        sl = ndi.find_objects(lab)[lab[y, x] - 1]
        want.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
    assert [list(map(float, f.box)) for f in res.findings] == want
    assert [f.probability for f in res.findings] == pytest.approx([0.9 * p / 0.95 for p in (0.95, 0.85, 0.7)])


def test_city_block_dilation_and_lung_overlap_equal_iterated_cross_dilation():
    """The one-pass replacements in post-processing give scipy's iterated dilation exactly."""
    from scipy import ndimage as ndi

    from models.cxr.nodule import dilate_city_block
    from models.cxr.postprocess import LUNG_MARGIN_PX, _lung_overlap

    rng = np.random.default_rng(0)
    for _ in range(300):
        m = rng.random(tuple(rng.integers(1, 40, 2))) < rng.uniform(0.001, 0.2)
        r = int(rng.integers(1, 6))
        assert np.array_equal(dilate_city_block(m, r), ndi.binary_dilation(m, iterations=r))
    for _ in range(300):
        lungs = rng.random((64, 64)) < rng.uniform(0.0, 0.03)
        h, w = rng.integers(1, 25, 2)
        y0, x0 = int(rng.integers(0, 64 - h)), int(rng.integers(0, 64 - w))
        region = rng.random((h, w)) < 0.7
        m = LUNG_MARGIN_PX
        ya, xa = max(y0 - m, 0), max(x0 - m, 0)
        near = ndi.binary_dilation(lungs[ya:y0 + h + m, xa:x0 + w + m], iterations=m)[y0 - ya:y0 - ya + h, x0 - xa:x0 - xa + w]
        want = float((region & near).sum()) / float(max(region.sum(), 1))
        assert _lung_overlap(region, lungs, y0, x0) == want
