"""Side-by-side pairing of original and derived series, and CT findings placed on their slices (pure)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_node import samples
from workstation.core import compare, display
from workstation.core.review import ReviewItem
from workstation.core.session import ReadingSession
from workstation.core.review import ReviewState
from workstation.core.study import LoadedStudy, load_series


def _ct(n=6, size=32, seed=4):
    return samples.ct_series(n_slices=n, size=size, seed=seed, patient_id="CMP-1")


def _derived(src: list[Dataset], with_refs: bool, offset: float = 0.0) -> list[Dataset]:
    out = []
    for i, ds in enumerate(src):
        d = copy.deepcopy(ds)
        d.SeriesInstanceUID = "2.25.777"
        d.SOPInstanceUID = f"2.25.777{i}"
        d.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        d.DerivationDescription = "test derived"
        if with_refs:
            ref = Dataset()
            ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            d.SourceImageSequence = [ref]
        arr = ds.pixel_array.astype(np.int32) + 7  # different pixels, same geometry
        d.PixelData = np.clip(arr, 0, 65535).astype(ds.pixel_array.dtype).tobytes()
        out.append(d)
    return out


@pytest.mark.parametrize("with_refs", [True, False])
def test_derived_series_pairs_slice_by_slice(with_refs):
    src = _ct()
    shuffled = _derived(src, with_refs)[::-1]  # stored in another order: pairing must not depend on it
    orig, der = load_series(src), load_series(shuffled)
    assert der.derived and der.derivation == "test derived" and not orig.derived
    m = compare.slice_map(orig, der)
    assert all(j is not None for j in m)
    for i, j in enumerate(m):
        assert der.positions[j] == pytest.approx(orig.positions[i])
        np.testing.assert_allclose(der.frames[j], orig.frames[i] + 7 * float(src[0].RescaleSlope))
    pairs = compare.find_pairs(LoadedStudy("1.2", [orig, der]))
    assert list(pairs) == [0] and pairs[0].derived == 1 and list(pairs[0].slice_map) == m


def test_unrelated_series_do_not_pair():
    a = load_series(_ct(seed=4))
    other = _ct(seed=9)
    for ds in other:
        ds.ImagePositionPatient = [float(v) + (50.0 if k == 2 else 0.0) for k, v in enumerate(ds.ImagePositionPatient)]
    b = load_series(_derived(other, with_refs=False))
    assert compare.find_pairs(LoadedStudy("1.2", [a, b])) == {}
    # references to images of another series never pair, whatever the positions
    c = load_series(_derived(_ct(seed=5), with_refs=True))
    assert compare.find_pairs(LoadedStudy("1.2", [a, c])) == {}


def test_session_side_by_side_shares_slice_window_and_view():
    src = _ct()
    orig, der = load_series(src), load_series(_derived(src, with_refs=True))
    s = ReadingSession(LoadedStudy("1.2", [orig, der]), ReviewState([]))
    events = []
    s.subscribe(events.append)
    assert not s.compare_active and s.compare_values() is None
    assert s.toggle_compare() and "compare" in events
    s.fit(1000, 500)
    half = display.fit_transform(32, 32, 500, 500, display.pixel_aspect(orig.spacing))
    assert s.pane_width(1000) == 500 and s.transform.zoom == pytest.approx(half.zoom)
    for idx in range(orig.n):
        s.set_slice(idx)
        np.testing.assert_allclose(s.compare_values(), der.frames[s.pair.derived_index(idx)])
    s.apply_preset("lung")
    expect = display.window_to_uint8(der.frames[s.pair.derived_index(s.slice_index)], s.window, der.invert)
    np.testing.assert_array_equal(s.compare_image8(), expect)
    assert not s.toggle_compare() and s.pane_width(1000) == 1000
    s.set_series(1)  # the derived series itself has no partner: the toggle stays off
    assert not s.toggle_compare()


def test_ct_finding_centre_goes_to_its_slice_and_box():
    from models.ct.findings import describe
    from models.ct.volume import CTVolume

    src = _ct(n=8, size=64)
    series = load_series(src)
    mask = np.zeros((series.n, 64, 64), bool)
    mask[5, 20:27, 40:49] = True  # a lesion on frame 5, rows 20-26, cols 40-48
    hu = series.frames
    first = src[int(np.argmin([float(d.ImagePositionPatient[2]) for d in src]))]
    dz = abs(series.positions[1] - series.positions[0])
    vol = CTVolume(hu, (dz, series.spacing[0], series.spacing[1]), np.asarray(first.ImagePositionPatient, float))
    finding = {"label": "nodule", **describe(mask, hu, vol)}
    placed = compare.place_ct_finding(finding, series)
    assert placed is not None and placed["frame"] == 5 and placed["sop_uid"] == series.sop_uids[5]
    x1, y1, x2, y2 = placed["box"]
    assert x1 < 40 and x2 > 48 and y1 < 20 and y2 > 26 and (x1 + x2) / 2 == pytest.approx(44, abs=0.6)
    it = ReviewItem(id="n1", label="nodule", ai=finding, sop_uid=series.sop_uids[series.n // 2])
    kept = ReviewItem(id="n2", label="nodule", ai=finding, box=[1, 1, 2, 2])  # edited box: left alone
    assert compare.place_ct_findings(LoadedStudy("1.2", [series]), [it, kept]) == 1
    assert it.frame == 5 and it.box == placed["box"] and kept.box == [1, 1, 2, 2]
    far = dict(finding, centre_patient_mm=[0.0, 0.0, series.positions[-1] + 100.0])
    assert compare.place_ct_finding(far, series) is None
