"""The fast header decoder (archive._RawHeader) indexes exactly what pydicom reads."""
from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node import archive as archive_mod
from dicom_node import samples
from dicom_node.dicom_file import check_structure


def _slow(data: bytes, ts: str) -> archive_mod.InstanceHeader:
    """The reference: pydicom decodes the same elements."""
    subset = check_structure(data, ts, archive_mod.HEADER_TAGS)
    ds = pydicom.filereader.read_dataset(BytesIO(subset), ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian)
    return archive_mod.header_from_dataset(ds)


def _encode(ds: Dataset, ts: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = ts != ExplicitVRBigEndian
    fp.is_implicit_VR = ts == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    return fp.getvalue()


def _base() -> Dataset:
    ds = samples.ct_series(1, size=16, seed=1)[0]
    del ds.file_meta
    return ds


def _variants() -> list[tuple[str, Dataset, str]]:
    out = []
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        out.append((f"ct-{ts.name}", _base(), ts))
    ds = _base()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen=ミュラー"
    ds.StudyDescription = "Thorax  "
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    out.append(("utf8", ds, ExplicitVRLittleEndian))
    ds = _base()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Gérard^Zoë"
    ds.SeriesNumber = "7"
    ds.SliceThickness = "1.25"
    out.append(("latin1", ds, ImplicitVRLittleEndian))
    ds = _base()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]  # fallback path
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    out.append(("iso2022", ds, ExplicitVRLittleEndian))
    ds = _base()
    for kw in ("SeriesNumber", "InstanceNumber", "SliceThickness", "BodyPartExamined", "PatientSex"):
        if kw in ds:
            setattr(ds, kw, None)
    out.append(("empty", ds, ExplicitVRLittleEndian))
    return out


@pytest.mark.parametrize("name,ds,ts", _variants(), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_header_equals_pydicom(name: str, ds: Dataset, ts: str) -> None:
    data = _encode(ds, ts)
    fast = archive_mod.parse_header(data, ts)
    assert fast == _slow(data, ts)
    assert fast.sop_instance_uid == ds.SOPInstanceUID
    if name == "utf8":
        assert fast.patient_name == "Müller^Jürgen=ミュラー" and fast.image_type == "ORIGINAL\\PRIMARY\\AXIAL"


def test_fast_path_taken_for_plain_data() -> None:
    ds = _base()
    data = _encode(ds, ExplicitVRLittleEndian)
    subset = check_structure(data, ExplicitVRLittleEndian, archive_mod.HEADER_TAGS)
    raw = archive_mod._RawHeader(subset, False, "<")
    assert raw.get("Rows") == 16 and raw.get("Modality") == "CT"


def test_fast_header_on_pydicom_test_files() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        path = get_testdata_file(name)
        meta = pydicom.filereader.read_file_meta_info(path)
        raw = open(path, "rb").read()[132 + 12 + int(meta.FileMetaInformationGroupLength):]
        ts = str(meta.TransferSyntaxUID)
        assert archive_mod.parse_header(raw, ts) == _slow(raw, ts), name
