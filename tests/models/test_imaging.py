from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from models.errors import UnsupportedInputError
from models.geometry import letterbox
from models.imaging import Radiograph, frontal_chest_skip_reason, load_radiograph, window_to_unit
from tests.models.dicom_factory import make_radiograph_ds, write

SAMPLE_DCM = "cxr/samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def ramp(h: int = 40, w: int = 60, top: int = 4095) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * top // (h * w - 1)).astype(np.uint16)


# ---- real data -----------------------------------------------------------------
def test_real_cr_jpeg_baseline(shared_data):
    r = load_radiograph(shared_data / SAMPLE_DCM)
    assert r.source == "dicom" and r.modality == "CR" and r.view_position == "PA"
    assert r.pixels.shape == (1024, 1024) and r.pixels.dtype == np.float32
    assert 0.0 <= r.pixels.min() and r.pixels.max() <= 1.0 and r.pixels.std() > 0.1
    assert r.pixel_spacing_mm == (0.168, 0.168) and r.spacing_source == "PixelSpacing"
    assert frontal_chest_skip_reason(r) is None
    # a chest film: the lungs (upper-middle, left and right of the spine) are darker than the mediastinum
    p = r.pixels
    lungs = (p[300:600, 200:400].mean() + p[300:600, 624:824].mean()) / 2
    assert lungs < p[300:600, 462:562].mean()


def test_real_pngs(shared_data):
    for name in ("00000001_000.png", "00027426_000.png"):
        r = load_radiograph(shared_data / "cxr" / "samples" / name)
        assert r.source == "image" and r.pixels.shape == (512, 512)
        assert r.pixel_spacing_mm is None and frontal_chest_skip_reason(r) is None
        assert r.pixels.max() <= 1.0 and r.pixels.std() > 0.05


def test_real_dicom_from_dataset_object(shared_data):
    import pydicom

    ds = pydicom.dcmread(shared_data / SAMPLE_DCM)
    assert load_radiograph(ds).pixels.shape == (1024, 1024)


# ---- header handling -----------------------------------------------------------
def test_monochrome1_is_inverted(tmp_path):
    stored = ramp()
    m2 = load_radiograph(write(make_radiograph_ds(stored), tmp_path / "m2.dcm"))
    m1 = load_radiograph(write(make_radiograph_ds(stored, photometric="MONOCHROME1"), tmp_path / "m1.dcm"))
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-6)
    assert m2.pixels[0, 0] == 0.0 and m2.pixels[-1, -1] == 1.0  # min-max without VOI
    assert m1.pixels[0, 0] == 1.0  # MONOCHROME1: minimum shows white
    assert m1.photometric == "MONOCHROME1"


def test_window_linear_follows_ps3_3(tmp_path):
    stored = ramp()
    r = load_radiograph(write(make_radiograph_ds(stored, WindowCenter=2048, WindowWidth=1024), tmp_path / "w.dcm"))
    assert r.window == (2048.0, 1024.0)
    x = stored.astype(np.float64)
    expected = np.clip((x - 2047.5) / 1023 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(r.pixels, expected, atol=1e-5)
    # multi-valued window: the first one is used
    r2 = load_radiograph(make_radiograph_ds(stored, WindowCenter=[2048, 100], WindowWidth=[1024, 50]))
    np.testing.assert_allclose(r2.pixels, r.pixels)


def test_window_functions():
    x = np.array([0.0, 50.0, 100.0], dtype=np.float32)
    np.testing.assert_allclose(window_to_unit(x, 50, 100, "LINEAR_EXACT"), [0.0, 0.5, 1.0], atol=1e-6)
    s = window_to_unit(x, 50, 100, "SIGMOID")
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-4 * (x - 50) / 100)), rtol=1e-6)
    with pytest.raises(UnsupportedInputError):
        window_to_unit(x, 50, 0.5, "LINEAR")
    with pytest.raises(UnsupportedInputError):
        window_to_unit(x, 50, 10, "CUBIC")


def test_modality_rescale_then_window(tmp_path):
    stored = ramp()
    ds = make_radiograph_ds(stored, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=2000)
    r = load_radiograph(ds)
    x = stored.astype(np.float64) * 2 - 1000
    np.testing.assert_allclose(r.pixels, np.clip((x - 2999.5) / 1999 + 0.5, 0, 1), atol=1e-5)


def test_voi_lut_sequence(tmp_path):
    stored = (np.arange(40 * 60).reshape(40, 60) % 256).astype(np.uint16)
    ds = make_radiograph_ds(stored, bits_stored=8)
    item = Dataset()
    lut = (255 - np.arange(256)).astype(np.uint16)  # an inverting LUT makes the effect obvious
    item.LUTDescriptor = [256, 0, 8]
    item.LUTExplanation = "inverse"
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data as US (PS3.3 C.11.2.1.1)
    ds.VOILUTSequence = [item]
    ds.WindowCenter, ds.WindowWidth = 128, 256  # the LUT takes precedence
    r = load_radiograph(write(ds, tmp_path / "lut.dcm"))
    np.testing.assert_allclose(r.pixels, (255 - stored) / 255.0, atol=1e-6)
    assert "VOI LUT" in r.voi and r.window is None


@pytest.mark.parametrize("tags,expected,source", [
    ({"PixelSpacing": [0.15, 0.16]}, (0.15, 0.16), "PixelSpacing"),
    ({"ImagerPixelSpacing": [0.2, 0.2]}, (0.2, 0.2), "ImagerPixelSpacing"),
    ({"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.25}, (0.16, 0.16),
     "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"),
    ({"ImagerPixelSpacing": [0.2, 0.2], "PixelSpacing": [0.14, 0.14]}, (0.14, 0.14), "PixelSpacing"),
    ({}, None, ""),
])
def test_pixel_spacing(tmp_path, tags, expected, source):
    r = load_radiograph(write(make_radiograph_ds(ramp(), **tags), tmp_path / "s.dcm"))
    if expected is None:
        assert r.pixel_spacing_mm is None
    else:
        np.testing.assert_allclose(r.pixel_spacing_mm, expected)
    assert r.spacing_source == source


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode_losslessly(tmp_path, syntax):
    stored = ramp()
    ds = make_radiograph_ds(stored, WindowCenter=2048, WindowWidth=4096)
    plain = load_radiograph(ds).pixels
    ds.compress(syntax)
    r = load_radiograph(write(ds, tmp_path / "c.dcm"))
    np.testing.assert_array_equal(r.pixels, plain)


# ---- skip reasons --------------------------------------------------------------
@pytest.mark.parametrize("kwargs,needle", [
    ({"view": "LL"}, "lateral"), ({"view": "RL"}, "lateral"), ({"view": "LATERAL"}, "lateral"),
    ({"view": "RLO"}, "oblique"), ({"view": "LLD"}, "decubitus"),
    ({"body_part": "HAND"}, "HAND"), ({"modality": "CT"}, "CT"), ({"modality": "MG"}, "MG"),
    ({"view": None, "SeriesDescription": "Chest LAT"}, "lateral"),
])
def test_skip_reasons(kwargs, needle):
    r = load_radiograph(make_radiograph_ds(ramp(), **kwargs))
    reason = frontal_chest_skip_reason(r)
    assert reason is not None and needle.lower() in reason.lower()


@pytest.mark.parametrize("kwargs", [{"view": "PA"}, {"view": "AP"}, {"view": None}, {"body_part": None},
                                    {"modality": "CR", "body_part": "THORAX"}])
def test_frontal_chest_is_accepted(kwargs):
    assert frontal_chest_skip_reason(load_radiograph(make_radiograph_ds(ramp(), **kwargs))) is None


def test_png_without_header_is_never_skipped():
    assert frontal_chest_skip_reason(Radiograph(pixels=np.zeros((4, 4), np.float32), source="image")) is None


# ---- bad input -----------------------------------------------------------------
def test_bad_inputs(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    with pytest.raises(UnsupportedInputError, match="not a readable"):
        load_radiograph(junk)
    with pytest.raises(UnsupportedInputError, match="no such file"):
        load_radiograph(tmp_path / "missing.dcm")
    ds = make_radiograph_ds(ramp())
    del ds.PixelData
    with pytest.raises(UnsupportedInputError, match="no pixel data"):
        load_radiograph(ds)
    ds = make_radiograph_ds(ramp())
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(UnsupportedInputError, match="Photometric"):
        load_radiograph(ds)
    ds = make_radiograph_ds(ramp())
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(UnsupportedInputError, match="cannot decode"):
        load_radiograph(ds)


def test_asymmetric_dicom_through_letterbox_keeps_orientation(tmp_path):
    """A mark in the top-left of the stored image stays top-left after intake and letterbox."""
    stored = np.zeros((300, 200), dtype=np.uint16)
    stored[20:80, 10:30] = 4000  # tall bar, top-left
    stored[70:80, 10:90] = 4000  # foot to the right
    r = load_radiograph(write(make_radiograph_ds(stored, photometric="MONOCHROME1"), tmp_path / "a.dcm"))
    dark = r.pixels < 0.5  # MONOCHROME1: the high stored values are shown dark
    assert dark[50, 20] and not dark[50, 150] and not dark[250, 20]
    out, lb = letterbox(1.0 - r.pixels, 100)
    ys, xs = np.nonzero(out > 0.5)
    box = lb.box_to_source([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_allclose(box, [10, 20, 90, 80], atol=1 / lb.scale)


def test_signed_rescaled_data_min_max_matches_direct_formula():
    """The lookup-table path equals the element-wise pipeline (signed data, rescale, no VOI)."""
    rng = np.random.default_rng(3)
    stored = rng.integers(-1500, 2500, size=(50, 70)).astype(np.int16)
    ds = make_radiograph_ds(np.zeros((50, 70)), bits_stored=16, RescaleSlope=0.5, RescaleIntercept=100)
    ds.PixelRepresentation = 1
    ds.PixelData = stored.tobytes()
    r = load_radiograph(ds)
    v = stored.astype(np.float64) * 0.5 + 100
    np.testing.assert_allclose(r.pixels, (v - v.min()) / (v.max() - v.min()), atol=1e-6)
    assert r.voi.startswith("min-max")


def test_dicom_without_preamble(tmp_path):
    ds = make_radiograph_ds(ramp(), WindowCenter=2048, WindowWidth=1024)
    ref = load_radiograph(ds).pixels
    path = tmp_path / "no_preamble.bin"
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(load_radiograph(path).pixels, ref)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("tags", [
    {"WindowCenter": 1800, "WindowWidth": 900},
    {"WindowCenter": 1800, "WindowWidth": 900, "VOILUTFunction": "LINEAR_EXACT"},
    {"WindowCenter": 1800, "WindowWidth": 900, "VOILUTFunction": "SIGMOID"},
    {"WindowCenter": -500, "WindowWidth": 1500, "RescaleSlope": -1.5, "RescaleIntercept": 1000},
    {"RescaleSlope": -2, "RescaleIntercept": 10},
    {"RescaleSlope": 3, "RescaleIntercept": -7},
    {},
])
def test_fast_paths_equal_the_elementwise_pipeline(photometric, tags):
    """The affine and lookup-table paths give the element-wise PS3.4 N.2.1 result."""
    from models.imaging import _grayscale

    rng = np.random.default_rng(7)
    stored = rng.integers(0, 4096, size=(37, 53)).astype(np.uint16)
    ds = make_radiograph_ds(stored, photometric=photometric, **tags)
    expected, window, voi = _grayscale(stored.astype(np.int64), ds, photometric, None)
    r = load_radiograph(ds)
    np.testing.assert_allclose(r.pixels, expected, atol=2e-6)
    assert r.window == window and r.voi == voi


# ---- stored values straight to the model grid (AffineGrey) ---------------------------
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_affine_dicom_pixels_are_computed_on_first_use(photometric):
    """An affine grayscale pipeline keeps the stored values; ``pixels`` appears when read, identical."""
    from models.imaging import AffineGrey, _grayscale

    stored = np.random.default_rng(3).integers(0, 4096, size=(64, 48)).astype(np.uint16)
    ds = make_radiograph_ds(stored, photometric=photometric, WindowCenter=2000, WindowWidth=3001)
    r = load_radiograph(ds)
    assert isinstance(r.grey, AffineGrey)
    assert isinstance(r.image_source(), AffineGrey)  # nothing computed yet
    assert r.shape == (64, 48) and r.__dict__.get("_pixels") is None
    expected, _, _ = _grayscale(stored.astype(np.int64), ds, photometric, None)
    np.testing.assert_allclose(r.pixels, expected, atol=2e-6)
    assert r.pixels is r.pixels and r.image_source() is r.pixels  # computed once, then reused
    assert np.array_equal(np.asarray(r.grey), r.pixels)


@pytest.mark.parametrize("shape", [(2048, 2048), (2049, 1023), (7, 9), (301, 1)])
@pytest.mark.parametrize("factors", [(2, 2), (4, 4), (3, 2), (1, 2), (2, 1)])
def test_affine_grey_box_reduce_equals_reducing_the_float_image(shape, factors):
    """Block by block from the stored values, on one or two threads: bit for bit the same."""
    from concurrent.futures import ThreadPoolExecutor

    from models.geometry import box_reduce
    from models.imaging import AffineGrey

    stored = np.random.default_rng(5).integers(0, 4096, size=shape).astype(np.uint16)
    grey = AffineGrey(stored, -1 / 3999, 1 + 47 / 3999)
    want = box_reduce(grey.full(), *factors)
    with ThreadPoolExecutor(1) as pool:
        for p in (None, pool):
            assert np.array_equal(grey.box_reduce(*factors, pool), want)
