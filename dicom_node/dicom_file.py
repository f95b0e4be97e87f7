"""Low-level checks of encoded DICOM data sets (PS3.5 section 7).

:func:`check_structure` walks the element headers of an encoded data set without
decoding values, so a truncated or malformed stream is refused before it is stored;
pydicom on its own silently returns a partial data set for a truncated stream.
:func:`file_meta_bytes` builds the File Meta Information (PS3.10 7.1) that precedes
the received bytes in the stored file.
"""
from __future__ import annotations

import struct
import zlib

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicom_node.errors import InvalidDatasetError

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.75016457371983409011"  # pydicom root + medws
IMPLEMENTATION_VERSION = "MEDWS_010"

_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC", b"UR", b"SV", b"UV"}
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 32


def _bad(msg: str) -> InvalidDatasetError:
    return InvalidDatasetError(f"malformed data set: {msg}")


def _walk_items(buf: bytes, pos: int, end: int, implicit: bool, endian: str, depth: int, pixel: bool) -> int:
    """Walk the items of an undefined-length sequence (or encapsulated pixel data)."""
    while True:
        if pos + 8 > end:
            raise _bad("sequence without delimiter (truncated)")
        group, elem, length = struct.unpack_from(endian + "HHI", buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_DELIM:
            return pos
        if tag != _ITEM:
            raise _bad(f"unexpected tag ({group:04X},{elem:04X}) inside a sequence")
        if length == _UNDEFINED:
            if pixel:
                raise _bad("encapsulated pixel data item with undefined length")
            pos = _walk(buf, pos, end, implicit, endian, depth + 1, in_item=True)
        else:
            if pos + length > end:
                raise _bad("item runs past the end of the data (truncated)")
            if not pixel and length:
                _walk(buf[pos:pos + length], 0, length, implicit, endian, depth + 1, in_item=False)
            pos += length


def _walk(buf: bytes, pos: int, end: int, implicit: bool, endian: str, depth: int = 0, in_item: bool = False,
          want: frozenset[int] | None = None, found: list[bytes] | None = None) -> int:
    if depth > _MAX_DEPTH:
        raise _bad("sequences nested too deeply")
    last_tag = -1
    while pos < end:
        if pos + 8 > end:
            raise _bad("element header cut short (truncated)")
        group, elem = struct.unpack_from(endian + "HH", buf, pos)
        tag = group << 16 | elem
        if tag == _ITEM_DELIM:
            if not in_item:
                raise _bad("item delimiter outside an item")
            return pos + 8
        if tag <= last_tag and depth == 0:
            raise _bad(f"elements out of order at ({group:04X},{elem:04X})")
        last_tag = tag
        start = pos
        vr = b""
        if implicit or group == 0xFFFE:
            (length,) = struct.unpack_from(endian + "I", buf, pos + 4)
            pos += 8
        else:
            vr = bytes(buf[pos + 4:pos + 6])  # buf may be a memoryview
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise _bad(f"invalid VR at ({group:04X},{elem:04X})")
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise _bad("element header cut short (truncated)")
                (length,) = struct.unpack_from(endian + "I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(endian + "H", buf, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            is_pixel = tag == 0x7FE00010
            if vr == b"UN":  # PS3.5 6.2.2: undefined-length UN is implicit VR LE inside
                pos = _walk_items(buf, pos, end, True, "<", depth + 1, False)
            else:
                pos = _walk_items(buf, pos, end, implicit, endian, depth + 1, is_pixel)
        else:
            if pos + length > end:
                raise _bad(f"value of ({group:04X},{elem:04X}) runs past the end of the data (truncated)")
            pos += length
        if want is not None and found is not None and tag in want:
            found.append(buf[start:pos])
    if in_item:
        raise _bad("item without delimiter (truncated)")
    return pos


def inflate(data: bytes) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set (PS3.5 A.5)."""
    try:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    except zlib.error as e:
        raise _bad(f"deflate stream is corrupt ({e})") from e


def check_structure(data: bytes, transfer_syntax: str, want: frozenset[int] | None = None) -> bytes:
    """Raise :class:`InvalidDatasetError` unless every element of ``data`` (a data set
    without file meta, encoded in ``transfer_syntax``) is complete (PS3.5 7.1, 7.5).

    Returns the encoded top-level elements whose tags are in ``want``, concatenated
    in order (a small data set in the same encoding; explicit VR little endian for a
    deflated one) so a header can be read without parsing the whole data set.
    """
    if not data:
        raise _bad("empty data set")
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data = inflate(data)
    implicit = transfer_syntax == ImplicitVRLittleEndian
    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    found: list[bytes] = []
    _walk(data, 0, len(data), implicit, endian, want=want, found=found)
    return b"".join(found)


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xI", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = "") -> bytes:
    """Preamble, ``DICM`` prefix and File Meta Information group (PS3.10 7.1),
    encoded directly (explicit VR little endian, PS3.10 7.1 table 7.1-1)."""
    body = b"".join([
        _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, 0x0002, b"UI", _text(sop_class_uid, b"\0")),
        _element(0x0002, 0x0003, b"UI", _text(sop_instance_uid, b"\0")),
        _element(0x0002, 0x0010, b"UI", _text(transfer_syntax, b"\0")),
        _element(0x0002, 0x0012, b"UI", _text(IMPLEMENTATION_CLASS_UID, b"\0")),
        _element(0x0002, 0x0013, b"SH", _text(IMPLEMENTATION_VERSION, b" ")),
    ])
    if source_ae.strip():
        body += _element(0x0002, 0x0016, b"AE", _text(source_ae.strip()[:16], b" "))
    return b"\x00" * 128 + b"DICM" + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body
