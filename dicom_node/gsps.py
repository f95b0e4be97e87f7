"""Grayscale Softcopy Presentation State (GSPS) with the AI's marks, via highdicom.

PACS viewers that show neither SR nor SEG do display a GSPS (PS3.3 A.33.1):
each finding becomes a closed POLYLINE outline (its contour, else its box) and
a short text label such as ``"Pneumothorax 0.93"`` placed just above the
outline, in PIXEL units on the exact source image (Graphic Annotation
Sequence → Referenced Image Sequence).  CT findings are drawn on every slice
that carries an outline.  Critical findings go to a red layer, the others to a
yellow one, so a viewer that honours layer colours separates them.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .findings import AnalysisResult, Finding, ModelInfo, ResultError, findings_for, images_by_uid, resolve_image
from .result_objects import (
    MANUFACTURER,
    SOFTWARE_VERSION,
    copy_series_anatomy,
    outline_2d,
    outline_regions,
    repair_inherited,
    to_dicom_xy,
)

logger = logging.getLogger(__name__)

#: Findings drawn on the red layer.
CRITICAL_LABELS = frozenset({"pneumothorax"})

_DISPLAY = {
    "nodule_mass": "Nodule/mass",
    "consolidation": "Consolidation",
    "interstitial_opacity": "Interstitial opacity",
    "pleural_effusion": "Effusion",
    "pneumothorax": "Pneumothorax",
    "nodule": "Nodule",
    "mass": "Mass",
    "liver_lesion": "Liver lesion",
    "coronary_calcium": "Calcium",
}


def label_text(f: Finding) -> str:
    """Short on-image label: display name, side and probability (``"Pneumothorax L 0.93"``)."""
    name = _DISPLAY.get(f.label, f.label.replace("_", " ").capitalize())
    side = {"left": " L", "right": " R", "bilateral": " bilat"}.get(f.laterality or "", "")
    if f.agatston is not None:
        return f"{name}{side} {f.vessel or ''} AS {f.agatston:.0f}".replace("  ", " ")
    if f.long_axis_mm is not None:
        return f"{name}{side} {f.long_axis_mm:.0f}mm"
    if f.probability is not None:
        return f"{name}{side} {f.probability:.2f}"
    return f"{name}{side}"


def _text_box(outline: np.ndarray, text: str, ds: Dataset) -> tuple[float, float, float, float]:
    """Bounding box (left, top, right, bottom) for the label, above the outline, inside the image."""
    rows, cols = float(ds.Rows), float(ds.Columns)
    height = max(12.0, rows * 0.03)
    width = min(cols, height * 0.6 * max(len(text), 4))
    left = float(np.clip(outline[:, 0].min(), 0.0, cols - width))
    top = outline[:, 1].min() - height
    if top < 0:  # no room above: put it below
        top = min(rows - height, outline[:, 1].max())
    return (left, float(top), left + width, float(top) + height)


def _objects(contour: Sequence[Sequence[float]], text: str, ds: Dataset, f: Finding
             ) -> tuple[hd.pr.GraphicObject, hd.pr.TextObject]:
    outline = to_dicom_xy(contour, ds, closed=True)
    graphic = hd.pr.GraphicObject(
        graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
        graphic_data=outline,
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        tracking_id=f.label,
        tracking_uid=f.tracking_uid,
    )
    label = hd.pr.TextObject(
        text_value=text,
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        bounding_box=_text_box(outline, text, ds),
        tracking_id=f.label,
        tracking_uid=generate_uid(entropy_srcs=[f.tracking_uid, "label"]),
    )
    return graphic, label


def build_presentation_state(
    result: AnalysisResult | Sequence[Finding],
    source_images: Sequence[Dataset],
    *,
    model: ModelInfo | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9003,
    instance_number: int = 1,
    series_description: str = "AI findings (GSPS)",
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """GSPS drawing every finding's outline and label on its source image.

    Parameters
    ----------
    result : AnalysisResult or sequence of Finding
        Findings with a contour, a box or per-slice outlines.
    source_images : sequence of Dataset
        Images of one series (a radiograph, or CT slices); the state references
        all of them, annotations reference the image each finding lies on.

    Raises
    ------
    ResultError
        When no finding can be drawn or a finding refers to an unknown image.
    """
    if not source_images:
        raise ResultError("a presentation state needs at least one source image")
    if isinstance(result, AnalysisResult):
        model = model or result.model
    if model is None:
        raise ResultError("model name/version required (pass model= or an AnalysisResult)")
    sources = images_by_uid(source_images)
    layers = {
        "critical": hd.pr.GraphicLayer("AI_CRITICAL", order=2, description="critical AI findings",
                                       display_color=hd.color.CIELabColor.from_rgb(255, 0, 0)),
        "other": hd.pr.GraphicLayer("AI_FINDINGS", order=1, description="AI findings",
                                    display_color=hd.color.CIELabColor.from_rgb(255, 255, 0)),
    }
    # (layer, sop uid) -> graphics, texts
    per_image: "OrderedDict[tuple[str, str], tuple[list, list]]" = OrderedDict()
    for f in findings_for(result):
        layer = "critical" if f.label in CRITICAL_LABELS else "other"
        text = label_text(f)
        slices = outline_regions(f)
        if slices:
            placements = [(s.contour, resolve_image(s.image, sources, f.label)) for s in slices]
        elif outline_2d(f):
            placements = [(outline_2d(f), resolve_image(f.image, sources, f.label))]
        else:
            logger.info("finding %s has no outline; not drawn in the GSPS", f.label)
            continue
        for contour, ds in placements:
            g, t = _objects(contour, text, ds, f)
            graphics, texts = per_image.setdefault((layer, str(ds.SOPInstanceUID)), ([], []))
            graphics.append(g)
            texts.append(t)
    if not per_image:
        raise ResultError("no finding with an outline or box: nothing to draw")
    annotations = [
        hd.pr.GraphicAnnotation(
            referenced_images=[sources[uid]],
            graphic_layer=layers[layer],
            graphic_objects=graphics,
            text_objects=texts,
        )
        for (layer, uid), (graphics, texts) in per_image.items()
    ]
    used = [layers[k] for k in ("other", "critical") if any(key[0] == k for key in per_image)]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(source_images),
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{model.name} {model.version}"[:64],
        software_versions=SOFTWARE_VERSION,
        device_serial_number=model.name[:64],
        content_label="AI_FINDINGS",
        content_description=f"AI findings by {model.name} {model.version}"[:64],
        graphic_annotations=annotations,
        graphic_layers=used,
        content_creator_name=None,
        series_description=series_description,
    )
    repair_inherited(gsps)
    copy_series_anatomy(gsps, source_images[0])
    return gsps


def read_annotations(gsps: Dataset) -> list[dict[str, object]]:
    """Per annotation: referenced SOP Instance UID, layer, outlines (pixel-centre x, y) and texts."""
    out = []
    for ann in gsps.GraphicAnnotationSequence:
        outlines = [
            np.asarray(go.GraphicData, dtype=np.float64).reshape(-1, 2) - 0.5
            for go in ann.get("GraphicObjectSequence", [])
        ]
        out.append({
            "sop_instance_uid": str(ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID),
            "layer": str(ann.GraphicLayer),
            "outlines": outlines,
            "texts": [str(t.UnformattedTextValue) for t in ann.get("TextObjectSequence", [])],
            "tracking_uids": [str(go.TrackingUID) for go in ann.get("GraphicObjectSequence", [])],
        })
    return out
