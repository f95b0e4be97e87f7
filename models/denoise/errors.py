"""Errors of the CT denoising task."""
from __future__ import annotations

from models.errors import ModelError, UnsupportedInputError


class DenoiseError(ModelError):
    """Base class of errors raised by :mod:`models.denoise`."""


class NotCtSeriesError(DenoiseError, UnsupportedInputError):
    """The input is not a single-frame CT image series the denoiser can process."""
