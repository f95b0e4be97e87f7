"""Coded concepts for AI findings in SR, SEG and GSPS (PS3.16 context groups).

Standard codes (SNOMED CT ``SCT``, DICOM ``DCM``, UCUM) are used wherever one
exists; the few concepts without a standard code that we could verify use the
private scheme ``99MEDWS`` (PS3.16 §8.2: private designators start with "99").
The table in ``docs/results.md`` lists every code used here.
"""
from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from .findings import ResultError

PRIVATE_SCHEME = "99MEDWS"


def _sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "SCT", meaning)


def _dcm(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "DCM", meaning)


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


#: Finding type (TID 1501 "Finding", SEG Segmented Property Type) per label.
FINDING_TYPES: dict[str, CodedConcept] = {
    # chest radiograph classes; CID 6104 "Abnormal Opacity" / CID 6105 "Abnormal Lucency"
    "nodule_mass": _sct("27925004", "Nodule"),
    "consolidation": _sct("95436008", "Lung consolidation"),
    "interstitial_opacity": _dcm("112004", "Abnormal interstitial pattern"),
    "pleural_effusion": _sct("60046008", "Pleural effusion"),
    "pneumothorax": _sct("36118008", "Pneumothorax"),
    # CT
    "nodule": _sct("27925004", "Nodule"),
    "mass": _sct("4147007", "Mass"),
    "liver_lesion": _sct("52988006", "Lesion"),
    "coronary_calcium": _sct("29483008", "Calcified atheromatous plaque"),
}

#: Segmented Property Category (CID 7150) of every finding segment.
ABNORMAL_STRUCTURE = _sct("49755003", "Morphologically abnormal structure")

#: CID 244 Laterality.
LATERALITY: dict[str, CodedConcept] = {
    "left": _sct("7771000", "Left"),
    "right": _sct("24028007", "Right"),
    "bilateral": _sct("51440002", "Bilateral"),
}

LUNG = _sct("39607008", "Lung")
PLEURA = _sct("3120008", "Pleural structure")
LIVER = _sct("10200004", "Liver")
CORONARY_ARTERY = _sct("41801008", "Coronary artery")

#: Chest radiograph lung zones (finding site).
CXR_ZONES: dict[str, CodedConcept] = {
    "upper": _sct("281392002", "Upper zone of lung"),
    "middle": _sct("281393007", "Middle zone of lung"),
    "lower": _sct("281394001", "Lower zone of lung"),
}

#: Lung lobes as (anatomic location, laterality).
LUNG_LOBES: dict[str, tuple[CodedConcept, CodedConcept | None]] = {
    "RUL": (_sct("45653009", "Upper lobe of lung"), LATERALITY["right"]),
    "RML": (_sct("72481006", "Middle lobe of right lung"), None),
    "RLL": (_sct("90572001", "Lower lobe of lung"), LATERALITY["right"]),
    "LUL": (_sct("45653009", "Upper lobe of lung"), LATERALITY["left"]),
    "LLL": (_sct("90572001", "Lower lobe of lung"), LATERALITY["left"]),
}

#: Coronary arteries for per-vessel calcium scores.
CORONARY_VESSELS: dict[str, CodedConcept] = {
    "LM": _sct("3227004", "Left Main Coronary Artery"),
    "LAD": _sct("59438005", "Left Anterior Descending Coronary Artery"),
    "LCX": _sct("57396003", "Circumflex Coronary Artery"),
    "RCA": _sct("13647002", "Right Coronary Artery"),
}

#: Finding subtypes (qualitative evaluation values).
FINDING_SUBTYPES: dict[str, CodedConcept] = {
    "solid": _dcm("111462", "Solid mass"),
    "ground_glass": _dcm("112120", "Ground glass opacity"),
    "part_solid": _private("PARTSOLID", "Part-solid nodule"),
    "calcified": _sct("237897009", "Calcified"),
    "cyst": _sct("367643001", "Cyst"),
    "hemangioma": _sct("400210000", "Hemangioma"),
    "metastasis": _sct("128462008", "Metastasis"),
    "hcc": _private("HCC", "Hepatocellular carcinoma"),
    "indeterminate": _private("INDETERMINATE", "Indeterminate lesion"),
    # the liver task's descriptive subtypes (models.ct.liver.SUBTYPES): features, not diagnoses
    "cyst_like": _private("CYSTLIKE", "Cyst-like lesion (water attenuation, no enhancement)"),
    "hcc_like": _private("HCCLIKE", "Lesion with HCC-like enhancement features"),
    "hypoenhancing": _private("HYPOENH", "Hypo-enhancing lesion"),
    "indeterminate_enhancing": _private("INDETENH", "Indeterminate enhancing lesion"),
}

# measurement names (TID 300) and units (UCUM)
PROBABILITY = _dcm("122157", "Probability")
LONG_AXIS = _sct("103339001", "Long Axis")
SHORT_AXIS = _sct("103340004", "Short Axis")
VOLUME = _sct("118565006", "Volume")
ATTENUATION = _dcm("112031", "Attenuation Coefficient")
MEAN = _sct("373098007", "Mean")
CALCIUM_SCORE = _dcm("112058", "Calcium score")
AGATSTON_METHOD = _dcm("112055", "Agatston scoring method")
CALCIUM_VOLUME = _dcm("122660", "Calcium Volume")
FINDING_TYPE_NAME = _dcm("121071", "Finding")
NO_ABNORMALITY = _dcm("111286", "No abnormality")
SUBTYPE_NAME = _private("SUBTYPE", "Finding subtype")
CATEGORY_NAME = _private("CATEGORY", "Reporting category")

UNIT_ONE = CodedConcept("1", "UCUM", "no units")
UNIT_MM = CodedConcept("mm", "UCUM", "millimeter")
UNIT_MM3 = CodedConcept("mm3", "UCUM", "cubic millimeter")
UNIT_HU = CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")

#: Procedure reported (CID 100) per study type.
PROCEDURES: dict[str, CodedConcept] = {
    "cxr": _sct("413815006", "Chest imaging"),
    "ct_nodule": _sct("413815006", "Chest imaging"),
    "ct_cac": CodedConcept.from_code(codes.SCT.CardiacCTForCalciumScoring),
    "ct_liver": _sct("363679005", "Imaging procedure"),
}

#: Algorithm family (CID 7162) for SEG algorithm identification.
AI_FAMILY = CodedConcept.from_code(codes.cid7162.ArtificialIntelligence)


def finding_type(label: str) -> CodedConcept:
    """Coded finding type for ``label``; a clear error for unknown labels."""
    try:
        return FINDING_TYPES[label]
    except KeyError:
        raise ResultError(
            f"no code for finding label {label!r}; add it to dicom_node.codes.FINDING_TYPES"
        ) from None


def category_code(category: str) -> CodedConcept:
    """Private code for a reporting category such as ``"Lung-RADS 4A"``."""
    value = "".join(c if c.isalnum() else "_" for c in category.upper())[:16]
    return _private(value, category)


def label_for_code(code: CodedConcept, candidates: dict[str, CodedConcept] = FINDING_TYPES) -> list[str]:
    """All labels whose code equals ``code`` (value and scheme)."""
    return [k for k, c in candidates.items() if c.value == code.value and c.scheme_designator == code.scheme_designator]
