"""De-identification: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

The profile is driven by a table (``annex_e_basic_profile.json``, Table E.1-1) that names
each attribute and its action: D (dummy), Z (zero length), X (remove), K (keep),
C (clean), U (consistent UID replacement) and the compound actions Z/D, X/Z, X/D,
X/Z/D, X/Z/U*.  Options implemented:

- Retain Longitudinal Temporal Information with Modified Dates (PS3.15 E.3.6): every
  date of a patient is shifted by the same number of days (per-patient, secret).
- Clean Pixel Data (PS3.15 E.3.1): burned-in text is blanked when BurnedInAnnotation
  is YES or :func:`detect_text_boxes` finds text.

Also: private attributes are removed (no Retain Safe Private option), sequences are
processed recursively, UIDs are remapped deterministically per key (same key, same
original UID -> same new UID), and the re-identification key is stored in a separate
file with owner-only permissions.
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from labeling_tool.core.errors import DeidError, KeyFileError

logger = logging.getLogger(__name__)

#: Code values of the De-identification Method Code Sequence (CID 7050).
CODE_BASIC_PROFILE = "113100"
CODE_CLEAN_PIXEL = "113101"
CODE_RETAIN_LONGITUDINAL_MODIFIED = "113107"
_CODE_MEANINGS = {
    CODE_BASIC_PROFILE: "Basic Application Confidentiality Profile",
    CODE_CLEAN_PIXEL: "Clean Pixel Data Option",
    CODE_RETAIN_LONGITUDINAL_MODIFIED: "Retain Longitudinal Temporal Information Modified Dates Option",
}
_SHORT = {CODE_BASIC_PROFILE: "Basic", CODE_CLEAN_PIXEL: "CleanPixel", CODE_RETAIN_LONGITUDINAL_MODIFIED: "ModifDates"}
_DATE_VRS = {"DA", "DT", "TM"}
_BIRTH = {0x00100030, 0x00100032}  # Patient's Birth Date / Time: never retained
_MAX_LEN = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UC": 1024, "UT": 100000}
_DUMMY_TEXT = "ANONYMIZED"


@dataclass(frozen=True)
class ProfileEntry:
    """One row of PS3.15 Table E.1-1 (Basic Profile column)."""

    tag: int
    mask: int
    keyword: str
    name: str
    action: str


@lru_cache(maxsize=1)
def load_profile() -> tuple[ProfileEntry, ...]:
    """Rows of the Basic Profile table shipped with the package."""
    text = resources.files("labeling_tool.core").joinpath("annex_e_basic_profile.json").read_text()
    rows = json.loads(text)["attributes"]
    return tuple(
        ProfileEntry(int(r["tag"], 16), int(r.get("mask", "FFFFFFFF"), 16), r["keyword"], r["name"], r["action"])
        for r in rows
    )


@lru_cache(maxsize=1)
def _profile_index() -> tuple[dict[int, str], tuple[tuple[int, int, str], ...]]:
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for e in load_profile():
        if e.mask == 0xFFFFFFFF:
            exact[e.tag] = e.action
        else:
            masked.append((e.tag, e.mask, e.action))
    return exact, tuple(masked)


def profile_action(tag: int) -> str | None:
    """Basic Profile action for ``tag`` (``None`` when the profile does not name it)."""
    exact, masked = _profile_index()
    tag = int(tag)
    if tag in exact:
        return exact[tag]
    for value, mask, action in masked:
        if tag & mask == value & mask:
            return action
    return None


@dataclass
class DeidOptions:
    """Profile options (PS3.15 E.3)."""

    shift_dates: bool = False
    clean_pixels: bool = False


@dataclass
class DeidKey:
    """Re-identification key: the secret, per-patient pseudonyms and date offsets, UID map.

    Store it apart from the de-identified data (:meth:`save` writes owner-only files).
    """

    secret: bytes
    patients: dict[str, dict] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls) -> "DeidKey":
        return cls(secrets.token_bytes(32))

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """Deterministic pseudonymous patient ID for ``patient_id``."""
        return "ANON" + self._digest("patient", patient_id).hex()[:12].upper()

    def date_offset_days(self, patient_id: str) -> int:
        """Per-patient date shift: a secret number of days between -3650 and -366."""
        n = int.from_bytes(self._digest("date", patient_id)[:4], "big")
        return -(366 + n % 3285)

    def register_patient(self, patient_id: str, patient_name: str) -> str:
        pseudo = self.pseudonym(patient_id)
        entry = self.patients.setdefault(pseudo, {"patient_id": patient_id, "patient_names": []})
        entry["date_offset_days"] = self.date_offset_days(patient_id)
        if patient_name and patient_name not in entry["patient_names"]:
            entry["patient_names"].append(patient_name)
        return pseudo

    def remap_uid(self, uid: str) -> str:
        """Consistent replacement UID (a ``2.25`` UUID-derived UID, PS3.5 B.2)."""
        uid = str(uid).strip().rstrip("\x00")
        if not uid:
            return uid
        new = "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))
        self.uids[new] = uid
        return new

    # -- storage ---------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {"format": "medws-deid-key/1", "secret": self.secret.hex(), "patients": self.patients, "uids": self.uids},
            indent=1,
            sort_keys=True,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the key atomically with mode 0600 (owner read/write only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeidKey":
        """Read a key; refuses a key file that group or others can read."""
        path = Path(path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} is readable by others; run `chmod 600 {path}` first")
        try:
            data = json.loads(path.read_text())
            return cls(bytes.fromhex(data["secret"]), data.get("patients", {}), data.get("uids", {}))
        except (ValueError, KeyError) as e:
            raise KeyFileError(f"{path} is not a medws de-identification key") from e

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> "DeidKey":
        return cls.load(path) if Path(path).exists() else cls.new()

    def reidentify(self, pseudonym: str) -> dict:
        """Original patient ID, names and date offset for ``pseudonym`` (authorised use only)."""
        try:
            return dict(self.patients[pseudonym])
        except KeyError as e:
            raise KeyFileError(f"pseudonym {pseudonym} is not in this key") from e


# -- value helpers -------------------------------------------------------------------
def _vr(elem: DataElement) -> str:
    return str(elem.VR).split(" or ")[0]


def _shift_da(value: str, days: int) -> str:
    value = value.strip()
    if len(value) < 8:
        return ""
    d = _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + _dt.timedelta(days=days)
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _shift_dt(value: str, days: int) -> str:
    value = value.strip()
    if len(value) < 8:
        return ""
    return _shift_da(value[:8], days) + value[8:]


def _shift_value(elem: DataElement, days: int):
    vr = _vr(elem)
    if vr == "TM":
        return elem.value
    fn = _shift_da if vr == "DA" else _shift_dt
    try:
        if elem.VM > 1:
            return [fn(str(v), days) for v in elem.value]
        return fn(str(elem.value), days) if elem.value not in (None, "") else elem.value
    except ValueError:
        return ""  # an unparsable date is dropped, never kept


def _dummy_value(elem: DataElement):
    vr = _vr(elem)
    if vr == "DA":
        return "19000101"
    if vr == "DT":
        return "19000101000000"
    if vr == "TM":
        return "000000"
    if vr == "AS":
        return "000Y"
    if vr in ("IS", "DS"):
        return "0"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"):
        return 0
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x00\x00"
    if vr == "AT":
        return None
    if vr == "UR":
        return ""
    if vr == "PN":
        return _DUMMY_TEXT
    return _DUMMY_TEXT[: _MAX_LEN.get(vr, 64)]


def _resolve(action: str, vr: str, shift: bool, tag: int) -> str:
    """Turn a compound profile action into one simple action for this element."""
    if shift and vr in _DATE_VRS and tag not in _BIRTH and action != "U":
        return "C"
    if action == "X/Z/U*":
        return "U*" if vr in ("SQ", "UI") else "Z"
    if action == "Z/D":
        return "D" if vr in _DATE_VRS else "Z"
    if action == "X/Z":
        return "Z"
    if action == "X/D":
        return "X" if vr == "SQ" else "D"
    if action == "X/Z/D":
        return "D" if vr in _DATE_VRS else "Z"
    return action


@dataclass
class _Context:
    key: DeidKey
    shift_days: int | None


def _process(ds: Dataset, ctx: _Context) -> None:
    for elem in list(ds):
        tag = int(elem.tag)
        if elem.tag.is_private:
            del ds[elem.tag]
            continue
        if elem.tag.group == 0x0002:
            continue
        vr = _vr(elem)
        action = profile_action(tag)
        if action is None:
            if vr == "SQ":
                for item in elem.value or []:
                    _process(item, ctx)
            continue
        simple = _resolve(action, vr, ctx.shift_days is not None, tag)
        if simple == "X":
            del ds[elem.tag]
        elif simple == "K":
            if vr == "SQ":
                for item in elem.value or []:
                    _process(item, ctx)
        elif simple in ("U", "U*"):
            if vr == "SQ":
                for item in elem.value or []:
                    _process(item, ctx)
            elif vr == "UI":
                vals = elem.value if elem.VM > 1 else [elem.value]
                new = [ctx.key.remap_uid(str(v)) for v in vals if v]
                elem.value = new if len(new) != 1 else new[0]
            else:
                elem.value = _dummy_value(elem)
        elif simple == "C":
            if vr == "SQ":
                for item in elem.value or []:
                    _process(item, ctx)
            else:
                elem.value = _shift_value(elem, ctx.shift_days or 0)
        elif simple == "Z":
            elem.value = Sequence([]) if vr == "SQ" else (None if vr not in ("OB", "OW", "UN") else b"")
        elif simple == "D":
            if vr == "SQ":
                for item in elem.value or []:
                    _process(item, ctx)
            elif vr == "UI":
                elem.value = ctx.key.remap_uid(str(elem.value)) if elem.value else elem.value
            else:
                value = _dummy_value(elem)
                if value is None:
                    del ds[elem.tag]
                else:
                    elem.value = value
        else:  # pragma: no cover - table holds only the actions above
            raise DeidError(f"unknown profile action {action!r} for {elem.tag}")


# -- pixel cleaning ------------------------------------------------------------------
def detect_text_boxes(image: np.ndarray, min_chars: int = 3) -> list[tuple[int, int, int, int]]:
    """Find burned-in text: rows of small, bright, thin-stroked character blobs.

    Strokes are found with a white top-hat (bright detail narrower than 7 px standing
    out from its surroundings), grouped into character-sized components and then into
    horizontal lines of at least ``min_chars`` characters.  Returns boxes
    ``(row0, col0, row1, col1)`` (exclusive ends) padded by 2 px.  A heuristic for the
    Clean Pixel Data option (PS3.15 E.3.1); it finds e.g. NIH's burned-in "PORTABLE".
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.size == 0:
        raise DeidError("detect_text_boxes expects a 2-D image")
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return []
    h, w = img.shape
    tophat = img - ndimage.grey_opening(img, size=(7, 7))
    span = hi - lo
    # high-contrast bright strokes, or saturated strokes over a bright background
    noise = 1.4826 * float(np.median(np.abs(img - ndimage.median_filter(img, size=3))))  # robust sigma
    strokes = ((tophat > 0.3 * span) & (img >= lo + 0.6 * span)) | ((tophat > 0.1 * span) & (img >= hi - 0.1 * span))
    strokes &= tophat > 6.0 * noise
    labels, n = ndimage.label(strokes, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    max_h = max(6, h // 12)
    keep = np.zeros(n + 1, dtype=bool)
    objs = ndimage.find_objects(labels)
    for i, sl in enumerate(objs, start=1):
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if 5 <= bh <= max_h and bw <= 2 * max_h and (labels[sl] == i).sum() >= 6:
            keep[i] = True
    chars = keep[labels]
    if not chars.any():
        return []
    gap = max(4, h // 64)
    joined = ndimage.binary_dilation(chars, structure=np.ones((1, 2 * gap + 1), dtype=bool))
    lab2, _ = ndimage.label(joined)
    boxes: list[tuple[int, int, int, int]] = []
    for j, sl in enumerate(ndimage.find_objects(lab2), start=1):
        members = np.unique(labels[sl][chars[sl] & (lab2[sl] == j)])
        heights = np.array([objs[k - 1][0].stop - objs[k - 1][0].start for k in members])
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if len(members) >= min_chars and bw >= 2 * bh and heights.std() <= 0.35 * heights.mean():
            r0, r1 = sl[0].start, sl[0].stop
            c0, c1 = _extend_line(strokes[r0:r1], sl[1].start, sl[1].stop, 3 * gap)
            m = 2
            boxes.append((max(0, r0 - m), max(0, c0 - m), min(h, r1 + m), min(w, c1 + m)))
    return boxes


def _extend_line(band: np.ndarray, c0: int, c1: int, reach: int) -> tuple[int, int]:
    """Grow a text line sideways while stroke pixels continue within ``reach`` columns
    (characters that merged with a bright background are still covered)."""
    cols = band.any(axis=0)
    w = len(cols)
    while c0 > 0 and cols[max(0, c0 - reach):c0].any():
        c0 = max(0, c0 - reach) + int(np.flatnonzero(cols[max(0, c0 - reach):c0])[0])
    while c1 < w and cols[c1:min(w, c1 + reach)].any():
        c1 = c1 + int(np.flatnonzero(cols[c1:min(w, c1 + reach)])[-1]) + 1
    return c0, c1


def clean_pixels(ds: Dataset) -> list[tuple[int, int, int, int]]:
    """Blank burned-in text in ``ds`` (in place); returns the boxes blanked.

    When BurnedInAnnotation is YES but no text is detected, the 8 % border bands, where
    annotations are burned in, are blanked.  Pixel data is re-written uncompressed.
    """
    from pydicom.uid import ExplicitVRLittleEndian

    if "PixelData" not in ds:
        return []
    arr = ds.pixel_array.copy()
    frames = arr if (arr.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1)) == 1) else arr[None]
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise DeidError("Clean Pixel Data supports greyscale images only; exclude colour images")
    fill = frames.min()
    all_boxes: list[tuple[int, int, int, int]] = []
    flagged = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
    for f in frames:
        boxes = detect_text_boxes(f)
        if not boxes and flagged:
            h, w = f.shape
            bh = max(1, int(round(0.08 * h)))
            boxes = [(0, 0, bh, w), (h - bh, 0, h, w)]
        for r0, c0, r1, c1 in boxes:
            f[r0:r1, c0:c1] = fill
        all_boxes.extend(boxes)
    out = frames if arr.ndim == 3 else frames[0]
    ds.PixelData = out.astype(arr.dtype).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "NO"
    return all_boxes


# -- the profile ---------------------------------------------------------------------
def _code_item(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = _CODE_MEANINGS[value]
    return item


def deidentify(ds: Dataset, key: DeidKey, options: DeidOptions | None = None) -> Dataset:
    """Return a de-identified copy of ``ds`` (PS3.15 Annex E Basic Profile + options).

    Raises
    ------
    DeidError
        When the image carries burned-in annotation and ``clean_pixels`` is off.
    """
    options = options or DeidOptions()
    burned = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
    if burned and not options.clean_pixels:
        raise DeidError("BurnedInAnnotation is YES: re-run with the Clean Pixel Data option (--clean-pixels)")
    patient_id = str(ds.get("PatientID", "") or "").strip()
    patient_name = str(ds.get("PatientName", "") or "").strip()
    pseudo = key.register_patient(patient_id or patient_name or "UNKNOWN", patient_name)
    shift = key.date_offset_days(patient_id or patient_name or "UNKNOWN") if options.shift_dates else None
    out = copy.deepcopy(ds)
    _process(out, _Context(key, shift))
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        for kw in ("MediaStorageSOPInstanceUID",):
            if kw in meta and kw in ds.file_meta:
                meta[kw].value = out.SOPInstanceUID if "SOPInstanceUID" in out else key.remap_uid(ds.file_meta[kw].value)
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle"):
            if kw in meta:
                del meta[kw]
        for elem in list(meta):
            if elem.tag.is_private:
                del meta[elem.tag]
    out.PatientID = pseudo
    out.PatientName = pseudo + "^"
    codes = [CODE_BASIC_PROFILE]
    if options.shift_dates:
        codes.append(CODE_RETAIN_LONGITUDINAL_MODIFIED)
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        out.LongitudinalTemporalInformationModified = "REMOVED"
    if options.clean_pixels:
        clean_pixels(out)
        codes.append(CODE_CLEAN_PIXEL)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = ("medws PS3.15 E " + " ".join(_SHORT[c] for c in codes))[:64]
    out.DeidentificationMethodCodeSequence = Sequence([_code_item(c) for c in codes])
    return out


def _private_tags(ds: Dataset) -> list:
    found = []
    for elem in ds:
        if elem.tag.is_private:
            found.append(elem.tag)
        elif elem.VR == "SQ":
            for item in elem.value or []:
                found.extend(_private_tags(item))
    return found


def deidentification_problems(ds: Dataset) -> list[str]:
    """Reasons ``ds`` is not de-identified by this profile (empty list when it is)."""
    problems = []
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    codes = {str(i.get("CodeValue", "")) for i in ds.get("DeidentificationMethodCodeSequence", [])}
    if CODE_BASIC_PROFILE not in codes:
        problems.append("DeidentificationMethodCodeSequence lacks 113100 (Basic Profile)")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        problems.append("BurnedInAnnotation is YES")
    if _private_tags(ds):
        problems.append("private attributes present")
    for kw in ("PatientBirthDate", "PatientAddress", "OtherPatientIDs", "InstitutionAddress", "ReferringPhysicianName"):
        if ds.get(kw, None) not in (None, "", [], ()) and profile_action(Tag(kw)) in ("X", "Z"):
            problems.append(f"{kw} still holds a value")
    return problems


def is_deidentified(ds: Dataset) -> bool:
    """True when ``ds`` carries the Basic Profile marks and no obvious identifier."""
    return not deidentification_problems(ds)


@dataclass
class FolderReport:
    """Outcome of :func:`deidentify_folder` (counts only: no identifiers)."""

    written: int = 0
    skipped_not_dicom: int = 0
    refused: list[str] = field(default_factory=list)


def deidentify_folder(
    in_dir: str | os.PathLike, out_dir: str | os.PathLike, key_path: str | os.PathLike, options: DeidOptions | None = None
) -> FolderReport:
    """De-identify every DICOM file under ``in_dir`` into ``out_dir``.

    Output files are named by their new UIDs (``<Study>/<Series>/<SOP>.dcm``) so no
    identifying folder or file name is carried over.  The key at ``key_path`` is created
    or extended and must not lie inside ``out_dir`` (it is stored separately).
    Input files are never modified.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    in_dir, out_dir, key_path = Path(in_dir).resolve(), Path(out_dir).resolve(), Path(key_path).resolve()
    if not in_dir.is_dir():
        raise DeidError(f"input folder {in_dir} does not exist")
    if out_dir == key_path.parent or out_dir in key_path.parents:
        raise KeyFileError("the key file must be stored outside the output folder (it re-identifies the data)")
    if in_dir == out_dir or in_dir in out_dir.parents:
        raise DeidError("the output folder must not lie inside the input folder")
    key = DeidKey.load_or_create(key_path)
    report = FolderReport()
    for path in sorted(p for p in in_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            report.skipped_not_dicom += 1
            continue
        try:
            out = deidentify(ds, key, options)
        except (DeidError, ValueError, NotImplementedError) as e:
            rel = str(path.relative_to(in_dir))
            report.refused.append(f"{rel}: {e}")
            logger.warning("refused one file: %s", e)
            continue
        dest = out_dir / str(out.StudyInstanceUID) / str(out.SeriesInstanceUID) / f"{out.SOPInstanceUID}.dcm"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        out.save_as(tmp, enforce_file_format=False)
        os.replace(tmp, dest)
        report.written += 1
    key.save(key_path)
    return report
