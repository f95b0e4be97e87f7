"""Pure display pipeline: LUTs, windows, transforms, measurements, orientation."""
from __future__ import annotations

import numpy as np
import pytest

from workstation.core import display
from workstation.core.display import Window


def test_window_linear_function_matches_ps33_c11212():
    v = np.array([[-1000.0, 39.5, 40.0, 1000.0]])
    out = display.window_to_uint8(v, Window(40, 400))
    assert out[0, 0] == 0 and out[0, 3] == 255
    assert 126 <= out[0, 1] <= 129
    lo = 40 - 0.5 - (400 - 1) / 2
    assert display.window_to_uint8(np.array([[lo - 0.01]]), Window(40, 400))[0, 0] == 0


def test_monochrome1_inverts():
    v = np.array([[0.0, 100.0]])
    w = Window(50, 100)
    normal = display.window_to_uint8(v, w)
    inv = display.window_to_uint8(v, w, invert=True)
    assert normal[0, 0] == 0 and inv[0, 0] == 255
    assert np.array_equal(inv, 255 - normal)


def test_modality_lut():
    out = display.apply_modality_lut(np.array([[0, 1000]], dtype=np.uint16), 1.0, -1024.0)
    assert out.dtype == np.float32 and out.tolist() == [[-1024.0, -24.0]]


def test_window_rejects_bad_width():
    with pytest.raises(display.DisplayError, match="width"):
        Window(0, 0)


def test_presets_and_default():
    default = Window(2000, 4000)
    assert display.resolve_preset("default", default) is default
    assert display.resolve_preset("lung", default) == Window(-600, 1500)
    for name in display.PRESET_ORDER[1:]:
        assert name in display.PRESETS
    with pytest.raises(display.DisplayError, match="unknown preset"):
        display.resolve_preset("brain", default)


def test_window_from_dataset_uses_voi_then_percentiles():
    class DS:
        WindowCenter = [300, 500]
        WindowWidth = [600, 800]
    assert display.window_from_dataset(DS()) == Window(300, 600)
    vals = np.linspace(0, 1000, 10000).reshape(100, 100)
    w = display.window_from_dataset(object(), vals)
    assert 450 < w.center < 550 and 900 < w.width < 1000


def test_drag_window_direction():
    w = display.drag_window(Window(100, 200), dx=10, dy=-5, sensitivity=2)
    assert w == Window(90, 220)
    assert display.drag_window(Window(100, 2), -100, 0, 1).width == 1


def test_fit_zoom_pan_roundtrip():
    t = display.fit_transform(rows=200, cols=100, view_w=400, view_h=400)
    assert t.zoom == 2.0 and t.offset_x == 100 and t.offset_y == 0
    x, y = t.view_to_image(*t.image_to_view(13.0, 57.0))
    assert (x, y) == pytest.approx((13.0, 57.0))
    z = t.zoomed(2.0, 200, 200)
    assert z.view_to_image(200, 200) == pytest.approx(t.view_to_image(200, 200))
    c = t.centred_on(10, 20, 400, 400)
    assert c.image_to_view(10, 20) == pytest.approx((200, 200))
    p = t.panned(5, -3)
    assert p.image_to_view(0, 0) == pytest.approx((105, -3))


def test_distance_uses_row_and_column_spacing():
    assert display.distance_mm((0, 0), (10, 0), (0.5, 0.2)) == pytest.approx(2.0)
    assert display.distance_mm((0, 0), (0, 10), (0.5, 0.2)) == pytest.approx(5.0)
    assert display.distance_mm((0, 0), (3, 4), (1.0, 1.0)) == pytest.approx(5.0)
    assert display.distance_mm((0, 0), (3, 4), None) is None


def test_pixel_readout():
    v = np.array([[-1000.0, 0.0], [35.0, 2.5]])
    assert display.pixel_readout(v, 0, 1, "CT") == "x 0 y 1  HU 35"
    assert display.pixel_readout(v, 1.2, 0.9, "CR") == "x 1 y 1  value 2.50"
    assert display.pixel_readout(v, 5, 0) is None


def test_orientation_axial_and_coronal():
    assert display.orientation_labels_from_iop([1, 0, 0, 0, 1, 0]) == \
        {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    assert display.orientation_labels_from_iop([1, 0, 0, 0, 0, -1]) == \
        {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    oblique = display.orientation_labels_from_iop([0.8, 0.6, 0, 0, 0, -1])
    assert oblique["right"] == "LP"


def test_orientation_patient_orientation_pa_chest():
    lab = display.orientation_labels_from_patient_orientation(["L", "F"])
    assert lab == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    assert display.orientation_labels_from_patient_orientation("R\\F")["left"] == "L"
    with pytest.raises(display.DisplayError):
        display.orientation_labels_from_patient_orientation(["X", "F"])


def test_heatmap_and_mask_rgba():
    prob = np.array([[0.0, 0.5, 1.0]])
    rgba = display.heatmap_rgba(prob, 0.5)
    assert rgba.shape == (1, 3, 4) and rgba[0, 0, 3] == 0 and rgba[0, 2, 3] == 127
    m = display.mask_rgba(np.array([[0, 1]]), 1.0, (1, 2, 3))
    assert m[0, 1].tolist() == [1, 2, 3, 255] and m[0, 0, 3] == 0


def test_no_flip_in_windowing():
    img = np.zeros((4, 6), np.float32)
    img[0, 5] = 100  # top-right marker
    out = display.window_to_uint8(img, Window(50, 100))
    assert out[0, 5] == 255 and out[3, 0] == 0 and out.shape == (4, 6)


def test_non_square_pixels_keep_physical_proportions():
    t = display.fit_transform(rows=100, cols=100, view_w=400, view_h=400, aspect=display.pixel_aspect((0.5, 0.25)))
    assert t.aspect == 2.0
    w = t.image_to_view(100, 0)[0] - t.image_to_view(0, 0)[0]
    h = t.image_to_view(0, 100)[1] - t.image_to_view(0, 0)[1]
    assert h == pytest.approx(2 * w)  # 100 rows x 0.5 mm is twice as tall as 100 columns x 0.25 mm
    assert t.view_to_image(*t.image_to_view(31.0, 17.0)) == pytest.approx((31.0, 17.0))
    z = t.zoomed(1.7, 120, 80)
    assert z.aspect == 2.0 and z.view_to_image(120, 80) == pytest.approx(t.view_to_image(120, 80))
    c = t.centred_on(10, 20, 400, 400)
    assert c.image_to_view(10, 20) == pytest.approx((200, 200))
    assert display.pixel_aspect(None) == 1.0


def test_percent_text_never_reads_zero_for_a_positive_output():
    from workstation.core.display import percent_text

    assert [percent_text(p) for p in (0.93, 0.01, 0.0049, 0.0)] == ["93%", "1%", "0.49%", "0%"]
