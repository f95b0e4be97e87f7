"""Radiograph intake: DICOM (any supported transfer syntax) or PNG/JPEG to presentation values.

The pipeline follows the DICOM grayscale pipeline (PS3.4 Annex N.2.1): stored values ->
Modality LUT (rescale or LUT, PS3.3 C.11.1) -> VOI LUT (window or LUT, PS3.3 C.11.2) ->
polarity (MONOCHROME1 is inverted, PS3.3 C.7.6.3.1.2), giving ``pixels`` in ``[0, 1]``
where higher is brighter (MONOCHROME2 sense), as a reader would see the image.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import UnsupportedInputError

logger = logging.getLogger(__name__)

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
FRONTAL_VIEWS = frozenset({"PA", "AP", "POSTERO_ANTERIOR", "ANTERO_POSTERIOR"})
_LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT", "LEFT LATERAL", "RIGHT LATERAL"})
_OBLIQUE_VIEWS = frozenset({"RLO", "LLO", "LAO", "RAO", "LPO", "RPO", "OBLIQUE"})
_DECUBITUS_VIEWS = frozenset({"RLD", "LLD", "DECUBITUS"})
_CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TORAX", "THORAC")
_LATERAL_WORD = re.compile(r"\b(LAT|LATERAL|LL|RL)\b")


@dataclass
class Radiograph:
    """A radiograph ready for pre-processing.

    Attributes
    ----------
    pixels : (H, W) float32
        Presentation values in ``[0, 1]``, higher = brighter (MONOCHROME2 sense), after
        Modality LUT, VOI LUT/window and polarity.
    pixel_spacing_mm : (row, column) or None
        From PixelSpacing, else ImagerPixelSpacing (divided by the Estimated Radiographic
        Magnification Factor when present); ``None`` for PNG/JPEG or when absent.
    window : (center, width) or None
        The DICOM window that was applied (None: VOI LUT sequence, min-max, or an 8-bit image).
    grey : AffineGrey or None
        For DICOM images whose grayscale pipeline is one affine map and a clip (rescale, a
        linear window, inversion): the stored values and that map.  ``pixels`` is then
        computed on first use; pre-processing reads ``grey`` directly (:meth:`image_source`).
    """

    pixels: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None = None
    modality: str = ""
    view_position: str = ""
    body_part: str = ""
    laterality: str = ""
    photometric: str = "MONOCHROME2"
    source: str = "image"
    sop_instance_uid: str = ""
    window: tuple[float, float] | None = None
    spacing_source: str = ""
    series_description: str = ""
    voi: str = ""
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    grey: AffineGrey | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        if self.__dict__.get("_pixels") is None and self.grey is not None:
            return self.grey.shape
        return self.pixels.shape  # type: ignore[return-value]

    def image_source(self) -> np.ndarray | AffineGrey:
        """The presentation image for pre-processing: ``pixels`` when already computed, else ``grey``.

        :func:`models.cxr.preprocess.prepare` box-reduces an :class:`AffineGrey` straight from
        the stored values, without the full-size float image.
        """
        px = self.__dict__.get("_pixels")
        return px if px is not None or self.grey is None else self.grey


def _get_pixels(self: Radiograph) -> np.ndarray:
    px = self.__dict__.get("_pixels")
    if px is None and self.grey is not None:
        px = self.grey.full()
        self.__dict__["_pixels"] = px
    return px


def _set_pixels(self: Radiograph, value: np.ndarray | None) -> None:
    self.__dict__["_pixels"] = value


# ``pixels`` is computed from ``grey`` on first use (the dataclass __init__ assigns through it):
# the chest X-ray pipeline only needs the box-reduced image (:meth:`AffineGrey.box_reduce`)
Radiograph.pixels = property(_get_pixels, _set_pixels, doc="(H, W) float32 presentation values in [0, 1].")  # type: ignore[assignment]


_BLOCK_BYTES = 1 << 20  # float32 rows per block of AffineGrey.box_reduce: about 1 MiB (L2-resident)


@dataclass(frozen=True, eq=False)
class AffineGrey:
    """Presentation values ``clip(stored * gain + offset, 0, 1)`` of integer stored pixels, on demand.

    The usual radiograph grayscale pipeline (rescale, a LINEAR window, MONOCHROME1
    inversion) is one affine map and a clip (:func:`_affine_to_unit`).  :meth:`full` gives
    the float32 image; :meth:`box_reduce` gives exactly ``box_reduce(full(), ky, kx)``
    (:func:`models.geometry.box_reduce`) without writing the full-size float image: rows
    are converted and reduced in blocks of about 1 MiB that stay in the CPU cache, the two
    halves of the image on two threads when a pool is given.  The same float32 operations
    on every pixel, in the same order, so the result is identical.
    """

    stored: np.ndarray  # (H, W) integer
    gain: float
    offset: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.stored.shape  # type: ignore[return-value]

    @property
    def ndim(self) -> int:
        return 2

    def _convert(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.copyto(out, rows, casting="unsafe")
        out *= np.float32(self.gain)
        out += np.float32(self.offset)
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def full(self) -> np.ndarray:
        """The (H, W) float32 presentation image."""
        pixels = self.stored.astype(np.float32)  # one float32 copy and three in-place passes
        pixels *= np.float32(self.gain)
        pixels += np.float32(self.offset)
        np.clip(pixels, 0.0, 1.0, out=pixels)
        return pixels

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.full()
        return out if dtype is None else out.astype(dtype, copy=False)

    def _reduce_rows(self, r0: int, r1: int, ky: int, kx: int, out: np.ndarray) -> None:
        """Box-reduce stored rows [r0, r1) (r0 a multiple of ky) into ``out`` (their block rows)."""
        from models.geometry import box_reduce

        w = self.stored.shape[1]
        step = max(ky, _BLOCK_BYTES // (4 * w) // ky * ky)
        buf = np.empty((step, w), np.float32)
        for r in range(r0, r1, step):
            n = min(step, r1 - r)
            out[r // ky:-(-(r + n) // ky)] = box_reduce(
                self._convert(self.stored[r:r + n], buf[:n]), ky, kx)

    def box_reduce(self, ky: int, kx: int, pool: Any = None) -> np.ndarray:
        """``models.geometry.box_reduce(self.full(), ky, kx)``, computed block by block.

        ``pool`` (a ``concurrent.futures`` executor): its thread reduces the top half while
        the calling thread reduces the bottom half (numpy releases the GIL).
        """
        from models.geometry import box_reduce_halves

        h, w = self.stored.shape
        return box_reduce_halves(lambda r0, r1, out: self._reduce_rows(r0, r1, ky, kx, out), h, w, ky, kx, pool)


def load_radiograph(src: str | os.PathLike | Any) -> Radiograph:
    """Load a radiograph from a DICOM file, a pydicom Dataset, or a PNG/JPEG file.

    Raises
    ------
    UnsupportedInputError
        When the file cannot be read/decoded, or holds no single-frame grey-level image.
    """
    import pydicom

    if isinstance(src, pydicom.Dataset):
        return _from_dataset(src, path="")
    path = Path(src)
    if not path.is_file():
        raise UnsupportedInputError(f"{path}: no such file")
    if _is_dicom_file(path):
        try:
            ds = pydicom.dcmread(path)
        except Exception as e:
            raise UnsupportedInputError(f"{path.name}: unreadable DICOM file ({e})") from e
        return _from_dataset(ds, path=str(path))
    return _from_image_file(path)


IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".png", ".jpg", ".jpeg"})


def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The inputs of a batch: files as given, folders expanded to the images below them.

    A folder contributes, recursively and in sorted order, every file with an image suffix
    (:data:`IMAGE_SUFFIXES`, any case) or a DICOM preamble (PS3.10 7.1: ``DICM`` at byte
    128; archives often store instances without a suffix); hidden files and folders are
    left out.  Paths that are neither (missing files) are kept so the caller can report them.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out.append(path)
            continue
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path).parts
            if any(part.startswith(".") for part in rel) or not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES or _has_dicom_preamble(f):
                out.append(f)
    return out


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) >= 132 and head[128:132] == b"DICM"


def _is_dicom_file(path: Path) -> bool:
    return _has_dicom_preamble(path) or path.suffix.lower() in (".dcm", ".dicom")


def _dicom_without_preamble(path: Path) -> Any:
    """A DICOM data set written without the 128-byte preamble (PS3.10 7.1), or None."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        return None
    return ds if "PixelData" in ds and "Rows" in ds else None


def _from_image_file(path: Path) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                lo, hi = float(arr.min()), float(arr.max())
                pixels = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
                voi = "min-max (16-bit image)"
            else:
                if im.mode not in ("L", "1"):
                    im = im.convert("L")  # ITU-R 601-2 luma for colour files
                pixels = np.asarray(im, dtype=np.float32) / 255.0
                voi = "8-bit / 255"
    except (UnidentifiedImageError, OSError) as e:
        ds = _dicom_without_preamble(path)
        if ds is not None:
            return _from_dataset(ds, path=str(path))
        raise UnsupportedInputError(f"{path.name}: not a readable DICOM, PNG or JPEG image ({e})") from e
    return Radiograph(pixels=np.ascontiguousarray(pixels, dtype=np.float32), source="image",
                      photometric="MONOCHROME2", voi=voi, path=str(path))


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def pixel_spacing(ds: Any) -> tuple[tuple[float, float] | None, str]:
    """Pixel spacing in mm (row, column) and where it came from.

    PixelSpacing (calibrated at the patient) first, then ImagerPixelSpacing (at the
    detector) corrected by EstimatedRadiographicMagnificationFactor when present
    (PS3.3 C.8.11.7 / 10.7.1.1).
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            logger.warning("ignoring malformed %s %r", keyword, value)
            continue
        if row <= 0 or col <= 0:
            continue
        if keyword == "ImagerPixelSpacing":
            mag = ds.get("EstimatedRadiographicMagnificationFactor")
            try:
                mag_f = float(mag) if mag is not None else None
            except (TypeError, ValueError):
                mag_f = None
            if mag_f and mag_f > 0:
                return (row / mag_f, col / mag_f), "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return (row, col), keyword
    return None, ""


def window_to_unit(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply a VOI window with output range ``[0, 1]`` (PS3.3 C.11.2.1.2 and C.11.2.1.3).

    ``function`` is the VOI LUT Function: LINEAR (default), LINEAR_EXACT or SIGMOID.
    """
    arr = arr.astype(np.float32, copy=False)
    function = (function or "LINEAR").upper()
    if function == "LINEAR":
        if width < 1:
            raise UnsupportedInputError(f"Window Width {width} < 1 is invalid for LINEAR windowing")
        c, w = center - 0.5, width - 1.0
        if w == 0:  # width 1: a threshold at c
            return (arr > c).astype(np.float32)
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise UnsupportedInputError(f"Window Width {width} must be > 0 for LINEAR_EXACT")
        c, w = center, width
    elif function == "SIGMOID":
        if width <= 0:
            raise UnsupportedInputError(f"Window Width {width} must be > 0 for SIGMOID")
        return (1.0 / (1.0 + np.exp(-4.0 * (arr - np.float32(center)) / np.float32(width)))).astype(np.float32)
    else:
        raise UnsupportedInputError(f"unsupported VOI LUT Function {function!r}")
    out = (arr - np.float32(c)) * np.float32(1.0 / w) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _first(value: Any) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _from_dataset(ds: Any, path: str) -> Radiograph:
    name = Path(path).name if path else "dataset"
    if "PixelData" not in ds:
        raise UnsupportedInputError(f"{name}: DICOM object has no pixel data (not an image)")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedInputError(
            f"{name}: Photometric Interpretation {photometric or 'missing'} — radiographs are "
            "MONOCHROME1/MONOCHROME2 grey-level images")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnsupportedInputError(f"{name}: multi-frame object ({frames} frames), expected one radiograph")
    try:
        stored = _native_pixels(ds)
        if stored is None:
            stored = ds.pixel_array
    except Exception as e:  # missing decoder, corrupt stream ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", str(ts))
        raise UnsupportedInputError(f"{name}: cannot decode pixel data ({ts_name}): {e}") from e
    if stored.ndim != 2:
        raise UnsupportedInputError(f"{name}: expected a 2-D image, got pixel array shape {stored.shape}")

    invert = photometric == "MONOCHROME1" or (
        photometric == "MONOCHROME2" and _text(ds, "PresentationLUTShape").upper() == "INVERSE")
    affine = _affine_to_unit(ds, stored) if stored.dtype.kind in "iu" else None
    grey: AffineGrey | None = None
    lo, hi = (0, 0)
    if affine is None and stored.size and stored.dtype.kind in "iu":
        lo, hi = int(stored.min()), int(stored.max())
    if affine is not None:
        # the usual case (rescale + linear window / 8-bit / min-max) is one affine map and a
        # clip, MONOCHROME1 inversion folded in (PS3.3 C.7.6.3.1.2: 1 - clip(t) = clip(1 - t)):
        # one float32 copy and three in-place passes (a casting ufunc is slower than astype)
        x0, a, window, voi = affine
        gain, offset = (-a, 1.0 + x0 * a) if invert else (a, -x0 * a)
        grey = AffineGrey(stored, gain, offset)  # the float image is computed on first use
        pixels = None
    elif stored.dtype.kind in "iu" and hi - lo < (1 << 17):
        # other integer data (LUT sequences, sigmoid): run the grayscale pipeline once per
        # possible stored value and apply it as one lookup table, in row blocks
        base = min(lo, 0)
        domain = np.arange(base, hi + 1, dtype=np.int64)
        present_range = (lo - base, hi - base + 1)  # the stored values that can occur in this image
        lut, window, voi = _grayscale(domain, ds, photometric, present_range)
        pixels = np.empty(stored.shape, dtype=np.float32)
        for r in range(0, stored.shape[0], 64):
            block = stored[r:r + 64]
            np.take(lut, block if base == 0 else block.astype(np.int64) - base, out=pixels[r:r + 64])
    else:
        pixels, window, voi = _grayscale(stored, ds, photometric, None)

    spacing, spacing_source = pixel_spacing(ds)
    laterality = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    return Radiograph(
        pixels=None if pixels is None else np.ascontiguousarray(pixels, dtype=np.float32),
        pixel_spacing_mm=spacing,
        modality=_text(ds, "Modality").upper(),
        view_position=_text(ds, "ViewPosition").upper(),
        body_part=_text(ds, "BodyPartExamined").upper(),
        laterality=laterality.upper(),
        photometric=photometric,
        source="dicom",
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        window=window,
        spacing_source=spacing_source,
        series_description=_text(ds, "SeriesDescription"),
        voi=voi,
        path=path,
        extra={"view_code": _view_code_meaning(ds)},
        grey=grey,
    )


_NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})  # PS3.5 A.1, A.2


def _native_pixels(ds: Any) -> np.ndarray | None:
    """Zero-copy view of uncompressed little-endian single-frame grey pixel data, or None.

    Native (uncompressed) Pixel Data of Implicit/Explicit VR Little Endian is the stored
    values row by row (PS3.5 8.1.1); reading it with ``numpy.frombuffer`` avoids pydicom's
    decoder copies.  Unused high bits of unsigned data are masked as pydicom does (PS3.5
    8.1.1: bits above Bits Stored are not part of the value); signed data with unused bits
    (sign extension), other syntaxes and odd layouts return None (pydicom decodes them).
    """
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    if ts not in _NATIVE_LITTLE_ENDIAN or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        alloc, stored_bits = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        samples = int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        return None
    data = ds.PixelData
    if samples != 1 or alloc not in (8, 16) or not isinstance(data, (bytes, bytearray)) or stored_bits > alloc:
        return None
    n = rows * cols
    if len(data) < n * alloc // 8 or (signed and stored_bits < alloc):
        return None
    dtype = np.dtype({(8, False): "u1", (8, True): "i1", (16, False): "<u2", (16, True): "<i2"}[(alloc, signed)])
    arr = np.frombuffer(data, dtype=dtype, count=n).reshape(rows, cols)
    if stored_bits < alloc and n and int(arr.max()) >> stored_bits:
        arr = arr & np.array((1 << stored_bits) - 1, dtype=dtype)
    return arr


def _affine_to_unit(ds: Any, stored: np.ndarray) -> tuple[float, float, tuple[float, float] | None, str] | None:
    """``(x0, a, window, voi)`` with presentation = clip((stored - x0) * a, 0, 1), or None.

    Covers Rescale Slope/Intercept followed by a LINEAR or LINEAR_EXACT window
    (PS3.3 C.11.2.1.2), an 8-bit image without VOI, or min-max; LUT sequences and SIGMOID
    windows are not affine (None: the caller uses :func:`_grayscale`).  The stored minimum
    and maximum are only computed for the min-max case.
    """
    if "ModalityLUTSequence" in ds or ds.get("VOILUTSequence"):
        return None
    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
    m = float(ds.get("RescaleSlope", 1.0) or 1.0) if has_rescale else 1.0
    k = float(ds.get("RescaleIntercept", 0.0) or 0.0) if has_rescale else 0.0
    if m == 0:
        return None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = (_text(ds, "VOILUTFunction") or "LINEAR").upper()
        if function == "LINEAR" and width > 1:
            v0, span = center - 0.5 - (width - 1) / 2, width - 1  # C.11.2.1.2.1
        elif function == "LINEAR_EXACT" and width > 0:
            v0, span = center - width / 2, width  # C.11.2.1.3.2
        else:
            return None  # SIGMOID, width-1 threshold, invalid widths: element-wise path raises/handles
        return (v0 - k) / m, m / span, (center, width), f"window {center:g}/{width:g} {function}"
    if int(ds.get("BitsStored", 16)) <= 8 and int(ds.get("PixelRepresentation", 0)) == 0 and not has_rescale:
        return 0.0, 1.0 / (2 ** int(ds.get("BitsStored", 8)) - 1), None, "8-bit / 255 (no VOI in the header)"
    lo, hi = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
    if hi == lo:
        return float(lo), 0.0, None, "min-max (no VOI in the header)"
    # (v - v_min) / (v_max - v_min) with v = m * stored + k
    if m > 0:
        return float(lo), 1.0 / (hi - lo), None, "min-max (no VOI in the header)"
    return float(hi), -1.0 / (hi - lo), None, "min-max (no VOI in the header)"


def _grayscale(stored: np.ndarray, ds: Any, photometric: str,
               present: tuple[int, int] | None) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """Modality LUT -> VOI LUT -> polarity on ``stored`` values (PS3.4 N.2.1), output in [0, 1].

    ``present`` (start, stop) restricts the min-max fallback to the entries of ``stored``
    that may occur in the image (when ``stored`` is a lookup-table domain).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi

    # Modality LUT (PS3.3 C.11.1): rescale slope/intercept or Modality LUT Sequence
    has_modality = "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds
    if has_modality:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    else:
        values = stored.astype(np.float32)

    # VOI LUT (PS3.3 C.11.2): LUT sequence first, else the first window, else min-max
    window: tuple[float, float] | None = None
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        # LUT inputs are integers (PS3.3 C.11.2.1.1): the stored values, or the rounded modality output
        lut_in = np.rint(values).astype(np.int64) if has_modality else stored
        out = np.asarray(apply_voi(lut_in, ds, index=0), dtype=np.float32)
        pixels = np.clip(out / float(2 ** bits - 1), 0.0, 1.0)
        voi = f"VOI LUT Sequence ({item.get('LUTExplanation', '') or 'item 1'})"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = _text(ds, "VOILUTFunction") or "LINEAR"
        pixels = window_to_unit(values, center, width, function)
        window = (center, width)
        voi = f"window {center:g}/{width:g} {function}"
    elif int(ds.get("BitsStored", 16)) <= 8 and stored.dtype.kind in "iu" and not has_modality \
            and int(ds.get("PixelRepresentation", 0)) == 0:
        # an 8-bit image is already a display image: same scaling as an 8-bit PNG
        pixels = values * np.float32(1.0 / (2 ** int(ds.get("BitsStored", 8)) - 1))
        voi = "8-bit / 255 (no VOI in the header)"
    else:
        seen = values[present[0]:present[1]] if present is not None else values
        v_lo, v_hi = float(seen.min()), float(seen.max())
        pixels = (values - v_lo) * np.float32(1.0 / (v_hi - v_lo)) if v_hi > v_lo else np.zeros_like(values)
        pixels = np.clip(pixels, 0.0, 1.0)
        voi = "min-max (no VOI in the header)"

    # polarity: MONOCHROME1 shows its minimum as white (PS3.3 C.7.6.3.1.2)
    invert = photometric == "MONOCHROME1" or (
        photometric == "MONOCHROME2" and _text(ds, "PresentationLUTShape").upper() == "INVERSE")
    if invert:
        pixels = np.float32(1.0) - pixels
    return np.asarray(pixels, dtype=np.float32), window, voi


def _view_code_meaning(ds: Any) -> str:
    seq = ds.get("ViewCodeSequence")
    if not seq:
        return ""
    return str(seq[0].get("CodeMeaning", "")).strip()


def frontal_chest_skip_reason(r: Radiograph) -> str | None:
    """Why a radiograph must not be analysed as a frontal chest film, or None when it may be.

    Checks Modality (CR/DX), Body Part Examined (chest when present), and the view
    (View Position, View Code Sequence, or the series description when the view is
    blank).  PNG/JPEG files carry no header and are accepted.
    """
    if r.source != "dicom":
        return None
    if r.modality not in RADIOGRAPH_MODALITIES:
        return (f"modality {r.modality or 'missing'} is not a projection radiograph (CR/DX); "
                "the chest X-ray model only reads CR/DX images")
    if r.body_part and not any(w in r.body_part for w in _CHEST_WORDS):
        return f"body part examined is {r.body_part}, not chest"
    view = r.view_position.upper().strip()
    if view in _LATERAL_VIEWS or view.startswith("LAT") or "LATERAL" in view:
        return f"lateral view (View Position {view}); the model reads frontal (PA/AP) chest radiographs only"
    if view in _OBLIQUE_VIEWS:
        return f"oblique view (View Position {view}); the model reads frontal (PA/AP) chest radiographs only"
    if view in _DECUBITUS_VIEWS:
        return f"decubitus view (View Position {view}); the model reads erect/supine frontal radiographs only"
    if view and view not in FRONTAL_VIEWS:
        return f"unrecognised View Position {view!r}; expected PA or AP"
    code = str(r.extra.get("view_code", "")).lower()
    if "lateral" in code:
        return f"lateral view (View Code Sequence: {r.extra['view_code']})"
    if "oblique" in code:
        return f"oblique view (View Code Sequence: {r.extra['view_code']})"
    if not view and _LATERAL_WORD.search(r.series_description.upper()):
        return f"lateral view (series description {r.series_description!r}, no View Position)"
    return None
