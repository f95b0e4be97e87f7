"""IHE IOCM rejection note: a Key Object Selection that withdraws superseded AI objects.

When a study is analysed again (new input, new model version), the node replaces its SR,
SEG and GSPS.  Objects not yet delivered are simply not sent; objects a PACS already holds
are withdrawn with a *rejection note* (IHE RAD TF-1 IOCM, "Rejection Note Stored" RAD-66):
a Key Object Selection Document (PS3.3 A.35.4) whose document title is
(113001, DCM, "Rejected for Quality Reasons") (CID 7011) and that references every rejected
instance.  dcm4chee-arc and other IOCM image managers then hide those instances; the new
objects (whose SR names its predecessor) take their place.
"""
from __future__ import annotations

import logging
from typing import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from .findings import ResultError
from .result_objects import MANUFACTURER

logger = logging.getLogger(__name__)

REJECTION_TITLE = codes.DCM.RejectedForQualityReasons
SERIES_NUMBER = 9904


def build_rejection_note(rejected: Sequence[Dataset], series_instance_uid: str, sop_instance_uid: str,
                         description: str = "superseded by a newer analysis of this study") -> Dataset:
    """Return the KOS rejection note of ``rejected`` (datasets of one study, headers suffice).

    Raises
    ------
    ResultError
        Nothing to reject, or the objects belong to more than one study.
    """
    if not rejected:
        raise ResultError("a rejection note needs at least one rejected object")
    studies = {str(ds.StudyInstanceUID) for ds in rejected}
    if len(studies) != 1:
        raise ResultError(f"a rejection note covers one study, got {len(studies)}")
    content = hd.ko.KeyObjectSelection(document_title=REJECTION_TITLE, referenced_objects=list(rejected),
                                       description=description)
    return hd.ko.KeyObjectSelectionDocument(
        evidence=list(rejected), content=content, series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBER, sop_instance_uid=sop_instance_uid, instance_number=1,
        manufacturer=MANUFACTURER)


def rejected_uids(note: Dataset) -> set[str]:
    """SOP Instance UIDs a rejection note references (its evidence sequence)."""
    return {str(sop.ReferencedSOPInstanceUID)
            for study in note.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for sop in series.ReferencedSOPSequence}
