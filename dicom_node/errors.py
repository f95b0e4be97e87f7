"""Exceptions of the DICOM node.

Every failure the node raises derives from :class:`NodeError`.  Errors met while
receiving an instance carry the DIMSE status they map to (PS3.4 Annex B.2.3 for
C-STORE, PS3.7 Annex C for the general codes), so the network handlers stay thin.
"""
from __future__ import annotations


class NodeError(Exception):
    """Base class of every error raised by :mod:`dicom_node`.

    ``status`` is the DIMSE status a network handler answers with when this error
    escapes from the work it called (0xC000 "cannot understand" unless a subclass
    says otherwise).
    """

    status: int = 0xC000


class ConfigError(NodeError):
    """The configuration (file, environment or command line) is invalid."""


class ArchiveError(NodeError):
    """The archive could not store or read an instance."""


class InvalidDatasetError(ArchiveError):
    """The received data set cannot be parsed or lacks an attribute the archive
    needs (PS3.4 B.2.3: 0xC000 "Error: cannot understand")."""

    status = 0xC000


class SOPClassMismatchError(ArchiveError):
    """The data set does not match the SOP Class or Instance named in the request
    (PS3.4 B.2.3: 0xA900 "Error: data set does not match SOP Class")."""

    status = 0xA900


class OutOfResourcesError(ArchiveError):
    """Storage refused for lack of resources: too large, disk full, write error
    (PS3.4 B.2.3: 0xA700 "Refused: out of resources")."""

    status = 0xA700


class TooLargeError(OutOfResourcesError):
    """The instance is larger than the configured maximum (``max_instance_bytes``)."""


class DuplicateRejectedError(ArchiveError):
    """A different instance with the same SOP Instance UID was refused because the
    duplicate policy is ``reject`` (PS3.7 C.4: 0x0111 "Duplicate SOP Instance")."""

    status = 0x0111


class PeerError(NodeError):
    """A peer is unknown, already registered, or described incompletely."""


class AssociationError(NodeError):
    """An association with a peer could not be established or failed."""


class JobError(NodeError):
    """A job queue operation was invalid (unknown job, wrong state)."""
