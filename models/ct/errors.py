"""Exceptions of the CT analyses (one base class, specific subclasses)."""
from __future__ import annotations

from models.errors import ModelError


class CTError(ModelError):
    """Base class of every CT-analysis error."""


class SeriesError(CTError):
    """The DICOM files do not form one usable CT volume (say which and how to fix it)."""


class MissingSliceError(SeriesError):
    """A gap in slice positions larger than the regular spacing (slices missing)."""


class GantryTiltError(SeriesError):
    """The series was acquired with gantry tilt (slices sheared); pass ``correct_tilt=True``."""


class PhaseError(CTError):
    """Contrast phases cannot be identified or are incomplete for the task."""
