"""Signing: verify the password, check QA, freeze the report, write the VERIFIED SR.

The signed document is a new TID 1500 SR Comprehensive 3D (``VERIFIED``, Verifying
Observer name/organisation/time, PS3.3 C.17.2) written by :mod:`dicom_node.sr`; it lists
the accepted findings (with the radiologist's edits) and references the draft SR in the
Predecessor Documents Sequence.  An addendum is another VERIFIED SR referencing the signed
one.  Both are stored in the archive, queued to the PACS through the outbox and audited.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from dicom_node import sr as node_sr
from dicom_node.db import returned_id
from dicom_node.findings import Finding, ImageRef, ModelInfo
from dicom_node.outbox import Outbox
from dicom_node.peers import PeerRegistry

from workstation.core import qa
from workstation.core.review import ReviewItem
from workstation.core.store import ReadingStore, StoreError
from workstation.core.users import AuthenticationError, User, UserStore

logger = logging.getLogger(__name__)

UNVERIFIED, VERIFIED = "UNVERIFIED", "VERIFIED"


class SigningError(Exception):
    """Signing was refused; the message says why and what to do."""


class SigningBlocked(SigningError):
    """Blocking QA checks failed."""

    def __init__(self, messages: Sequence[qa.QAMessage]) -> None:
        self.messages = list(messages)
        super().__init__("signing blocked by QA: " + "; ".join(m.format() for m in self.messages))


@dataclass
class SignResult:
    sr_sop_uid: str
    sr_path: Path
    predecessor_uid: str
    report_id: int
    warnings: list[qa.QAMessage] = field(default_factory=list)
    outbox_rows: int = 0


def _sr_datasets(store: ReadingStore, study_uid: str) -> list[Dataset]:
    out = []
    for r in store.archive.instances(study_uid=study_uid):
        if str(r["sop_class_uid"]).startswith("1.2.840.10008.5.1.4.1.1.88."):
            out.append(pydicom.dcmread(store.archive.absolute(r["path"])))
    return out


def _content_key(ds: Dataset) -> str:
    return f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"


def latest_sr(store: ReadingStore, study_uid: str, flag: str) -> Dataset | None:
    """Newest stored SR of the study with VerificationFlag ``flag``."""
    cands = [ds for ds in _sr_datasets(store, study_uid) if str(ds.get("VerificationFlag", "")) == flag]
    return max(cands, key=_content_key) if cands else None


def _image_datasets(store: ReadingStore, study_uid: str) -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    for r in store.archive.instances(study_uid=study_uid):
        if str(r["sop_class_uid"]).startswith("1.2.840.10008.5.1.4.1.1.88."):
            continue
        ds = pydicom.dcmread(store.archive.absolute(r["path"]), stop_before_pixels=True)
        if "Rows" in ds:
            out[str(ds.SOPInstanceUID)] = ds
    return out


def to_node_finding(it: ReviewItem, images: dict[str, Dataset]) -> Finding:
    """A reviewed item as a :class:`dicom_node.findings.Finding` on its exact source image."""
    ds = images.get(it.sop_uid) if it.sop_uid else (next(iter(images.values())) if len(images) == 1 else None)
    if ds is None:
        raise SigningError(f"finding {it.ref} refers to image {it.sop_uid or '?'} which is not in the study")
    contour = tuple((float(x), float(y)) for x, y in (it.contour or []))
    return Finding(label=it.label, probability=it.probability if it.source == "ai" else None,
                   box=tuple(it.box) if it.box else None, contour=contour, laterality=it.laterality, zone=it.zone,
                   image=ImageRef.from_dataset(ds), tracking_uid=it.id if it.id.replace(".", "").isdigit() else
                   pydicom.uid.generate_uid(entropy_srcs=[it.id]))


def _model_of(items: Sequence[ReviewItem]) -> ModelInfo:
    for it in items:
        if it.source == "ai" and it.model_name:
            return ModelInfo(it.model_name, it.model_version or "0")
    return ModelInfo("medws-workstation-manual", "1.0.0")


def _store_dataset(store: ReadingStore, ds: Dataset) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "sr.dcm"
        ds.save_as(p, enforce_file_format=True)
        store.archive.store_file(p, source_ae="MEDWS_WS")
    rel = store.archive.relative_path(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    return store.archive.absolute(rel)


def queue_to_outbox(store: ReadingStore, ds: Dataset, path: Path, kind: str = "signed_sr") -> int:
    """Queue a stored object to every registered peer through the node's outbox; returns the count."""
    peers = PeerRegistry(store.db, store.audit).list()
    box = Outbox(store.db)
    for peer in peers:
        box.add(peer.name, path, kind=kind, study_uid=str(ds.StudyInstanceUID),
                sop_instance_uid=str(ds.SOPInstanceUID))
    return len(peers)


def _verify_user(users: UserStore, name: str, password: str) -> User:
    try:
        user = users.verify(name, password)
    except AuthenticationError as e:
        raise SigningError(str(e)) from e
    if not user.can_sign:
        raise SigningError(f"user {name} has role {user.role}; only radiologists sign reports")
    return user


def ensure_draft_sr(store: ReadingStore, study_uid: str, items: Sequence[ReviewItem],
                    images: dict[str, Dataset]) -> Dataset:
    """The stored UNVERIFIED draft SR; written now from the AI findings if the pipeline stored none."""
    draft = latest_sr(store, study_uid, UNVERIFIED)
    if draft is not None:
        return draft
    ai = [it for it in items if it.source == "ai"]
    sources = list(images.values())
    if not sources:
        raise SigningError(f"study {study_uid} has no images to reference")
    doc = node_sr.build_measurement_report([to_node_finding(it, images) for it in ai], sources,
                                           model=_model_of(ai), study_type="cxr")
    _store_dataset(store, doc)
    logger.info("no draft SR was stored for the study; wrote one from the AI findings")
    return doc


def sign(store: ReadingStore, users: UserStore, study_uid: str, user_name: str, password: str,
         text: str, items: Sequence[ReviewItem], qa_config: qa.QAConfig | None = None,
         organisation: str = "medws", language: str = "en", now: _dt.datetime | None = None) -> SignResult:
    """Sign a study's report; raises :class:`SigningError` / :class:`SigningBlocked` and changes nothing then."""
    user = _verify_user(users, user_name, password)
    if store.report(study_uid).state == "signed":
        raise SigningError("this study is already signed; write an addendum")
    messages = qa.run_checks(text, items, qa_config, language)
    block = qa.blocking(messages)
    if block:
        raise SigningBlocked(block)
    if not text.strip():
        raise SigningError("the report text is empty")
    when = now or _dt.datetime.now().astimezone()
    images = _image_datasets(store, study_uid)
    draft = ensure_draft_sr(store, study_uid, items, images)
    accepted = [it for it in items if it.status == "accepted"]
    findings = [to_node_finding(it, images) for it in accepted]
    doc = node_sr.build_signed_report(findings, list(images.values()),
                                      node_sr.Verification(user.display_name, organisation, when), draft,
                                      model=_model_of(accepted or list(items)), study_type="cxr")
    path = _store_dataset(store, doc)
    body = json.dumps({"text": text, "language": language, "sr_sop_instance_uid": str(doc.SOPInstanceUID),
                       "qa_warnings": [m.format() for m in messages],
                       "findings": [{"id": it.id, "label": it.label, "laterality": it.laterality,
                                     "size_mm": it.size_mm, "source": it.source} for it in accepted]},
                      ensure_ascii=False)
    ts = when.timestamp()
    with store.db.transaction() as conn:
        cur = conn.execute("INSERT INTO reports (study_uid, state, body, author, signed_at, created_at, updated_at) "
                           "VALUES (?, 'signed', ?, ?, ?, ?, ?) RETURNING id", (study_uid, body, user.name, ts, ts, ts))
        rid = returned_id(cur)
        store.audit.record("report.sign", user.name, conn=conn, study_uid=study_uid, report_id=rid,
                           sr_sop_instance_uid=str(doc.SOPInstanceUID),
                           predecessor=str(draft.SOPInstanceUID),
                           qa_warnings=[m.format() for m in messages], accepted=len(accepted),
                           rejected=sum(1 for it in items if it.status == "rejected"))
    n = queue_to_outbox(store, doc, path)
    logger.info("report signed by %s (%d QA warnings), SR queued to %d peer(s)", user.name, len(messages), n)
    return SignResult(str(doc.SOPInstanceUID), path, str(draft.SOPInstanceUID), rid, messages, n)


def addendum(store: ReadingStore, users: UserStore, study_uid: str, user_name: str, password: str,
             text: str, items: Sequence[ReviewItem], organisation: str = "medws",
             now: _dt.datetime | None = None) -> SignResult:
    """A signed addendum: a new VERIFIED SR that references the signed one."""
    user = _verify_user(users, user_name, password)
    if not text.strip():
        raise SigningError("the addendum text is empty")
    signed = latest_sr(store, study_uid, VERIFIED)
    if signed is None or store.report(study_uid).state != "signed":
        raise SigningError("there is no signed report to add to; sign the report first")
    when = now or _dt.datetime.now().astimezone()
    images = _image_datasets(store, study_uid)
    accepted = [it for it in items if it.status == "accepted"]
    doc = node_sr.build_signed_report([to_node_finding(it, images) for it in accepted], list(images.values()),
                                      node_sr.Verification(user.display_name, organisation, when), signed,
                                      model=_model_of(accepted or list(items)), study_type="cxr",
                                      series_description="Addendum (TID 1500)")
    path = _store_dataset(store, doc)
    ts = when.timestamp()
    with store.db.transaction() as conn:
        cur = conn.execute("INSERT INTO reports (study_uid, state, body, author, signed_at, created_at, updated_at) "
                           "VALUES (?, 'addendum', ?, ?, ?, ?, ?) RETURNING id",
                           (study_uid, json.dumps({"text": text, "sr_sop_instance_uid": str(doc.SOPInstanceUID)},
                                                  ensure_ascii=False), user.name, ts, ts, ts))
        rid = returned_id(cur)
        store.audit.record("report.addendum", user.name, conn=conn, study_uid=study_uid, report_id=rid,
                           sr_sop_instance_uid=str(doc.SOPInstanceUID), predecessor=str(signed.SOPInstanceUID))
    n = queue_to_outbox(store, doc, path, kind="addendum_sr")
    return SignResult(str(doc.SOPInstanceUID), path, str(signed.SOPInstanceUID), rid, [], n)


__all__ = ["SigningError", "SigningBlocked", "SignResult", "sign", "addendum", "latest_sr", "StoreError"]
