"""DICOM Segmentation (SEG) of AI findings, written with highdicom.

One segment per finding type (PS3.3 C.8.20.2 Segment Description): segmented
property category "Morphologically abnormal structure", property type the
finding's code (:data:`dicom_node.codes.FINDING_TYPES`), algorithm type
AUTOMATIC with the model's Algorithm Identification (family "Artificial
Intelligence", name, version).  Masks come from the findings' own masks or
their filled outlines, on the source image's pixel grid: one frame for a
radiograph, one frame per slice for CT (empty slices omitted).  ``BINARY`` by
default; ``FRACTIONAL`` (probability, 8 bit) for heat maps.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from . import codes
from .findings import AnalysisResult, Finding, ModelInfo, ResultError, findings_for, images_by_uid, resolve_image
from .result_objects import MANUFACTURER, SOFTWARE_VERSION, finding_mask_2d, repair_inherited, slice_masks

logger = logging.getLogger(__name__)

_ANATOMY = {"liver_lesion": codes.LIVER, "coronary_calcium": codes.CORONARY_ARTERY}


def _segment_tracking_uid(group: list[Finding]) -> str:
    if len(group) == 1:
        return group[0].tracking_uid
    return generate_uid(entropy_srcs=sorted(f.tracking_uid for f in group))


def build_segmentation(
    result: AnalysisResult | Sequence[Finding],
    source_images: Sequence[Dataset],
    *,
    model: ModelInfo | None = None,
    fractional: bool = False,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9002,
    instance_number: int = 1,
    series_description: str = "AI findings (SEG)",
) -> hd.seg.Segmentation:
    """SEG with one segment per finding type over ``source_images``.

    Parameters
    ----------
    result : AnalysisResult or sequence of Finding
        Findings with a mask, a contour or a box (others are skipped with a log line).
    source_images : sequence of Dataset
        One radiograph, or the CT slices of one series (any order).
    fractional : bool
        Write probabilities (masks with values in [0, 1]) as a FRACTIONAL SEG.

    Raises
    ------
    ResultError
        When no finding has anything to segment, or a mask does not fit its image.
    """
    if not source_images:
        raise ResultError("a segmentation needs at least one source image")
    if isinstance(result, AnalysisResult):
        model = model or result.model
    if model is None:
        raise ResultError("model name/version required (pass model= or an AnalysisResult)")
    sources = images_by_uid(source_images)
    images = list(source_images)
    index = {str(ds.SOPInstanceUID): i for i, ds in enumerate(images)}
    shape = (int(images[0].Rows), int(images[0].Columns))
    if any((int(ds.Rows), int(ds.Columns)) != shape for ds in images):
        raise ResultError("source images of one SEG must share rows and columns")

    groups: "OrderedDict[str, list[Finding]]" = OrderedDict()
    for f in findings_for(result):
        if f.mask is None and not f.region_contour and not f.slices:
            logger.info("finding %s has no mask or outline; not segmented", f.label)
            continue
        codes.finding_type(f.label)  # fail early on an uncoded label
        groups.setdefault(f.label, []).append(f)
    if not groups:
        raise ResultError("no finding with a mask, contour or box: nothing to segment")

    planes_shape = (len(images), shape[0], shape[1])
    segments: list[np.ndarray] = []
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name, family=codes.AI_FAMILY, version=model.version, source=MANUFACTURER
    )
    for s, (label, group) in enumerate(groups.items()):
        seg_pixels = np.zeros(planes_shape, dtype=np.float32 if fractional else bool)
        for f in group:
            for uid, plane in _planes(f, shape, sources).items():
                if uid not in index:
                    raise ResultError(f"{label}: mask refers to image {uid} that is not a source image")
                plane = np.asarray(plane, dtype=np.float32 if fractional else bool)
                if fractional:
                    if plane.min() < 0 or plane.max() > 1:
                        raise ResultError(f"{label}: fractional mask values must lie in [0, 1]")
                    np.maximum(seg_pixels[index[uid]], plane, out=seg_pixels[index[uid]])
                else:
                    seg_pixels[index[uid]] |= plane
        segments.append(seg_pixels)
        anatomy = _ANATOMY.get(label, codes.LUNG)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=s + 1,
                segment_label=label.replace("_", " "),
                segmented_property_category=codes.ABNORMAL_STRUCTURE,
                segmented_property_type=codes.finding_type(label),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=_segment_tracking_uid(group),
                tracking_id=label,
                anatomic_regions=[anatomy],
            )
        )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=_pixel_array(segments, fractional),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{model.name} {model.version}",
        software_versions=SOFTWARE_VERSION,
        device_serial_number=model.name[:64],
        content_label="AI_FINDINGS",
        content_description=f"AI findings by {model.name} {model.version}"[:64],
        series_description=series_description,
        omit_empty_frames=True,
    )
    repair_inherited(seg)
    if "FrameOfReferenceUID" not in images[0]:
        _projection_image_fixups(seg, images[0])
    return seg


def _projection_image_fixups(seg: Dataset, source: Dataset) -> None:
    """Make a SEG on a projection radiograph (no Frame of Reference) valid and readable.

    * Patient Orientation is type 2C in the General Image module when there is no
      patient coordinate system: copy it from the source (empty if unknown).
    * highdicom writes a Pixel Measures item without Slice Thickness that its own
      reader rejects; for a projection image the spacing is the source image's
      (Spatial Locations Preserved = YES), so the item is dropped.
    """
    seg.PatientOrientation = source.get("PatientOrientation", "") or ""
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
        del shared.PixelMeasuresSequence


def _pixel_array(segments: list[np.ndarray], fractional: bool) -> np.ndarray:
    """highdicom input: a label map (frames, rows, cols) when binary segments do not
    overlap (highdicom then checks only the maximum), else segments stacked last."""
    if not fractional:
        count = np.zeros(segments[0].shape, dtype=np.uint8)
        for m in segments:
            count += m
        if count.max() <= 1:
            labels = np.zeros(segments[0].shape, dtype=np.uint8 if len(segments) < 256 else np.uint16)
            for number, m in enumerate(segments, start=1):
                labels[m] = number
            return labels
    return np.stack(segments, axis=-1)


def _planes(f: Finding, shape: tuple[int, int], sources: dict[str, Dataset]) -> dict[str, np.ndarray]:
    """Mask planes of one finding keyed by the SOP Instance UID they lie on."""
    if f.slices or (f.mask is not None and np.asarray(f.mask).ndim == 3):
        return slice_masks(f, shape)
    ds = resolve_image(f.image, sources, f.label)
    return {str(ds.SOPInstanceUID): finding_mask_2d(f, shape)}


def read_segments(seg: Dataset) -> dict[str, np.ndarray]:
    """Segment tracking ID (our finding label) → mask stacked over the source images (as referenced), for round-trip checks."""
    doc = hd.seg.Segmentation.from_dataset(seg, copy=True)
    out: dict[str, np.ndarray] = {}
    uids = [uid for _, _, uid in doc.get_source_image_uids()]
    for number in doc.segment_numbers:
        desc = doc.get_segment_description(number)
        arr = doc.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[number], combine_segments=False,
            rescale_fractional=True, skip_overlap_checks=True,
        )
        out[str(desc.get("TrackingID") or desc.SegmentLabel)] = arr[..., 0]
    return out
