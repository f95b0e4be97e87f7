"""The one place where public chest X-ray label names map to our five finding classes.

Our classes (in model output order): ``nodule_mass``, ``consolidation``,
``interstitial_opacity``, ``pleural_effusion``, ``pneumothorax``.

A public label that maps to none of them (e.g. NIH "Cardiomegaly", "Atelectasis",
"Infiltration") is kept as an *other* finding: the image is abnormal but not positive
for any of our classes, so it must not be used as a normal.  Labels meaning "nothing
found" are listed in :data:`NORMAL_LABELS`.

Choices worth knowing (documented in docs/models.md):
- NIH/RSNA "Pneumonia" and RSNA "Lung Opacity" -> consolidation (airspace opacity);
  Google 2019 expert "Airspace opacity" -> consolidation.
- NIH "Infiltration" and VinDr "Infiltration"/"Lung Opacity" are ambiguous (airspace
  or interstitial) -> other.
- "Fibrosis", VinDr "ILD"/"Pulmonary fibrosis" -> interstitial_opacity; "Edema" -> other
  (mixed interstitial/alveolar pattern).
- TBX11K tuberculosis categories -> other (TB is not one of our classes).
"""
from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "nodule_mass",
    "consolidation",
    "interstitial_opacity",
    "pleural_effusion",
    "pneumothorax",
)

NORMAL_LABELS = frozenset({"no finding", "normal", "no findings", "healthy"})

NIH: dict[str, str] = {
    "Nodule": "nodule_mass",
    "Mass": "nodule_mass",
    "Consolidation": "consolidation",
    "Pneumonia": "consolidation",
    "Fibrosis": "interstitial_opacity",
    "Effusion": "pleural_effusion",
    "Pneumothorax": "pneumothorax",
}

# radiologist-adjudicated labels for NIH images (Majkowska et al., Radiology 2019)
GOOGLE2019: dict[str, str] = {
    "Nodule or mass": "nodule_mass",
    "Airspace opacity": "consolidation",
    "Pneumothorax": "pneumothorax",
}

CHESTX_DET: dict[str, str] = {
    "Nodule": "nodule_mass",
    "Mass": "nodule_mass",
    "Consolidation": "consolidation",
    "Fibrosis": "interstitial_opacity",
    "Effusion": "pleural_effusion",
    "Pneumothorax": "pneumothorax",
    "Diffuse Nodule": "interstitial_opacity",  # miliary/diffuse nodular interstitial pattern
}

VINDR: dict[str, str] = {
    "Nodule/Mass": "nodule_mass",
    "Consolidation": "consolidation",
    "ILD": "interstitial_opacity",
    "Pulmonary fibrosis": "interstitial_opacity",
    "Pleural effusion": "pleural_effusion",
    "Pneumothorax": "pneumothorax",
}

RSNA: dict[str, str] = {
    "Lung Opacity": "consolidation",
}

SIIM: dict[str, str] = {
    "Pneumothorax": "pneumothorax",
}

TBX11K: dict[str, str] = {}

MAPS: dict[str, dict[str, str]] = {
    "nih": NIH,
    "google2019": GOOGLE2019,
    "chestx-det": CHESTX_DET,
    "vindr": VINDR,
    "rsna": RSNA,
    "siim": SIIM,
    "tbx11k": TBX11K,
}


def is_normal_label(name: str) -> bool:
    """True for labels that mean "no finding"."""
    return name.strip().lower() in NORMAL_LABELS


def map_label(name: str, source: str) -> str | None:
    """Our class for a public label of ``source`` ("nih", "vindr", ...), or None (other/normal).

    Matching is exact first, then case-insensitive.
    """
    table = MAPS[source]
    name = name.strip()
    if name in table:
        return table[name]
    lowered = {k.lower(): v for k, v in table.items()}
    return lowered.get(name.lower())


def split_labels(names: list[str] | set[str], source: str) -> tuple[set[str], set[str]]:
    """Split public labels into (our classes, other findings); "no finding" labels are dropped."""
    ours: set[str] = set()
    other: set[str] = set()
    for n in names:
        if not n or is_normal_label(n):
            continue
        cls = map_label(n, source)
        if cls is None:
            other.add(n.strip())
        else:
            ours.add(cls)
    return ours, other
