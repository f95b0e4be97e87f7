"""Typed AI findings and analysis results, the input of every result object.

The JSON form is the ``medws infer cxr --json`` contract (one object per input
image: ``path``, ``skipped``, ``abnormality``, ``scores``, ``findings``, ``model``)
extended with what the DICOM result objects need: the UIDs of the exact source
image (``source``) and, for CT, measurements in millimetres and Hounsfield units.

Coordinates
-----------
* ``box`` and ``contour`` are in the source image's pixel space, as
  ``(column, row)`` = ``(x, y)`` pairs with the DICOM convention of PS3.3
  C.10.5 (the centre of the top-left pixel is ``(0.5, 0.5)`` in SR/GSPS; our
  findings use ``(0, 0)`` for that centre, the numpy convention, and the
  writers add the half-pixel shift).
* ``centre_mm`` is in the patient coordinate system (PS3.3 C.7.6.2.1.1).
* ``slices`` holds per-slice outlines of a CT finding, each on its own image.
* ``mask`` is aligned to the source image (2-D, rows x columns) or, for CT, to
  ``mask_images`` (3-D, one plane per referenced slice, in that order).
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .errors import NodeError

logger = logging.getLogger(__name__)

#: Chest radiograph classes of the CXR lesion model (issue 3 contract).
CXR_LABELS = ("nodule_mass", "consolidation", "interstitial_opacity", "pleural_effusion", "pneumothorax")
#: CT finding labels produced by the CT pipelines.
CT_LABELS = ("nodule", "mass", "liver_lesion", "coronary_calcium")
LATERALITIES = ("left", "right", "bilateral")
CXR_ZONES = ("upper", "middle", "lower")
LUNG_LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
CORONARY_VESSELS = ("LM", "LAD", "LCX", "RCA")
STUDY_TYPES = ("cxr", "ct_nodule", "ct_cac", "ct_liver")


class ResultError(NodeError):
    """Base error of the result objects (findings, SR, SEG, GSPS, report)."""


class FindingFormatError(ResultError):
    """A findings JSON object or a Finding does not follow the contract."""


class SourceImageError(ResultError):
    """A finding refers to an image that was not given as a source image."""


@dataclass(frozen=True)
class ImageRef:
    """The exact source image (and frame) a finding's coordinates refer to."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    frame_number: int | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, frame_number: int | None = None) -> "ImageRef":
        """Reference to ``ds`` (its SOP Instance/Class, Series and Study UIDs)."""
        try:
            return cls(
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
                study_instance_uid=str(ds.get("StudyInstanceUID", "")),
                frame_number=frame_number,
            )
        except AttributeError as e:
            raise SourceImageError(f"source dataset lacks SOP Instance/Class UID: {e}") from e

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
        }
        if self.frame_number is not None:
            d["frame_number"] = self.frame_number
        return d

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ImageRef":
        try:
            return cls(
                sop_instance_uid=str(obj["sop_instance_uid"]),
                sop_class_uid=str(obj["sop_class_uid"]),
                series_instance_uid=str(obj.get("series_instance_uid", "")),
                study_instance_uid=str(obj.get("study_instance_uid", "")),
                frame_number=None if obj.get("frame_number") is None else int(obj["frame_number"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FindingFormatError(f"bad image reference {dict(obj)!r}: {e}") from e


@dataclass(frozen=True)
class SliceRegion:
    """Outline of a (CT) finding on one slice, in that slice's pixels (x, y)."""

    image: ImageRef
    contour: tuple[tuple[float, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image.to_json(), "contour": [list(p) for p in self.contour]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SliceRegion":
        return cls(image=ImageRef.from_json(obj["image"]), contour=_points(obj.get("contour"), 2, "slices.contour"))


@dataclass(frozen=True)
class ModelInfo:
    """Name and version of the model that produced a result (TID 4019)."""

    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class Finding:
    """One AI finding: what, how likely, where (TID 1410/1411 measurement group).

    Parameters
    ----------
    label : str
        Finding label (``CXR_LABELS`` or ``CT_LABELS``; others are allowed but
        must be coded in :mod:`dicom_node.codes` to be written to SR/SEG).
    probability : float or None
        Model probability in [0, 1].
    box : (x1, y1, x2, y2) or None
        Bounding box in source-image pixels.
    contour : tuple of (x, y)
        Outline in source-image pixels (closed implicitly).
    laterality, zone : str or None
        ``left``/``right``/``bilateral``; CXR zone ``upper``/``middle``/``lower``.
    image : ImageRef or None
        The image ``box``/``contour``/``mask`` refer to.
    centre_mm, long_axis_mm, short_axis_mm, volume_mm3, mean_hu : CT measurements.
    type : str or None
        Finding subtype (nodule: ``solid``/``part_solid``/``ground_glass``/
        ``calcified``; liver: ``cyst``/``hemangioma``/``metastasis``/``hcc``/...).
    lobe : str or None
        Lung lobe (``LUNG_LOBES``) or liver segment (``"S1"``..``"S8"``).
    category : str or None
        Reporting category (e.g. ``"Lung-RADS 4A"``, ``"LR-5"``, ``"CAC-DRS 2"``).
    vessel, agatston, calcium_volume_mm3 : coronary calcium (per vessel or total).
    slices : per-slice outlines (CT).
    mask : numpy array or None
        Binary (bool) or fractional (float in [0, 1]) mask.
    mask_images : images the planes of a 3-D mask belong to, in order.
    tracking_uid : str
        Stable UID tracking this finding across objects (SR, SEG, GSPS).
    algorithm : ModelInfo or None
        The model that produced this finding when it is not the result's model (e.g. the
        fine-grid ``cxr-nodule`` beside ``cxr-lesions``); its TID 4019 identification.
    """

    label: str
    probability: float | None = None
    box: tuple[float, float, float, float] | None = None
    contour: tuple[tuple[float, float], ...] = ()
    laterality: str | None = None
    zone: str | None = None
    image: ImageRef | None = None
    centre_mm: tuple[float, float, float] | None = None
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    volume_mm3: float | None = None
    mean_hu: float | None = None
    type: str | None = None
    lobe: str | None = None
    category: str | None = None
    vessel: str | None = None
    agatston: float | None = None
    calcium_volume_mm3: float | None = None
    slices: tuple[SliceRegion, ...] = ()
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    mask_images: tuple[ImageRef, ...] = ()
    tracking_uid: str = field(default_factory=generate_uid)
    algorithm: ModelInfo | None = None

    def __post_init__(self) -> None:
        if not self.label or not isinstance(self.label, str):
            raise FindingFormatError(f"finding label must be a non-empty string, got {self.label!r}")
        if self.probability is not None and not (0.0 <= float(self.probability) <= 1.0):
            raise FindingFormatError(f"{self.label}: probability {self.probability} is outside [0, 1]")
        if self.laterality is not None and self.laterality not in LATERALITIES:
            raise FindingFormatError(f"{self.label}: laterality {self.laterality!r} is not one of {LATERALITIES}")
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if x2 < x1 or y2 < y1:
                raise FindingFormatError(f"{self.label}: box {self.box} must be [x1, y1, x2, y2] with x2>=x1, y2>=y1")
        if self.mask is not None and self.mask.ndim == 3 and len(self.mask_images) != self.mask.shape[0]:
            raise FindingFormatError(
                f"{self.label}: 3-D mask has {self.mask.shape[0]} planes but {len(self.mask_images)} mask_images"
            )

    @property
    def region_contour(self) -> tuple[tuple[float, float], ...]:
        """The outline to draw: the contour, else the box as a rectangle, else ()."""
        if len(self.contour) >= 3:
            return self.contour
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
        return ()

    @property
    def diameter_mm(self) -> float | None:
        """Mean of long and short axis (Lung-RADS size), or the long axis alone."""
        if self.long_axis_mm is None:
            return None
        if self.short_axis_mm is None:
            return self.long_axis_mm
        return (self.long_axis_mm + self.short_axis_mm) / 2.0

    def with_image(self, image: ImageRef) -> "Finding":
        """Copy with ``image`` set (keeps the tracking UID)."""
        return replace(self, image=image)

    def to_json(self) -> dict[str, Any]:
        """The contract's finding object plus the optional extensions that are set."""
        d: dict[str, Any] = {
            "label": self.label,
            "probability": self.probability,
            "box": list(self.box) if self.box is not None else None,
            "contour": [list(p) for p in self.contour],
            "laterality": self.laterality,
            "zone": self.zone,
            "tracking_uid": self.tracking_uid,
        }
        if self.image is not None:
            d["image"] = self.image.to_json()
        for key in ("long_axis_mm", "short_axis_mm", "volume_mm3", "mean_hu", "type", "lobe",
                    "category", "vessel", "agatston", "calcium_volume_mm3"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.centre_mm is not None:
            d["centre_mm"] = list(self.centre_mm)
        if self.slices:
            d["slices"] = [s.to_json() for s in self.slices]
        if self.mask is not None:
            d["mask"] = encode_mask(self.mask)
        if self.mask_images:
            d["mask_images"] = [m.to_json() for m in self.mask_images]
        if self.algorithm is not None:
            d["model"] = self.algorithm.to_json()
        return d

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], image: ImageRef | None = None) -> "Finding":
        """Parse a finding object; ``image`` is used when the object names none.

        Spellings of the CT task outputs are accepted (``"lung nodule"``,
        ``"ground-glass"``, ``"right_upper"``, ``artery``, ``centre_patient_mm``).
        """
        if not isinstance(obj, Mapping) or "label" not in obj:
            raise FindingFormatError(f"a finding must be an object with a 'label', got {obj!r}")
        obj = _normalise(obj)
        try:
            box = obj.get("box")
            kwargs: dict[str, Any] = {
                "label": str(obj["label"]),
                "probability": None if obj.get("probability") is None else float(obj["probability"]),
                "box": None if box is None else tuple(float(v) for v in box),
                "contour": _points(obj.get("contour"), 2, "contour"),
                "laterality": obj.get("laterality"),
                "zone": obj.get("zone"),
                "image": ImageRef.from_json(obj["image"]) if obj.get("image") else image,
            }
            for key in ("long_axis_mm", "short_axis_mm", "volume_mm3", "mean_hu", "agatston", "calcium_volume_mm3"):
                if obj.get(key) is not None:
                    kwargs[key] = float(obj[key])
            for key in ("type", "lobe", "category", "vessel"):
                if obj.get(key) is not None:
                    kwargs[key] = str(obj[key])
            if obj.get("centre_mm") is not None:
                kwargs["centre_mm"] = tuple(float(v) for v in obj["centre_mm"])
            if obj.get("slices"):
                kwargs["slices"] = tuple(SliceRegion.from_json(s) for s in obj["slices"])
            if obj.get("mask") is not None:
                kwargs["mask"] = decode_mask(obj["mask"])
            if obj.get("mask_images"):
                kwargs["mask_images"] = tuple(ImageRef.from_json(m) for m in obj["mask_images"])
            if obj.get("tracking_uid"):
                kwargs["tracking_uid"] = str(obj["tracking_uid"])
            if obj.get("model"):
                kwargs["algorithm"] = ModelInfo(str(obj["model"]["name"]), str(obj["model"]["version"]))
        except FindingFormatError:
            raise
        except (TypeError, ValueError, KeyError) as e:
            raise FindingFormatError(f"bad finding {obj.get('label')!r}: {e}") from e
        if kwargs["box"] is not None and len(kwargs["box"]) != 4:
            raise FindingFormatError(f"{kwargs['label']}: box must have 4 numbers [x1, y1, x2, y2]")
        return cls(**kwargs)


@dataclass(frozen=True)
class AnalysisResult:
    """What one analysis task produced for one image or series.

    ``study_type`` selects the report template (``STUDY_TYPES``).  ``source``
    is the image (CXR) or representative image (CT) the result belongs to.
    """

    study_type: str
    model: ModelInfo
    findings: tuple[Finding, ...] = ()
    abnormality: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    skipped: str | None = None
    path: str | None = None
    source: ImageRef | None = None
    total_agatston: float | None = None
    # codes of what limits the analysis of this input (the task's ``warnings``, e.g.
    # "soft_reconstruction", "thick_slices"); the draft report words them
    limitations: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when the analysis covered the input (not skipped)."""
        return self.skipped is None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "skipped": self.skipped,
            "abnormality": self.abnormality,
            "scores": dict(self.scores),
            "findings": [f.to_json() for f in self.findings],
            "model": self.model.to_json(),
            "study_type": self.study_type,
        }
        if self.source is not None:
            d["source"] = self.source.to_json()
        if self.total_agatston is not None:
            d["total_agatston"] = self.total_agatston
        if self.limitations:
            d["warnings"] = [{"code": c} for c in self.limitations]
        return d

    @classmethod
    def from_json(
        cls, obj: Mapping[str, Any], source: ImageRef | Dataset | None = None, study_type: str | None = None
    ) -> "AnalysisResult":
        """Parse one ``medws infer ... --json`` line.

        Parameters
        ----------
        obj : mapping
            The decoded JSON object.
        source : ImageRef or Dataset, optional
            The DICOM image the inference ran on (the CLI output only names a
            path); findings without their own ``image`` refer to it.
        study_type : str, optional
            Overrides ``obj["study_type"]`` (default ``"cxr"``).
        """
        if not isinstance(obj, Mapping):
            raise FindingFormatError(f"an analysis result must be a JSON object, got {type(obj).__name__}")
        if isinstance(source, Dataset):
            source = ImageRef.from_dataset(source)
        if source is None and obj.get("source"):
            source = ImageRef.from_json(obj["source"])
        model = obj.get("model") or {}
        if not model.get("name") or not model.get("version"):
            raise FindingFormatError("analysis result lacks model name/version ('model': {'name', 'version'})")
        st = study_type or obj.get("study_type") or "cxr"
        if st not in STUDY_TYPES:
            raise FindingFormatError(f"unknown study type {st!r}; expected one of {STUDY_TYPES}")
        try:
            scores = {str(k): float(v) for k, v in (obj.get("scores") or {}).items()}
            abnormality = None if obj.get("abnormality") is None else float(obj["abnormality"])
            total = None if obj.get("total_agatston") is None else float(obj["total_agatston"])
        except (TypeError, ValueError, AttributeError) as e:
            raise FindingFormatError(f"bad scores/abnormality: {e}") from e
        findings = tuple(Finding.from_json(f, image=source) for f in (obj.get("findings") or []))
        limitations = tuple(str(w["code"]) for w in (obj.get("warnings") or [])
                            if isinstance(w, Mapping) and w.get("code"))
        return cls(
            study_type=st,
            model=ModelInfo(str(model["name"]), str(model["version"])),
            findings=findings,
            abnormality=abnormality,
            scores=scores,
            skipped=obj.get("skipped"),
            path=obj.get("path"),
            source=source,
            total_agatston=total,
            limitations=limitations,
        )


_LABEL_ALIASES = {"lung nodule": "nodule", "lung_nodule": "nodule", "coronary calcium": "coronary_calcium",
                  "liver lesion": "liver_lesion", "nodule/mass": "nodule_mass", "pleural effusion": "pleural_effusion",
                  "interstitial opacity": "interstitial_opacity"}
_LOBE_ALIASES = {"right_upper": "RUL", "right_middle": "RML", "right_lower": "RLL", "left_upper": "LUL",
                 "left_lower": "LLL"}


def _normalise(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Map the CT tasks' spellings onto the Finding fields."""
    d = dict(obj)
    label = str(d["label"])
    d["label"] = _LABEL_ALIASES.get(label.lower(), label)
    if isinstance(d.get("type"), str):
        d["type"] = d["type"].lower().replace("-", "_").replace(" ", "_")
    if isinstance(d.get("lobe"), str):
        d["lobe"] = _LOBE_ALIASES.get(d["lobe"].lower(), d["lobe"])
    if d.get("vessel") is None and d.get("artery"):
        d["vessel"] = d["artery"]
    if d.get("centre_mm") is None and d.get("centre_patient_mm") is not None:
        d["centre_mm"] = d["centre_patient_mm"]
    return d


def _points(value: Any, dim: int, what: str) -> tuple[tuple[float, ...], ...]:
    if not value:
        return ()
    try:
        pts = tuple(tuple(float(c) for c in p) for p in value)
    except (TypeError, ValueError) as e:
        raise FindingFormatError(f"{what}: points must be lists of numbers: {e}") from e
    if any(len(p) != dim for p in pts):
        raise FindingFormatError(f"{what}: every point must have {dim} coordinates")
    return pts  # type: ignore[return-value]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """JSON form of a mask: run lengths for binary masks, uint8 bytes for fractional.

    Runs alternate 0/1 over the C-ordered flattened mask, starting with zeros.
    """
    mask = np.asarray(mask)
    if mask.dtype == bool or np.array_equal(mask, mask.astype(bool)):
        flat = mask.astype(bool).ravel()
        change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        runs = np.diff(bounds).tolist()
        if flat.size and flat[0]:
            runs = [0] + runs
        return {"shape": list(mask.shape), "rle": runs}
    if mask.min() < 0 or mask.max() > 1:
        raise FindingFormatError("fractional masks must lie in [0, 1]")
    q = np.round(mask * 255).astype(np.uint8)
    return {"shape": list(mask.shape), "fractional_u8": base64.b64encode(q.tobytes()).decode("ascii")}


def decode_mask(obj: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask`."""
    try:
        shape = tuple(int(s) for s in obj["shape"])
        if "rle" in obj:
            values = np.zeros(len(obj["rle"]), dtype=bool)
            values[1::2] = True
            flat = np.repeat(values, np.asarray(obj["rle"], dtype=np.int64))
            return flat.reshape(shape)
        q = np.frombuffer(base64.b64decode(obj["fractional_u8"]), dtype=np.uint8)
        return (q.astype(np.float32) / 255.0).reshape(shape)
    except (KeyError, ValueError, TypeError) as e:
        raise FindingFormatError(f"bad mask encoding: {e}") from e


def images_by_uid(source_images: Iterable[Dataset]) -> dict[str, Dataset]:
    """Map SOP Instance UID -> dataset."""
    return {str(ds.SOPInstanceUID): ds for ds in source_images}


def resolve_image(image: ImageRef | None, sources: Mapping[str, Dataset], what: str) -> Dataset:
    """The source dataset ``image`` refers to; a clear error when it is missing."""
    if image is None:
        if len(sources) == 1:
            return next(iter(sources.values()))
        raise SourceImageError(f"{what}: finding names no source image and {len(sources)} images were given")
    try:
        return sources[image.sop_instance_uid]
    except KeyError:
        raise SourceImageError(
            f"{what}: image {image.sop_instance_uid} is not among the {len(sources)} source images given"
        ) from None


def findings_for(result_or_findings: "AnalysisResult | Sequence[Finding]") -> tuple[Finding, ...]:
    """Findings of a result, or the given sequence as a tuple."""
    if isinstance(result_or_findings, AnalysisResult):
        return result_or_findings.findings
    return tuple(result_or_findings)
