"""Exceptions of the labeling tool (one base class, specific subclasses)."""
from __future__ import annotations


class LabelingError(Exception):
    """Base class of every labeling-tool error."""


class DeidError(LabelingError):
    """De-identification failed or was refused (PS3.15 Annex E)."""


class KeyFileError(DeidError):
    """The re-identification key file is missing, unsafe, or unreadable."""


class NotDeidentifiedError(LabelingError):
    """An export was asked to include data that is not de-identified."""


class StoreError(LabelingError):
    """The label store refused an operation (unknown image, bad annotation ...)."""


class SchemaError(LabelingError):
    """A label schema is missing or malformed."""


class ExportError(LabelingError):
    """A dataset export could not be written."""
