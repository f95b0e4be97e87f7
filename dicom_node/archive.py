"""The archive: received DICOM files stored as sent, plus their index.

Storage contract (ARCHITECTURE "The archive"): the encoded data set is written with a
File Meta Information header to a temporary file in the destination folder, flushed,
fsync'd and renamed to ``<root>/dicom/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``;
then the patient/study/series/instance rows are written in ONE transaction.  Only
after both does :meth:`Archive.store` return, i.e. before the C-STORE success status
is sent.  A crash between rename and commit leaves a complete file without a row;
:meth:`Archive.reconcile` (run at start-up) indexes it.  The index never holds a row
whose file is missing.
"""
from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicom_node.audit import Audit
from dicom_node.config import NodeConfig
from dicom_node.db import Database
from dicom_node.dicom_file import check_structure, file_meta_bytes
from dicom_node.errors import (
    ArchiveError,
    DuplicateRejectedError,
    InvalidDatasetError,
    OutOfResourcesError,
    SOPClassMismatchError,
    TooLargeError,
)
from dicom_node.privacy import phi

logger = logging.getLogger(__name__)

#: a UID as a safe path component (PS3.5 9.1 allows digits and dots; letters are
#: tolerated for legacy senders, anything that could leave the folder is not)
_UID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


class StoreOutcome(enum.Enum):
    """What :meth:`Archive.store` did with an instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes already held; nothing written
    REPLACED = "replaced"  # different bytes, same SOP Instance UID; newest kept
    IGNORED = "ignored"  # different bytes, duplicate policy keep_first


@dataclass(frozen=True)
class StoreResult:
    """Result of one store: outcome, file path and the instance's hierarchy."""

    outcome: StoreOutcome
    path: Path
    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes the index keeps for one instance (worklists and routing)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    study_id: str
    study_date: str
    study_time: str
    study_description: str
    referring_physician: str
    modality: str
    body_part: str
    series_number: int | None
    series_description: str
    instance_number: int | None
    image_type: str
    view_position: str
    contrast_agent: str
    slice_thickness: float | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a badly encoded optional value is not fatal
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _number(ds: Dataset, keyword: str, kind: type) -> Any:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return kind(value)
    except Exception:  # noqa: BLE001
        return None


def header_from_dataset(ds: Dataset) -> InstanceHeader:
    """Extract the indexed attributes from a (header-only) data set.

    Raises :class:`InvalidDatasetError` when an identifying UID is missing.
    """
    uids = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = _text(ds, keyword)
        if not value:
            raise InvalidDatasetError(f"data set has no {keyword}; the sender must include it (PS3.3 C.12.1)")
        if not _UID_RE.match(value) or ".." in value:
            raise InvalidDatasetError(f"{keyword} is not a valid UID (PS3.5 9.1)")
        uids[keyword] = value
    return InstanceHeader(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        accession_number=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        series_number=_number(ds, "SeriesNumber", int),
        series_description=_text(ds, "SeriesDescription"),
        instance_number=_number(ds, "InstanceNumber", int),
        image_type=_text(ds, "ImageType"),
        view_position=_text(ds, "ViewPosition"),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        slice_thickness=_number(ds, "SliceThickness", float),
        rows=_number(ds, "Rows", int),
        columns=_number(ds, "Columns", int),
        number_of_frames=_number(ds, "NumberOfFrames", int),
    )


_HEADER_KEYWORDS = (
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "SOPInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
    "Modality", "ReferringPhysicianName", "StudyDescription", "SeriesDescription", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "ContrastBolusAgent", "BodyPartExamined", "SliceThickness", "ViewPosition",
    "StudyInstanceUID", "SeriesInstanceUID", "StudyID", "SeriesNumber", "InstanceNumber", "NumberOfFrames", "Rows",
    "Columns",
)
#: top-level tags the index reads; only these are decoded (the fast path)
HEADER_TAGS = frozenset(int(tag_for_keyword(k)) for k in _HEADER_KEYWORDS)  # type: ignore[arg-type]


#: (keyword, VR) of each indexed tag, from the data dictionary (PS3.6)
_HEADER_VRS = {int(tag_for_keyword(k)): (k, dictionary_VR(k)) for k in _HEADER_KEYWORDS}  # type: ignore[arg-type]
#: VRs whose values the Specific Character Set applies to (PS3.5 6.1.2.3)
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
#: character sets the fast decoder handles, as Python codecs (PS3.3 C.12.1.1.2)
_SIMPLE_CHARSETS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_NUMBER_VRS = frozenset({"IS", "DS", "US"})


class _Fallback(Exception):
    """The fast decoder meets something it leaves to pydicom."""


class _RawHeader:
    """The indexed elements decoded straight from their bytes: a minimal stand-in for
    a pydicom :class:`Dataset` for :func:`header_from_dataset` (``get(keyword)``).

    Text values are decoded with the data set's character set, each value stripped of
    padding (PS3.5 6.2) and multiple values joined by ``\\``; IS/DS/US give their
    first value as ``int``/``float``.  Anything unusual (a VR other than the
    dictionary's, undefined lengths, a character set other than the default, Latin-1
    or UTF-8, undecodable bytes, a malformed number) raises :class:`_Fallback` so
    the caller decodes with pydicom instead, with identical results for the indexed
    attributes.
    """

    def __init__(self, subset: bytes, implicit: bool, endian: str) -> None:
        raw: dict[str, tuple[str, bytes]] = {}
        pos, end = 0, len(subset)
        while pos < end:
            group, elem = struct.unpack_from(endian + "HH", subset, pos)
            tag = group << 16 | elem
            keyword, vr = _HEADER_VRS[tag]
            if implicit:
                (length,) = struct.unpack_from(endian + "I", subset, pos + 4)
                pos += 8
            else:
                if subset[pos + 4:pos + 6] != vr.encode("ascii"):
                    raise _Fallback  # e.g. UN, or a VR that disagrees with the dictionary
                (length,) = struct.unpack_from(endian + "H", subset, pos + 6)
                pos += 8
            if length == 0xFFFFFFFF:
                raise _Fallback
            raw[keyword] = (vr, subset[pos:pos + length])
            pos += length
        self._endian = endian
        charset = raw.get("SpecificCharacterSet", ("CS", b""))[1].decode("latin_1").strip(" \0")
        if charset not in _SIMPLE_CHARSETS:
            raise _Fallback
        self._codec = _SIMPLE_CHARSETS[charset]
        # decoded here, not in get(): header_from_dataset treats errors in get() as ""
        self._values = {keyword: self._decode(vr, value) for keyword, (vr, value) in raw.items()}

    def get(self, keyword: str) -> Any:
        return self._values.get(keyword)

    def _decode(self, vr: str, value: bytes) -> Any:
        if vr == "US":
            return struct.unpack_from(self._endian + "H", value)[0] if len(value) >= 2 else None
        try:
            text = value.decode(self._codec if vr in _CHARSET_VRS else "latin_1")
        except UnicodeDecodeError:
            raise _Fallback from None
        parts = [p.strip(" \0") for p in text.split("\\")]
        if vr in _NUMBER_VRS:
            first = parts[0]
            if not first:
                return None
            try:
                number = float(first) if vr == "DS" else int(first)
            except ValueError:
                raise _Fallback from None
            return number
        return "\\".join(parts)


def parse_header(data: bytes, transfer_syntax: str) -> InstanceHeader:
    """Check an encoded data set (no file meta) and read the indexed attributes.

    The whole data set is walked for completeness, but only the elements in
    :data:`HEADER_TAGS` are decoded (pixel data is never touched): straight from their
    bytes (:class:`_RawHeader`, the fast path), or with pydicom when the fast decoder
    declines.
    """
    subset = check_structure(data, transfer_syntax, HEADER_TAGS)
    deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
    try:
        return header_from_dataset(_RawHeader(subset, transfer_syntax == ImplicitVRLittleEndian and not deflated,
                                              ">" if transfer_syntax == ExplicitVRBigEndian else "<"))
    except _Fallback:
        pass
    except (struct.error, KeyError):  # the walk accepted it; let pydicom judge
        pass
    try:
        ds = read_dataset(BytesIO(subset), transfer_syntax == ImplicitVRLittleEndian and not deflated,
                          transfer_syntax != ExplicitVRBigEndian)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for bad input
        raise InvalidDatasetError(f"data set cannot be parsed: {type(e).__name__}") from e
    return header_from_dataset(ds)


INCOMING = "incoming"  # <root>/incoming: data sets being received (same file system as dicom/)


class StagedWrite:
    """A data set written to ``<root>/incoming`` while it arrives (:meth:`Archive.stage`),
    so the file write overlaps the network transfer; :meth:`Archive.store` then fsyncs
    it and renames it into the archive, or discards it.  A write error is kept and
    reported when the instance is stored (0xA700)."""

    def __init__(self, path: Path, fd: int, meta: bytes) -> None:
        self.path = path
        self.fd = fd
        self.meta = meta
        self.error: OSError | None = None
        self.size = 0  # bytes written, file meta included

    def write(self, chunk: bytes | memoryview) -> None:
        """Append a fragment of the data set."""
        if self.error is not None or self.fd < 0:
            return
        view = memoryview(chunk)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.size += n
        except OSError as e:
            self.error = e

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Remove the staged file (idempotent; nothing left after a placement)."""
        self.close()
        try:
            self.path.unlink()
        except OSError:
            pass


def _fsync_path(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySync:
    """Group commit of directory fsyncs.

    Every instance is renamed into its series folder and the folder fsync'd before its
    success status.  Associations storing into the same folder at the same time share
    one fsync: a caller takes a ticket after its rename and returns once an fsync that
    *started* after the ticket has completed (its own, or one another thread ran
    meanwhile).  Nothing is acknowledged before the fsync that covers its rename.
    """

    def __init__(self, fsync: Any = _fsync_path) -> None:
        self._fsync = fsync
        self._cond = threading.Condition()
        self._state: dict[str, list[int]] = {}  # folder -> [tickets issued, tickets covered, fsync running]

    def sync(self, folder: str) -> None:
        """Return once ``folder``'s entries as they are now are durable."""
        with self._cond:
            state = self._state.setdefault(folder, [0, 0, 0])
            state[0] += 1
            ticket = state[0]
            while state[1] < ticket:
                if state[2]:
                    self._cond.wait()
                    continue
                state[2], covers = 1, state[0]
                self._cond.release()
                try:
                    self._fsync(folder)
                    done = True
                finally:
                    self._cond.acquire()
                    state[2] = 0
                    self._cond.notify_all()
                if done:
                    state[1] = max(state[1], covers)
            if state[1] == state[0] and not state[2]:
                self._state.pop(folder, None)


#: hashing runs beside the file write and fsync, the folder fsync beside the index
#: transaction (hashlib and fsync release the GIL)
_BESIDE = ThreadPoolExecutor(max_workers=8, thread_name_prefix="archive-io")


class Archive:
    """Files under ``<root>/dicom`` and their rows in the index."""

    def __init__(self, config: NodeConfig, db: Database, audit: Audit | None = None) -> None:
        self.config = config
        self.root = config.root
        self.db = db
        self.audit = audit or Audit(db)
        self.directory_sync = DirectorySync()

    # ------------------------------------------------------------------ paths
    def relative_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        """``dicom/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`` (relative to the root)."""
        return f"dicom/{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def absolute(self, relative: str) -> Path:
        """Absolute path of a stored file from its indexed relative path."""
        return self.root / relative

    # ------------------------------------------------------------------ store
    def store(
        self,
        data: bytes,
        *,
        transfer_syntax: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        source_ae: str = "",
        staged: StagedWrite | None = None,
    ) -> StoreResult:
        """Store one encoded data set (no file meta) exactly as received.

        Parameters
        ----------
        data
            The data set as sent, encoded in ``transfer_syntax``.
        sop_class_uid, sop_instance_uid
            Affected SOP Class/Instance UID of the C-STORE request (PS3.7 9.1.1); the
            data set must carry the same values.
        source_ae
            Calling AE title (recorded, and written into the file meta).
        staged
            The same bytes already written to ``<root>/incoming`` as they arrived
            (:meth:`stage`); used instead of writing ``data`` again, and removed in
            every case.

        Raises
        ------
        TooLargeError, OutOfResourcesError, InvalidDatasetError,
        SOPClassMismatchError, DuplicateRejectedError
        """
        try:
            if len(data) > self.config.max_instance_bytes:
                raise TooLargeError(
                    f"instance of {len(data)} bytes exceeds max_instance_bytes={self.config.max_instance_bytes}"
                )
            header = parse_header(data, transfer_syntax)
            if sop_class_uid and header.sop_class_uid != sop_class_uid:
                raise SOPClassMismatchError("data set SOP Class UID differs from the request's Affected SOP Class UID")
            if sop_instance_uid and header.sop_instance_uid != sop_instance_uid:
                raise SOPClassMismatchError(
                    "data set SOP Instance UID differs from the request's Affected SOP Instance UID")
            meta = file_meta_bytes(header.sop_class_uid, header.sop_instance_uid, transfer_syntax, source_ae)
            if staged is not None:
                if staged.error is not None:
                    raise OutOfResourcesError(
                        f"cannot write the instance to the archive: {staged.error.strerror or staged.error}")
                if staged.meta != meta or staged.size != len(meta) + len(data):
                    staged.discard()  # not the same file: write it from memory
                    staged = None
            return self._store_parsed(header, meta, data, None, transfer_syntax, source_ae, staged)
        finally:
            if staged is not None:
                staged.discard()

    def stage(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
              source_ae: str = "") -> StagedWrite:
        """Open ``<root>/incoming/<random>.tmp`` with the file meta for the instance the
        C-STORE request announces; the data set is appended as it arrives.  Raises
        :class:`OSError`."""
        meta = file_meta_bytes(sop_class_uid, sop_instance_uid, transfer_syntax, source_ae)
        folder = self.root / INCOMING
        path = folder / f"{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        staged = StagedWrite(path, fd, meta)
        staged.write(meta)
        return staged

    def store_file(self, path: str | os.PathLike[str], source_ae: str = "") -> StoreResult:
        """Store a DICOM Part 10 file (its data set bytes are kept unchanged)."""
        raw = Path(path).read_bytes()
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
            start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
        except Exception as e:  # noqa: BLE001 - pydicom raises many types for bad input
            raise InvalidDatasetError(f"{Path(path).name} is not a DICOM Part 10 file with file meta") from e
        return self.store(
            raw[start:],
            transfer_syntax=str(meta.TransferSyntaxUID),
            sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")) or None,
            sop_instance_uid=str(meta.get("MediaStorageSOPInstanceUID", "")) or None,
            source_ae=source_ae,
        )

    def _store_parsed(
        self, h: InstanceHeader, meta: bytes, data: bytes, digest: str | None, transfer_syntax: str, source_ae: str,
        staged: StagedWrite | None = None,
    ) -> StoreResult:
        """Write and index; ``digest`` (SHA-256 of ``data``) is computed here when not
        given: at once when the SOP Instance UID is already stored (the duplicate
        rules need it), else beside the write."""
        rel = self.relative_path(h.study_uid, h.series_uid, h.sop_instance_uid)
        path = self.absolute(rel)
        existing = self.db.query(
            "SELECT sha256, path FROM instances WHERE sop_instance_uid = ?", (h.sop_instance_uid,)
        )
        outcome = StoreOutcome.STORED
        old_path: str | None = None
        if existing and digest is None:
            digest = hashlib.sha256(data).hexdigest()
        if existing:
            old = existing[0]
            if old["sha256"] == digest and self.absolute(old["path"]).is_file():
                return StoreResult(StoreOutcome.DUPLICATE, self.absolute(old["path"]), h.study_uid, h.series_uid,
                                   h.sop_instance_uid)
            if old["sha256"] != digest:
                policy = self.config.duplicate_policy
                if policy == "reject":
                    self.audit.record("instance.duplicate_rejected", source_ae, sop_instance_uid=h.sop_instance_uid)
                    raise DuplicateRejectedError("a different instance with this SOP Instance UID is already stored")
                if policy == "keep_first":
                    self.audit.record("instance.duplicate_ignored", source_ae, sop_instance_uid=h.sop_instance_uid)
                    return StoreResult(StoreOutcome.IGNORED, self.absolute(old["path"]), h.study_uid, h.series_uid,
                                       h.sop_instance_uid)
                outcome = StoreOutcome.REPLACED
            old_path = old["path"]
        hashing = _BESIDE.submit(lambda: hashlib.sha256(data).hexdigest()) if digest is None else None
        try:
            new_dir = self._write_file(path, meta, data) if staged is None else self._place(staged, path)
        finally:
            if hashing is not None:
                digest = hashing.result()
        # the folder fsync (making the rename durable) runs beside the index transaction;
        # the success status waits for both
        dir_sync = _BESIDE.submit(self._sync_folders, path, new_dir) if self.config.fsync else None
        now = time.time()
        try:
            with self.db.transaction() as conn:
                # re-checked inside the transaction: another association may have stored it meanwhile
                self._remove_row(conn, h.sop_instance_uid)
                self._index(conn, h, rel, len(meta) + len(data), str(digest), transfer_syntax, source_ae, now)
                if outcome is StoreOutcome.REPLACED:
                    self.audit.record("instance.replaced", source_ae, conn=conn, sop_instance_uid=h.sop_instance_uid,
                                      study_uid=h.study_uid)
        finally:
            if dir_sync is not None:
                try:
                    dir_sync.result()
                except OSError as e:
                    with self.db.transaction() as conn:  # not durable: not stored (the sender retries)
                        self._remove_row(conn, h.sop_instance_uid)
                    raise OutOfResourcesError(f"cannot sync the archive folder: {e.strerror or e}") from e
        if old_path is not None and old_path != rel:
            try:
                self.absolute(old_path).unlink()
            except OSError:
                logger.warning("could not remove replaced file of instance %s", phi(h.sop_instance_uid))
        logger.debug("stored %s instance %s", outcome.value, phi(h.sop_instance_uid))
        return StoreResult(outcome, path, h.study_uid, h.series_uid, h.sop_instance_uid)

    def _write_file(self, path: Path, meta: bytes, data: bytes) -> bool:
        """Temp file in the destination folder, flushed, fsync'd, renamed to ``path``.
        Returns whether the folder was created (its parents then need an fsync too)."""
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            new_dir = not path.parent.is_dir()
            if new_dir:
                path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(meta)
                f.write(data)
                f.flush()
                if self.config.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise OutOfResourcesError(f"cannot write the instance to the archive: {e.strerror or e}") from e
        return new_dir

    def _place(self, staged: StagedWrite, path: Path) -> bool:
        """fsync a staged file and rename it to ``path`` (like :meth:`_write_file`)."""
        try:
            new_dir = not path.parent.is_dir()
            if new_dir:
                path.parent.mkdir(parents=True, exist_ok=True)
            if self.config.fsync:
                os.fsync(staged.fd)
            staged.close()
            os.replace(staged.path, path)
        except OSError as e:
            staged.discard()
            raise OutOfResourcesError(f"cannot write the instance to the archive: {e.strerror or e}") from e
        return new_dir

    def _sync_folders(self, path: Path, new_dir: bool) -> None:
        """Make the rename into ``path``'s folder durable (and the folder's own entry
        when it was just created)."""
        self.directory_sync.sync(str(path.parent))
        if new_dir:
            _fsync_path(str(path.parent.parent))
            _fsync_path(str(path.parent.parent.parent))

    def _remove_row(self, conn: Any, sop_instance_uid: str) -> None:
        row = conn.execute(
            "SELECT series_uid, study_uid FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        ).fetchone()
        if row is None:
            return
        conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        conn.execute("UPDATE series SET num_instances = num_instances - 1 WHERE series_uid = ?", (row["series_uid"],))
        conn.execute("UPDATE studies SET num_instances = num_instances - 1 WHERE study_uid = ?", (row["study_uid"],))

    def _index(
        self, conn: Any, h: InstanceHeader, rel: str, size: int, digest: str, ts: str, source_ae: str, now: float
    ) -> None:
        conn.execute(
            "INSERT INTO patients (patient_id, patient_name, birth_date, sex, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (patient_id) DO UPDATE SET patient_name = excluded.patient_name, "
            "birth_date = excluded.birth_date, sex = excluded.sex, updated_at = excluded.updated_at",
            (h.patient_id, h.patient_name, h.birth_date, h.sex, now),
        )
        conn.execute(
            "INSERT INTO studies (study_uid, patient_id, accession_number, study_id, study_date, study_time, "
            "study_description, referring_physician, modalities, body_part, state, first_received, last_received, "
            "source_ae) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'receiving', ?, ?, ?) "
            "ON CONFLICT (study_uid) DO UPDATE SET state = 'receiving', stable_at = NULL, "
            "last_received = excluded.last_received",
            (h.study_uid, h.patient_id, h.accession_number, h.study_id, h.study_date, h.study_time,
             h.study_description, h.referring_physician, h.modality, h.body_part, now, now, source_ae),
        )
        cur = conn.execute(
            "INSERT INTO series (series_uid, study_uid, modality, series_number, series_description, body_part, "
            "contrast_agent, slice_thickness, image_type, view_position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (series_uid) DO NOTHING",
            (h.series_uid, h.study_uid, h.modality, h.series_number, h.series_description, h.body_part,
             h.contrast_agent, h.slice_thickness, h.image_type, h.view_position),
        )
        if cur.rowcount == 1:
            mods = sorted({r[0] for r in conn.execute(
                "SELECT DISTINCT modality FROM series WHERE study_uid = ?", (h.study_uid,)) if r[0]})
            conn.execute(
                "UPDATE studies SET num_series = num_series + 1, modalities = ? WHERE study_uid = ?",
                ("\\".join(mods), h.study_uid),
            )
        conn.execute(
            "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, transfer_syntax_uid, "
            "instance_number, image_type, view_position, rows_, columns_, number_of_frames, path, size_bytes, "
            "sha256, received_at, source_ae) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (h.sop_instance_uid, h.series_uid, h.study_uid, h.sop_class_uid, ts, h.instance_number, h.image_type,
             h.view_position, h.rows, h.columns, h.number_of_frames, rel, size, digest, now, source_ae),
        )
        conn.execute("UPDATE series SET num_instances = num_instances + 1 WHERE series_uid = ?", (h.series_uid,))
        conn.execute("UPDATE studies SET num_instances = num_instances + 1 WHERE study_uid = ?", (h.study_uid,))

    # ------------------------------------------------------------------ read
    def instances(self, study_uid: str | None = None, series_uid: str | None = None) -> list[dict[str, Any]]:
        """Indexed instances (all, of a study, or of a series), ordered for display."""
        sql = "SELECT * FROM instances"
        params: tuple = ()
        if series_uid:
            sql, params = sql + " WHERE series_uid = ?", (series_uid,)
        elif study_uid:
            sql, params = sql + " WHERE study_uid = ?", (study_uid,)
        rows = self.db.query(sql + " ORDER BY series_uid, instance_number, sop_instance_uid", params)
        return [dict(r) for r in rows]

    def study_paths(self, study_uid: str) -> list[Path]:
        """Absolute paths of a study's files."""
        return [self.absolute(r["path"]) for r in self.instances(study_uid=study_uid)]

    def counts(self) -> dict[str, int]:
        """Numbers of patients, studies, series and instances in the index."""
        out = {}
        for table in ("patients", "studies", "series", "instances"):
            out[table] = int(self.db.query(f"SELECT COUNT(*) FROM {table}")[0][0])
        return out

    # ------------------------------------------------------------------ repair
    def reconcile(self) -> dict[str, int]:
        """Make files and index agree after a crash (run at start-up).

        Removes leftover temporary files, drops rows whose file is missing (never
        expected: rows are written after the file) and indexes complete files that
        lack a row (a crash between rename and commit).  Returns the counts.
        """
        stats = {"temp_removed": 0, "rows_dropped": 0, "files_indexed": 0, "files_unreadable": 0}
        base = self.config.dicom_dir
        indexed = {r["path"] for r in self.db.query("SELECT path FROM instances")}
        on_disk: set[str] = set()
        incoming = self.root / INCOMING
        if incoming.is_dir():  # data sets whose reception never completed
            for leftover in incoming.glob("*.tmp"):
                leftover.unlink(missing_ok=True)
                stats["temp_removed"] += 1
        if base.is_dir():
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    full = Path(dirpath) / name
                    if name.endswith(".tmp"):
                        full.unlink(missing_ok=True)
                        stats["temp_removed"] += 1
                    elif name.endswith(".dcm"):
                        on_disk.add(full.relative_to(self.root).as_posix())
        for rel in sorted(indexed - on_disk):
            sop = Path(rel).stem
            with self.db.transaction() as conn:
                self._remove_row(conn, sop)
                self.audit.record("instance.row_without_file_dropped", "reconcile", conn=conn, sop_instance_uid=sop)
            stats["rows_dropped"] += 1
        for rel in sorted(on_disk - indexed):
            try:
                self.store_file(self.absolute(rel), source_ae="")
                stats["files_indexed"] += 1
            except ArchiveError as e:
                logger.error("unindexed file %s cannot be indexed (%s); moved aside", phi(rel), e)
                self.absolute(rel).rename(self.absolute(rel).with_suffix(".unreadable"))
                stats["files_unreadable"] += 1
        if any(stats.values()):
            logger.warning("archive reconciled: %s", stats)
        return stats
