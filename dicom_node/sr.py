"""DICOM SR Comprehensive 3D, TID 1500 Measurement Report of AI findings (highdicom).

One measurement group per finding (PS3.16 TID 1500 → TID 1410/1411/1501):

* finding type (coded, see :mod:`dicom_node.codes`), tracking identifier
  (text ``"<label>-<n>"`` + UID, TID 4108), algorithm identification (TID 4019),
* finding site: lung zone or lobe (or liver, coronary artery) with laterality,
* probability as a TID 300 measurement in UCUM ``1``; CT long/short axis (mm),
  volume (mm3), mean attenuation (HU), Agatston score (method DCM 112055),
* subtype and reporting category as qualitative evaluations,
* the image region as a closed SCOORD ``POLYLINE`` (the 2-D SR polygon,
  PS3.3 C.18.6.1.2) referencing the exact source image (and frame); CT
  findings with per-slice outlines become TID 1411 volumetric groups with one
  region per slice; findings without an outline become TID 1501 groups.

Draft reports are ``UNVERIFIED``; :func:`build_signed_report` writes
``VERIFIED`` with the Verifying Observer and references the draft (or, for an
addendum, the signed report) in the Predecessor Documents Sequence.
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from typing import Sequence

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as _codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DT

from . import codes
from .result_objects import MANUFACTURER, from_dicom_xy, outline_2d, outline_regions, repair_inherited, to_dicom_xy
from .findings import (
    AnalysisResult,
    Finding,
    ImageRef,
    ModelInfo,
    ResultError,
    SliceRegion,
    findings_for,
    images_by_uid,
    resolve_image,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """Who verified (signed) a report, for the Verifying Observer Sequence."""

    observer_name: str
    organisation: str
    when: _dt.datetime | None = None


def _algorithm(model: ModelInfo) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version, manufacturer=MANUFACTURER)


def _device_context(model: ModelInfo) -> hd.sr.ObserverContext:
    uid = generate_uid(entropy_srcs=["medws-device", model.name, model.version])
    return hd.sr.ObserverContext(
        observer_type=_codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid, name=model.name, manufacturer_name=MANUFACTURER, model_name=f"{model.name} {model.version}"
        ),
    )


def _image_region(contour: Sequence[Sequence[float]], image: ImageRef | None, sources: dict[str, Dataset],
                  what: str) -> hd.sr.ImageRegion:
    ds = resolve_image(image, sources, what)
    frames = [image.frame_number] if image is not None and image.frame_number is not None else None
    source = hd.sr.SourceImageForRegion.from_source_image(ds, referenced_frame_numbers=frames)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=to_dicom_xy(contour, ds, closed=True),
        source_image=source,
    )


def _finding_sites(f: Finding) -> list[hd.sr.FindingSite]:
    lat = codes.LATERALITY.get(f.laterality) if f.laterality else None
    if f.vessel:
        try:
            return [hd.sr.FindingSite(codes.CORONARY_VESSELS[f.vessel.upper()])]
        except KeyError:
            raise ResultError(f"unknown coronary vessel {f.vessel!r}; use one of {tuple(codes.CORONARY_VESSELS)}") from None
    if f.lobe and f.lobe.upper() in codes.LUNG_LOBES:
        location, lobe_lat = codes.LUNG_LOBES[f.lobe.upper()]
        return [hd.sr.FindingSite(location, laterality=lobe_lat)]
    if f.label == "liver_lesion":
        return [hd.sr.FindingSite(codes.LIVER)]
    if f.label == "coronary_calcium":
        return [hd.sr.FindingSite(codes.CORONARY_ARTERY)]
    if f.zone and f.zone in codes.CXR_ZONES:
        return [hd.sr.FindingSite(codes.CXR_ZONES[f.zone], laterality=lat)]
    if f.label in ("pleural_effusion", "pneumothorax"):
        return [hd.sr.FindingSite(codes.PLEURA, laterality=lat)]
    return [hd.sr.FindingSite(codes.LUNG, laterality=lat)]


def _measurements(f: Finding, algo: hd.sr.AlgorithmIdentification,
                  centre: hd.sr.CoordinatesForMeasurement3D | None = None) -> list[hd.sr.Measurement]:
    """TID 300 measurements of a finding; ``centre`` (SCOORD3D point) goes on the first one."""
    out: list[hd.sr.Measurement] = []

    def add(name: CodedConcept, value: float | None, unit: CodedConcept, **kw: object) -> None:
        if value is not None:
            if centre is not None and not out:
                kw["referenced_coordinates"] = [centre]
            out.append(hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algo, **kw))

    add(codes.PROBABILITY, f.probability, codes.UNIT_ONE)
    add(codes.LONG_AXIS, f.long_axis_mm, codes.UNIT_MM)
    add(codes.SHORT_AXIS, f.short_axis_mm, codes.UNIT_MM)
    add(codes.VOLUME, f.volume_mm3, codes.UNIT_MM3)
    add(codes.ATTENUATION, f.mean_hu, codes.UNIT_HU, derivation=codes.MEAN)
    add(codes.CALCIUM_SCORE, f.agatston, codes.UNIT_ONE, method=codes.AGATSTON_METHOD)
    add(codes.CALCIUM_VOLUME, f.calcium_volume_mm3, codes.UNIT_MM3)
    return out


def _qualitative(f: Finding) -> list[hd.sr.QualitativeEvaluation]:
    out = []
    if f.type:
        try:
            out.append(hd.sr.QualitativeEvaluation(codes.SUBTYPE_NAME, codes.FINDING_SUBTYPES[f.type]))
        except KeyError:
            raise ResultError(f"{f.label}: unknown subtype {f.type!r}; add it to dicom_node.codes.FINDING_SUBTYPES") from None
    if f.category:
        out.append(hd.sr.QualitativeEvaluation(codes.CATEGORY_NAME, codes.category_code(f.category)))
    return out


def measurement_group(f: Finding, index: int, model: ModelInfo, sources: dict[str, Dataset]) -> object:
    """TID 1410/1411/1501 group for one finding (see module docstring); the finding's own
    algorithm (when another model than the result's produced it) identifies it."""
    algo = _algorithm(f.algorithm or model)
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=f.tracking_uid, identifier=f"{f.label}-{index}"),
        finding_type=codes.finding_type(f.label),
        algorithm_id=algo,
        finding_sites=_finding_sites(f),
        measurements=_measurements(f, algo),
        qualitative_evaluations=_qualitative(f) or None,
    )
    what = f"{f.label}-{index}"
    slices = outline_regions(f)
    if slices:
        regions = [_image_region(s.contour, s.image, sources, what) for s in slices]
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_regions=regions, **common)
    contour = outline_2d(f)
    if contour:
        region = _image_region(contour, f.image, sources, what)
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    frame_of_reference = next((str(ds.FrameOfReferenceUID) for ds in sources.values()
                               if "FrameOfReferenceUID" in ds), None)
    if f.centre_mm is not None and frame_of_reference is not None:
        # no outline: the finding's centre as an SCOORD3D point on its first measurement
        centre = hd.sr.CoordinatesForMeasurement3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.asarray([f.centre_mm], dtype=np.float64),
            frame_of_reference_uid=frame_of_reference,
        )
        common["measurements"] = _measurements(f, algo, centre)
    return hd.sr.MeasurementsAndQualitativeEvaluations(**common)


NO_FINDINGS_ID = "no-findings"


def _no_findings_group(model: ModelInfo, abnormality: float | None) -> object:
    """TID 1501 group stating that the algorithm found nothing (DCM 111286 "No abnormality")."""
    algo = _algorithm(model)
    measurements = None
    if abnormality is not None:
        measurements = [hd.sr.Measurement(name=codes.PROBABILITY, value=float(abnormality),
                                          unit=codes.UNIT_ONE, algorithm_id=algo)]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=NO_FINDINGS_ID),
        finding_type=codes.NO_ABNORMALITY,
        algorithm_id=algo,
        measurements=measurements,
    )


def build_measurement_report(
    result: AnalysisResult | Sequence[Finding],
    source_images: Sequence[Dataset],
    *,
    model: ModelInfo | None = None,
    study_type: str | None = None,
    complete: bool | None = None,
    verification: Verification | None = None,
    predecessors: Sequence[Dataset] = (),
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9001,
    instance_number: int = 1,
    series_description: str = "AI findings (TID 1500)",
    institution_name: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 Measurement Report in an SR Comprehensive 3D document.

    Parameters
    ----------
    result : AnalysisResult or sequence of Finding
        The findings (``model``/``study_type`` are taken from the result).
    source_images : sequence of Dataset
        The analysed images (all of one study); every finding must refer to one.
    complete : bool, optional
        Completion Flag COMPLETE/PARTIAL; default: COMPLETE unless the result
        was skipped.
    verification : Verification, optional
        When given the document is VERIFIED (signed); else UNVERIFIED (draft).
    predecessors : sequence of Dataset
        Earlier versions (the draft, or the signed report for an addendum).

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
    """
    if not source_images:
        raise ResultError("a measurement report needs at least one source image")
    if isinstance(result, AnalysisResult):
        model = model or result.model
        study_type = study_type or result.study_type
        if complete is None:
            complete = result.complete
    if model is None:
        raise ResultError("model name/version required (pass model= or an AnalysisResult)")
    study_type = study_type or "cxr"
    complete = True if complete is None else complete
    if isinstance(result, AnalysisResult) and result.skipped and not result.findings:
        raise ResultError(f"analysis was skipped ({result.skipped}): there is nothing to report")
    sources = images_by_uid(source_images)
    groups = [measurement_group(f, i + 1, model, sources) for i, f in enumerate(findings_for(result))]
    if not groups:
        abnormality = result.abnormality if isinstance(result, AnalysisResult) else None
        groups = [_no_findings_group(model, abnormality)]

    person = None
    if verification is not None:
        person = hd.sr.ObserverContext(
            observer_type=_codes.cid270.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=verification.observer_name, organization_name=verification.organisation
            ),
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=person, observer_device_context=_device_context(model)
        ),
        procedure_reported=codes.PROCEDURES[study_type],
        imaging_measurements=groups,
        referenced_images=None,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(source_images),
        content=report[0],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=complete,
        is_verified=verification is not None,
        is_final=verification is not None,
        verifying_observer_name=verification.observer_name if verification else None,
        verifying_organization=verification.organisation if verification else None,
        previous_versions=list(predecessors) or None,
        institution_name=institution_name,
        series_description=series_description,
        # UTF-8 whatever the source used: observer names may be Korean (PS3.5 6.1.2.5.3)
        specific_character_set="ISO_IR 192",
    )
    if verification is not None and verification.when is not None:
        sr.VerifyingObserverSequence[0].VerificationDateTime = DT(verification.when)
    _set_content_datetime(sr)
    repair_inherited(sr)
    _declare_private_scheme(sr)
    return sr


def _declare_private_scheme(sr: Dataset) -> None:
    """Declare the private coding scheme in the Coding Scheme Identification Sequence
    (PS3.3 C.12.1.1.5) when the content uses it."""
    used = False

    def visit(ds: Dataset, elem: object) -> None:
        nonlocal used
        if getattr(elem, "keyword", "") == "CodingSchemeDesignator" and elem.value == codes.PRIVATE_SCHEME:  # type: ignore[attr-defined]
            used = True

    sr.walk(visit)
    if used:
        ident = Dataset()
        ident.CodingSchemeDesignator = codes.PRIVATE_SCHEME
        ident.CodingSchemeName = "medws private codes"
        ident.CodingSchemeResponsibleOrganization = "medws project"
        sr.CodingSchemeIdentificationSequence = [ident]


def build_signed_report(
    findings: AnalysisResult | Sequence[Finding],
    source_images: Sequence[Dataset],
    verification: Verification,
    predecessor: Dataset,
    *,
    model: ModelInfo | None = None,
    study_type: str | None = None,
    **kwargs: object,
) -> hd.sr.Comprehensive3DSR:
    """VERIFIED report referencing ``predecessor`` (the draft, or for an addendum the signed SR).

    The new document keeps the predecessor's series (a new instance in the same
    series) unless ``series_instance_uid`` is given.
    """
    kwargs.setdefault("series_instance_uid", str(predecessor.SeriesInstanceUID))
    kwargs.setdefault("series_number", int(predecessor.get("SeriesNumber", 9001) or 9001))
    kwargs.setdefault("instance_number", int(predecessor.get("InstanceNumber", 1) or 1) + 1)
    if model is None and not isinstance(findings, AnalysisResult):
        model = algorithm_of(predecessor)
    return build_measurement_report(
        findings, source_images, model=model, study_type=study_type, complete=True,
        verification=verification, predecessors=[predecessor], **kwargs,  # type: ignore[arg-type]
    )


def _set_content_datetime(sr: Dataset) -> None:
    now = _dt.datetime.now()
    sr.ContentDate = now.strftime("%Y%m%d")
    sr.ContentTime = now.strftime("%H%M%S.%f")


# --------------------------------------------------------------------------- reading


def algorithm_of(sr: Dataset) -> ModelInfo:
    """Model name/version from the first measurement group's algorithm identification."""
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=True)
    for item in hd.sr.utils.find_content_items(doc, name=_codes.DCM.AlgorithmName, recursive=True):
        versions = hd.sr.utils.find_content_items(doc, name=_codes.DCM.AlgorithmVersion, recursive=True)
        return ModelInfo(str(item.TextValue), str(versions[0].TextValue) if versions else "")
    raise ResultError("SR has no algorithm identification; pass model= explicitly")


def read_findings(sr: Dataset) -> list[Finding]:
    """Findings back from a TID 1500 report written by :func:`build_measurement_report`.

    Used for round-trip tests and by readers of our own SR (e.g. the workstation
    loading AI results from the PACS).
    """
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=True)
    content = doc.content
    if not isinstance(content, hd.sr.MeasurementReport):
        raise ResultError("not a TID 1500 measurement report")
    groups = (
        list(content.get_planar_roi_measurement_groups())
        + list(content.get_volumetric_roi_measurement_groups())
        + list(content.get_image_measurement_groups())
    )
    groups = [g for g in groups if str(g.tracking_identifier or "") != NO_FINDINGS_ID]
    numbered = [(_tracking_index(g), _finding_from_group(g)) for g in groups]
    return [f for _, f in sorted(numbered, key=lambda t: t[0])]


def _tracking_index(g: object) -> int:
    ident = str(g.tracking_identifier or "")  # type: ignore[attr-defined]
    suffix = ident.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _finding_from_group(g: object) -> Finding:
    ident = str(g.tracking_identifier or "")  # type: ignore[attr-defined]
    label = ident.rsplit("-", 1)[0] if "-" in ident else ident
    ftype = g.finding_type  # type: ignore[attr-defined]
    if label not in codes.FINDING_TYPES and ftype is not None:
        # not written by us: the label comes from the coded finding type
        known = codes.label_for_code(ftype)
        label = known[0] if known else str(ftype.meaning).lower().replace(" ", "_")
    label = label or "finding"
    uid = g.tracking_uid  # type: ignore[attr-defined]
    kw: dict[str, object] = {"label": label}
    if uid:
        kw["tracking_uid"] = str(uid)
    by_name = {
        codes.PROBABILITY: "probability", codes.LONG_AXIS: "long_axis_mm", codes.SHORT_AXIS: "short_axis_mm",
        codes.VOLUME: "volume_mm3", codes.ATTENUATION: "mean_hu", codes.CALCIUM_SCORE: "agatston",
        codes.CALCIUM_VOLUME: "calcium_volume_mm3",
    }
    for m in g.get_measurements():  # type: ignore[attr-defined]
        for coord in m.referenced_coordinates:
            if isinstance(coord, hd.sr.CoordinatesForMeasurement3D) and coord.graphic_type == hd.sr.GraphicTypeValues3D.POINT:
                kw["centre_mm"] = tuple(float(v) for v in np.asarray(coord.value).reshape(-1)[:3])
        for name, key in by_name.items():
            if m.name == name:
                kw[key] = float(m.value)
    for q in g.get_qualitative_evaluations():  # type: ignore[attr-defined]
        if q.name == codes.SUBTYPE_NAME:
            kw["type"] = next(k for k, c in codes.FINDING_SUBTYPES.items() if c == q.value)
        elif q.name == codes.CATEGORY_NAME:
            kw["category"] = str(q.value.meaning)
    for site in g.finding_sites:  # type: ignore[attr-defined]
        loc = site.value
        lat = None
        for item in getattr(site, "ContentSequence", []):
            if item.name == _codes.SCT.Laterality:
                lat = item.value
        if lat is not None:
            kw["laterality"] = next(k for k, c in codes.LATERALITY.items() if c == lat)
        for zone, c in codes.CXR_ZONES.items():
            if c == loc:
                kw["zone"] = zone
        for vessel, c in codes.CORONARY_VESSELS.items():
            if c == loc:
                kw["vessel"] = vessel
        for lobe, (c, lobe_lat) in codes.LUNG_LOBES.items():
            if c == loc and lobe_lat == lat:
                kw["lobe"] = lobe
                kw.pop("laterality", None)
    roi = getattr(g, "roi", None)
    if isinstance(roi, hd.sr.ImageRegion):
        kw["contour"], kw["image"] = _region_back(roi)
    elif isinstance(roi, list) and roi:
        kw["slices"] = tuple(SliceRegion(image=_region_back(r)[1], contour=_region_back(r)[0]) for r in roi)
    return Finding(**kw)  # type: ignore[arg-type]


def _region_back(region: hd.sr.ImageRegion) -> tuple[tuple[tuple[float, float], ...], ImageRef]:
    src = region.ContentSequence[0]
    ref = src.ReferencedSOPSequence[0]
    frames = ref.get("ReferencedFrameNumber")
    image = ImageRef(
        sop_instance_uid=str(ref.ReferencedSOPInstanceUID),
        sop_class_uid=str(ref.ReferencedSOPClassUID),
        frame_number=int(frames) if frames not in (None, "") else None,
    )
    return from_dicom_xy(region.value), image
