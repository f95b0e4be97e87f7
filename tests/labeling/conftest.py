"""Fixtures for the labeling-tool tests: DICOM datasets that carry identifiers everywhere."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from labeling_tool.core.deid import load_profile

SECRET = "SECRET"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def _identifying_value(vr: str, i: int):
    """A value, valid for ``vr``, that the tests can recognise if it survives."""
    if vr == "DA":
        return "20010203"
    if vr == "DT":
        return "20010203040506"
    if vr == "TM":
        return "040506"
    if vr == "AS":
        return "042Y"
    if vr == "AE":
        return f"SECRETAE{i}"[:16]
    if vr == "CS":
        return f"SECRET{i}"[:16]
    if vr == "SH":
        return f"SECRET{i}"[:16]
    if vr == "PN":
        return f"SECRET^PERSON{i}"
    if vr in ("LO", "LT", "ST", "UT", "UC"):
        return f"SECRET-{vr}-{i}"
    if vr == "UR":
        return f"http://secret.example/{i}"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.10.999.{i}"
    if vr == "IS":
        return str(770000 + i)
    if vr == "DS":
        return str(770000 + i)
    if vr in ("US", "SS"):
        return 31000 + i % 1000
    if vr in ("UL", "SL", "UV", "SV"):
        return 770000 + i
    if vr in ("FL", "FD"):
        return 770000.5 + i
    if vr == "AT":
        return 0x00100010
    b = f"SECRETBYTES{i}".encode()
    return b + (b"\0" if len(b) % 2 else b"")


def _nested_item(i: int) -> Dataset:
    item = Dataset()
    item.PatientName = f"SECRET^NESTED{i}"
    item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.888.{i}"
    item.ReferencedSOPClassUID = CR_STORAGE
    item.add_new(0x00090010, "LO", "SECRET CREATOR")
    item.add_new(0x00091001, "LO", f"SECRET-PRIVATE-NESTED-{i}")
    inner = Dataset()
    inner.StudyDate = "20010203"
    inner.OperatorsName = f"SECRET^INNER{i}"
    item.AcquisitionContextSequence = Sequence([inner])
    return item


def make_identified_dataset(patient_id: str = "SECRET-PID-1", sop_uid: str | None = None) -> Dataset:
    """A CR image that holds an identifying value in every attribute PS3.15 Table E.1-1 names."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CR_STORAGE
    for i, entry in enumerate(load_profile()):
        tag = entry.tag
        if entry.mask != 0xFFFFFFFF:
            group = tag >> 16
            for elem, vr in ((0x3000, "OW"), (0x4000, "LT")):
                t = (group << 16) | elem
                ds.add(DataElement(t, vr, _identifying_value(vr, i)))
            continue
        if (tag >> 16) in (0x0000, 0x0002, 0x0004):
            continue  # command, file meta (checked separately) and DICOMDIR groups are not dataset attributes
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            vr = "SQ" if entry.name.endswith("Sequence") else "LO"
        if vr == "SQ":
            value = Sequence([_nested_item(i)])
        else:
            value = _identifying_value(vr, i)
        ds.add(DataElement(tag, vr, value))
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = sop_uid or generate_uid(prefix="1.2.826.0.1.3680043.10.777.")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = f"SECRET^{patient_id}"
    ds.StudyDate = "20010203"
    ds.SeriesDate = "20010204"
    ds.Modality = "CR"
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x00110010, "LO", "SECRET CREATOR TOP")
    ds.add_new(0x00111001, "LO", "SECRET-PRIVATE-TOP")
    ds.add_new(0x00111002, "UN", b"SECRETUN")
    rng = np.random.default_rng(0)
    img = (rng.random((64, 48)) * 1000).astype(np.uint16)
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = img.tobytes()
    return ds


def original_values(ds: Dataset) -> set:
    """Every identifying value placed in ``ds`` (strings, UIDs, bytes, numbers), recursively."""
    found: set = set()
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.value in (None, "", b""):
            continue
        if elem.keyword in ("SOPClassUID", "ReferencedSOPClassUID", "PixelData", "TransferSyntaxUID",
                            "MediaStorageSOPClassUID", "Modality", "BurnedInAnnotation"):
            continue
        if int(elem.tag) in (0x00280010, 0x00280011, 0x00280002, 0x00280004, 0x00280100, 0x00280101,
                              0x00280102, 0x00280103):
            continue
        values = elem.value if elem.VM > 1 and not isinstance(elem.value, (bytes, str)) else [elem.value]
        for v in values:
            found.add(str(v))
    return found


def surviving_values(ds: Dataset, originals: set) -> list[str]:
    """Values of ``ds`` (all levels, file meta included) that equal an identifying original."""
    hits = []
    datasets = [ds] + ([ds.file_meta] if hasattr(ds, "file_meta") else [])
    for d in datasets:
        for elem in d.iterall():
            if elem.VR == "SQ" or elem.value in (None, "", b""):
                continue
            values = elem.value if elem.VM > 1 and not isinstance(elem.value, (bytes, str)) else [elem.value]
            for v in values:
                s = str(v)
                if s in originals or "SECRET" in s.upper():
                    hits.append(f"{elem.tag} {elem.keyword}={s[:40]}")
    return hits


@pytest.fixture
def identified_dataset() -> Dataset:
    return make_identified_dataset()


def write_deidentified_folder(folder, patients=("P1", "P1", "P2", "P3", "P4", "P5", "P6", "P7")):
    """De-identified CR files, several per patient where ``patients`` repeats an ID."""
    from labeling_tool.core.deid import DeidKey, deidentify

    key = DeidKey.new()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, pid in enumerate(patients):
        ds = deidentify(make_identified_dataset(f"SECRET-{pid}"), key)
        path = folder / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@pytest.fixture
def deid_folder(tmp_path):
    folder = tmp_path / "images"
    write_deidentified_folder(folder)
    return folder


def make_tiny_cxr_export(shared_data, tmp_path, n: int = 6, fractions=(1.0, 0.0, 0.0)):
    """``n`` real radiographs labelled in the store (3 boxes, the rest normal), reviewed and
    exported as a medws-dataset; returns the export folder."""
    from labeling_tool.core.export import export_dataset
    from labeling_tool.core.sources import FolderSource
    from labeling_tool.core.store import LabelStore

    folder = tmp_path / "png"
    folder.mkdir()
    src = sorted((shared_data / "cxr" / "normal-openist" / "images").glob("*.jpg"))[:n]
    for i, p in enumerate(src):
        (folder / f"{i:04d}_000.jpg").write_bytes(p.read_bytes())
    store = LabelStore.open_for(FolderSource(folder))
    for i, row in enumerate(store.images()):
        if i < 3:  # smoke-test labels: a box, not a clinical finding
            store.add(row["image_id"], "alice", "box", "consolidation", {"x1": 100, "y1": 150, "x2": 180, "y2": 260})
        else:
            store.set_image_label(row["image_id"], "alice", "normal")
        store.mark_labelled(row["image_id"], "alice")
        store.review(row["image_id"], "rev", "approve")
    export_dataset(store, tmp_path / "ds", fractions=fractions)
    return tmp_path / "ds"


@pytest.fixture
def tiny_cxr_export(shared_data, tmp_path):
    return make_tiny_cxr_export(shared_data, tmp_path)
