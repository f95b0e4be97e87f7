"""De-identification (PS3.15 Annex E Basic Profile) leaves no identifying value."""
from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from io import BytesIO

import numpy as np
import pydicom
import pytest

from labeling_tool.core.deid import (
    DeidKey,
    DeidOptions,
    deidentify,
    deidentify_folder,
    detect_text_boxes,
    is_deidentified,
    load_profile,
    profile_action,
)
from labeling_tool.core.errors import DeidError, KeyFileError

from .conftest import make_identified_dataset, original_values, surviving_values


def _roundtrip(ds):
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    buf.seek(0)
    return pydicom.dcmread(buf, force=True)


def test_profile_table_covers_the_standard():
    rows = load_profile()
    assert len(rows) > 600
    assert profile_action(0x00100010) == "Z"  # Patient's Name
    assert profile_action(0x00100030) == "Z"  # Patient's Birth Date
    assert profile_action(0x0020000D) == "U"  # Study Instance UID
    assert profile_action(0x00081040) == "X"  # Institutional Department Name
    assert profile_action(0x60024000) == "X"  # Overlay Comments, repeating group 60xx
    assert profile_action(0x00280010) is None  # Rows is not named


@pytest.mark.parametrize("shift", [False, True])
def test_no_identifying_value_survives(shift):
    ds = make_identified_dataset()
    originals = original_values(ds)
    assert len(originals) > 500  # every named attribute carries a value
    key = DeidKey.new()
    out = _roundtrip(deidentify(ds, key, DeidOptions(shift_dates=shift)))
    left = surviving_values(out, originals)
    if shift:  # Modified Dates option: dates move by whole days, so times of day stay
        left = [h for h in left if not (h.endswith("=040506") and ("Time" in h or "TM" in h))]
    assert left == []
    assert not any(e.tag.is_private for e in out.iterall())
    assert is_deidentified(out)
    assert not is_deidentified(ds)
    codes = {i.CodeValue for i in out.DeidentificationMethodCodeSequence}
    assert "113100" in codes and (("113107" in codes) == shift)
    # the pixels are untouched by the Basic Profile
    assert np.array_equal(out.pixel_array, ds.pixel_array)


def test_uids_remapped_consistently_across_files_and_nesting():
    key = DeidKey.new()
    a = make_identified_dataset("PID-A", sop_uid="1.2.826.0.1.3680043.10.777.1")
    b = make_identified_dataset("PID-A", sop_uid="1.2.826.0.1.3680043.10.777.2")
    b.StudyInstanceUID = a.StudyInstanceUID
    b.FrameOfReferenceUID = a.FrameOfReferenceUID
    b.ReferencedImageSequence[0].ReferencedSOPInstanceUID = a.SOPInstanceUID
    oa, ob = deidentify(a, key), deidentify(b, key)
    assert oa.StudyInstanceUID == ob.StudyInstanceUID != a.StudyInstanceUID
    assert oa.FrameOfReferenceUID == ob.FrameOfReferenceUID
    assert ob.ReferencedImageSequence[0].ReferencedSOPInstanceUID == oa.SOPInstanceUID
    assert oa.SOPInstanceUID != ob.SOPInstanceUID
    assert oa.file_meta.MediaStorageSOPInstanceUID == oa.SOPInstanceUID
    assert oa.PatientID == ob.PatientID and oa.PatientID.startswith("ANON")
    # deterministic per key, different across keys
    assert deidentify(a, key).SOPInstanceUID == oa.SOPInstanceUID
    assert deidentify(a, DeidKey.new()).SOPInstanceUID != oa.SOPInstanceUID
    assert key.uids[oa.SOPInstanceUID] == a.SOPInstanceUID
    pydicom.uid.UID(oa.SOPInstanceUID).is_valid  # noqa: B018
    assert len(oa.SOPInstanceUID) <= 64


def _d(s):
    return dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def test_dates_shifted_consistently_per_patient():
    key = DeidKey.new()
    opts = DeidOptions(shift_dates=True)
    a1 = make_identified_dataset("PID-A")
    a2 = make_identified_dataset("PID-A")
    a2.StudyDate = "20030510"
    b = make_identified_dataset("PID-B")
    o1, o2, ob = (deidentify(x, key, opts) for x in (a1, a2, b))
    # intervals within a patient are preserved
    assert (_d(o2.StudyDate) - _d(o1.StudyDate)) == (_d("20030510") - _d("20010203"))
    assert (_d(o1.SeriesDate) - _d(o1.StudyDate)).days == 1
    shift_a = (_d(o1.StudyDate) - _d("20010203")).days
    assert shift_a == key.date_offset_days("PID-A") and shift_a <= -366
    assert (_d(ob.StudyDate) - _d("20010203")).days == key.date_offset_days("PID-B")
    assert o1.LongitudinalTemporalInformationModified == "MODIFIED"
    assert o1.get("PatientBirthDate", "") in ("", None)
    # without the option the dates are dummies, not shifted
    plain = deidentify(a1, key)
    assert plain.StudyDate in ("", None, "19000101")


def test_key_file_is_private_and_reidentifies(tmp_path):
    key = DeidKey.new()
    out = deidentify(make_identified_dataset("PID-Z"), key, DeidOptions(shift_dates=True))
    path = tmp_path / "keys" / "site.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = DeidKey.load(path)
    assert again.reidentify(out.PatientID)["patient_id"] == "PID-Z"
    assert again.pseudonym("PID-Z") == out.PatientID
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError):
        DeidKey.load(path)


def test_burned_in_annotation_needs_clean_pixels():
    ds = make_identified_dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidError):
        deidentify(ds, DeidKey.new())
    out = deidentify(ds, DeidKey.new(), DeidOptions(clean_pixels=True))
    assert out.BurnedInAnnotation == "NO" and is_deidentified(out)
    assert "113101" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}


def _radiograph_with_text(shared_data):
    from PIL import Image, ImageDraw

    img = Image.open(shared_data / "cxr" / "samples" / "00027426_000.png").convert("L")
    clean = np.asarray(img).copy()
    draw = ImageDraw.Draw(img)
    draw.text((20, 15), "DOE^JOHN 1957-03-02 ID 4711", fill=255)
    return clean, np.asarray(img)


def test_text_detector_finds_burned_in_text(shared_data):
    clean, texted = _radiograph_with_text(shared_data)
    assert detect_text_boxes(clean) == []
    boxes = detect_text_boxes(texted)
    assert boxes
    text_px = np.argwhere(texted != clean)
    covered = np.zeros(texted.shape, bool)
    for r0, c0, r1, c1 in boxes:
        covered[r0:r1, c0:c1] = True
    assert covered[text_px[:, 0], text_px[:, 1]].mean() > 0.95
    assert covered.mean() < 0.05  # blanks the text, not the image


def test_text_detector_on_real_burned_in_marker(shared_data):
    """NIH 00000150_002 carries a burned-in "PORTABLE" at its top left (rows 2-12)."""
    from PIL import Image

    img = np.asarray(Image.open(shared_data / "cxr" / "nih" / "images" / "00000150_002.png").convert("L"))
    boxes = detect_text_boxes(img)
    assert any(r0 <= 4 and r1 >= 11 and c0 <= 36 and c1 >= 100 for r0, c0, r1, c1 in boxes)


def test_clean_pixels_blanks_detected_text(shared_data):
    clean, texted = _radiograph_with_text(shared_data)
    ds = make_identified_dataset()
    ds.Rows, ds.Columns = texted.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = texted.astype(np.uint8).tobytes()
    out = _roundtrip(deidentify(ds, DeidKey.new(), DeidOptions(clean_pixels=True)))
    diff = texted != clean
    assert (out.pixel_array[diff] == texted.min()).all()
    assert np.array_equal(out.pixel_array[100:460, 100:400], clean[100:460, 100:400])


def test_real_cr_dicom_folder_via_cli(shared_data, tmp_path):
    src = tmp_path / "in" / "John Doe"
    src.mkdir(parents=True)
    real = shared_data / "cxr" / "samples" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    (src / "a.dcm").write_bytes(real.read_bytes())
    ident = make_identified_dataset("PID-CLI")
    ident.save_as(src / "b.dcm", enforce_file_format=True)
    (src / "notes.txt").write_text("not dicom")
    out, key = tmp_path / "out", tmp_path / "secure" / "key.json"
    r = subprocess.run(
        [sys.executable, "-m", "medws", "deid", "--in", str(tmp_path / "in"), "--out", str(out), "--key", str(key),
         "--shift-dates"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 2
    assert "John" not in "".join(str(f) for f in files)
    orig_real = pydicom.dcmread(real)
    for f in files:
        d = pydicom.dcmread(f)
        assert is_deidentified(d)
        assert d.SOPInstanceUID not in (orig_real.SOPInstanceUID, ident.SOPInstanceUID)
    real_out = [pydicom.dcmread(f) for f in files if pydicom.dcmread(f).Rows == 1024][0]
    assert real_out.pixel_array.shape == (1024, 1024)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # the key may not be written into the output folder
    r = subprocess.run(
        [sys.executable, "-m", "medws", "deid", "--in", str(tmp_path / "in"), "--out", str(out), "--key",
         str(out / "k.json")], capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0 and "outside" in r.stderr


def test_folder_refuses_burned_in_without_option(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    ds = make_identified_dataset()
    ds.BurnedInAnnotation = "YES"
    ds.save_as(src / "x.dcm", enforce_file_format=True)
    rep = deidentify_folder(src, tmp_path / "out", tmp_path / "key.json")
    assert rep.written == 0 and len(rep.refused) == 1
    assert (src / "x.dcm").exists()
