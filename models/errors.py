"""Exceptions of the ``models`` package: one base class, specific subclasses.

Every message says what is wrong and how to fix it.
"""
from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by :mod:`models`."""


class ModelCardError(ModelError):
    """A model card is missing, unreadable or has an invalid field.

    Parameters
    ----------
    message : str
        What is wrong.
    field : str or None
        The offending field of the card (``None`` when the whole card is unreadable).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelNotFoundError(ModelError):
    """No model (or no such version) in any registry directory."""


class ModelIntegrityError(ModelError):
    """The weights file does not match the sha256 recorded in its model card."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: sha256 {actual} does not match the model card's {expected}; "
            "the weights were modified or truncated — reinstall the model or re-export it "
            "and write its card again"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class UnsupportedInputError(ModelError):
    """An input the model cannot (or must not) analyse; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
