"""A reading demo archive: studies stored through the node's archive, AI results and drafts in the index.

Used by the tests, the benchmark and the documentation screenshots until the analysis
pipeline fills the index itself.  Findings follow the ``medws infer cxr --json``
contract (``AnalysisResult.to_json()``); drafts come from :func:`dicom_node.report.draft_report`.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicom_node import samples
from dicom_node.findings import AnalysisResult, Finding, ImageRef, ModelInfo
from dicom_node.report import draft_report
from dicom_node.seg import build_segmentation

from workstation.core.store import ReadingStore

logger = logging.getLogger(__name__)

DEMO_MODEL = ModelInfo("cxr-lesion-demo", "0.0.0-demo")


@dataclass
class DemoStudies:
    chest_uid: str = ""
    chest_sop: str = ""
    ct_uid: str = ""
    extra: list[str] = field(default_factory=list)


def _store(store: ReadingStore, ds: Dataset) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.dcm"
        ds.save_as(p, enforce_file_format=True)
        store.archive.store_file(p)


def chest_findings(ds: Dataset) -> list[Finding]:
    """Demo AI findings placed by anatomy of a PA chest (image right = patient left)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    ref = ImageRef.from_dataset(ds)
    sx, sy = cols / 1024.0, rows / 1024.0

    def pts(p):
        return tuple((x * sx, y * sy) for x, y in p)

    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    heat = np.exp(-(((xx - 20.0) / 4.0) ** 2 + ((yy - 24.0) / 4.0) ** 2)).astype(np.float32)
    seg = np.zeros((128, 128), bool)
    seg[78:100, 82:104] = True
    return [
        Finding("pleural_effusion", 0.91, box=(620 * sx, 700 * sy, 860 * sx, 860 * sy),
                contour=pts([(620, 800), (700, 720), (860, 700), (860, 860), (640, 860)]),
                laterality="left", zone="lower", image=ref, tracking_uid="2.25.1001"),
        Finding("pneumothorax", 0.64, box=(180 * sx, 150 * sy, 330 * sx, 330 * sy),
                contour=pts([(200, 150), (330, 170), (300, 330), (180, 300)]),
                laterality="right", zone="upper", image=ref, tracking_uid="2.25.1002"),
        Finding("nodule_mass", 0.78, box=(300 * sx, 350 * sy, 340 * sx, 420 * sy), laterality="right",
                zone="middle", image=ref, mask=heat, tracking_uid="2.25.1003"),
        Finding("consolidation", 0.57, box=(660 * sx, 620 * sy, 830 * sx, 800 * sy), laterality="left",
                zone="lower", image=ref, mask=seg, tracking_uid="2.25.1004"),
    ]


def put_result(store: ReadingStore, ds: Dataset, findings: list[Finding], language: str = "en",
               study_type: str = "cxr") -> str:
    """Store an analysis result and its draft report for the study of ``ds``."""
    result = AnalysisResult(study_type, DEMO_MODEL, tuple(findings), abnormality=0.93,
                            scores={f.label: float(f.probability or 0) for f in findings},
                            source=ImageRef.from_dataset(ds))
    uid = str(ds.StudyInstanceUID)
    store.put_analysis_result(uid, result.to_json(), kind=study_type)
    store.put_draft_report(uid, draft_report(result, language=language).text, language)
    return uid


def build(root: Path | str, *, chest: Dataset | None = None, with_ct: bool = True, ct_slices: int = 24,
          extra_routine: int = 2) -> DemoStudies:
    """Fill ``root`` with a chest study (AI findings + draft), a CT study and a few routine studies."""
    store = ReadingStore.open(root)
    try:
        out = DemoStudies()
        ds = chest if chest is not None else samples.dx_chest(size=1024, seed=1, patient_id="DEMO-0001")
        if chest is None:
            ds.PatientName = "HONG^GILDONG"
            ds.AccessionNumber = "ACC0001"
        _store(store, ds)
        out.chest_uid = put_result(store, ds, chest_findings(ds))
        seg_findings = [f for f in chest_findings(ds) if f.label == "pleural_effusion"]
        _store(store, build_segmentation(seg_findings, [ds], model=DEMO_MODEL))
        out.chest_sop = str(ds.SOPInstanceUID)
        for i in range(extra_routine):
            d2 = samples.dx_chest(size=512, seed=10 + i, patient_id=f"DEMO-01{i:02d}")
            d2.PatientName = ["KIM^MINJI", "LEE^SEOYEON", "PARK^JUNHO"][i % 3]
            d2.AccessionNumber = f"ACC01{i:02d}"
            _store(store, d2)
            if i % 2 == 0:
                ref = ImageRef.from_dataset(d2)
                put_result(store, d2, [Finding("nodule_mass", 0.7, box=(150, 170, 175, 196), laterality="right",
                                               zone="middle", image=ref)], language="ko")
            out.extra.append(str(d2.StudyInstanceUID))
        if with_ct:
            series = samples.ct_series(n_slices=ct_slices, size=512, seed=2, patient_id="DEMO-CT-0001")
            for s in series:
                s.PatientName = "CHOI^YUNA"
                s.AccessionNumber = "ACC-CT-01"
                _store(store, s)
            out.ct_uid = str(series[0].StudyInstanceUID)
            target = series[len(series) // 3]
            ref = ImageRef.from_dataset(target)
            c = [(300 + 14 * np.cos(a), 210 + 12 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 24, endpoint=False)]
            put_result(store, target, [Finding("nodule", 0.83, box=(286, 198, 314, 222), contour=tuple(c),
                                               laterality="left", image=ref, long_axis_mm=19.0, short_axis_mm=16.0,
                                               type="solid", lobe="LLL", tracking_uid="2.25.2001")],
                       study_type="ct_nodule")
        return out
    finally:
        store.close()


def read_image(path: Path) -> Dataset:
    return pydicom.dcmread(path)


# ------------------------------------------------------------------ archives filled by the real pipeline
def nih_as_dicom(png_path: Path | str, record: dict, patient_id: str = "") -> Dataset:
    """An NIH ChestX-ray14 PNG (8-bit, with its ``labels.json`` record) wrapped as a DX image.

    The header comes from :func:`dicom_node.samples.dx_chest` (DX For Presentation, PA/AP
    view, body part chest); pixels are the PNG's scaled to 12 bits; Imager Pixel Spacing is
    the record's ``pixel_spacing_mm``.  For demos and screenshots: the pipeline routes and
    analyses it like any chest radiograph.
    """
    from PIL import Image  # noqa: PLC0415 - only for PNG sources

    png = np.asarray(Image.open(png_path).convert("L"), dtype=np.uint16)
    pid = patient_id or f"NIH-{record.get('patient_id', '0')}"
    ds = samples.dx_chest(size=int(png.shape[0]), seed=int(record.get("patient_id", 0) or 0) % 9973, patient_id=pid)
    if png.shape[0] != png.shape[1]:
        ds.Columns = int(png.shape[1])
    ds.PixelData = (png * 16).astype(np.uint16).tobytes()
    sp = f"{float(record.get('pixel_spacing_mm') or 0.672):.3f}"
    ds.ImagerPixelSpacing = [sp, sp]
    ds.PixelSpacing = [sp, sp]
    ds.ViewPosition = str(record.get("view") or "PA")
    ds.StudyDescription = "XR CHEST (NIH ChestX-ray14, public domain)"
    return ds


def build_analyzed(root: Path | str, studies: list[list[Dataset]], timeout_s: float = 600.0) -> list[str]:
    """Store each study's images in ``root`` and run the node's analysis pipeline on it.

    Nothing is planted: findings, SR/SEG/GSPS, derived (denoised) series and draft reports
    are what :func:`dicom_node.analysis.analyze_study` produces with the installed models.
    Returns the Study Instance UIDs in order.
    """
    from dicom_node.analysis import analyze_study, ensure_schema  # noqa: PLC0415 - loads the task registry

    store = ReadingStore.open(root)
    try:
        ensure_schema(store.db)
        uids = []
        for datasets in studies:
            for ds in datasets:
                _store(store, ds)
            uids.append(str(datasets[0].StudyInstanceUID))
    finally:
        store.close()
    for uid in uids:
        summary = analyze_study(ReadingStore.open(root).config, uid, timeout_s=timeout_s)
        failed = [f"{j['task']}: {j['error']}" for j in summary["jobs"] if j["state"] == "failed"]
        logger.info("analysed %d study: %d findings, %d objects%s", len(uids), len(summary["findings"]),
                    len(summary["objects"]), f", failed {failed}" if failed else "")
    return uids
