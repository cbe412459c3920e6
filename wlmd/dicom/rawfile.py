"""The raw elements of a Part 10 file in explicit VR little endian, without pydicom.

For hot paths that read or change a few elements of a file (an MPPS status mark on a worklist
entry) where building a pydicom Dataset of every element costs ten times the rest of the work.
Only the one layout wlmd's writer produces is walked: preamble, ``DICM``, a meta header, then an
explicit VR little endian data set (defined or undefined lengths). Anything else -- implicit VR,
big endian, deflate, no meta header, a length that runs past the end -- raises ``NotRaw`` and
the caller falls back to pydicom.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from wlmd.dicom.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

PREAMBLE = 128
EXPLICIT_LITTLE = b"1.2.840.10008.1.2.1"
TRANSFER_SYNTAX_TAG = 0x00020010
LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"))
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 16  # nested undefined-length sequences walked; deeper files are left to pydicom
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TAG_LENGTH = struct.Struct("<HHL")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xL")


class NotRaw(ValueError):
    """The bytes are not in the layout this module walks; use pydicom instead."""


class RawElement(NamedTuple):
    """One element: where its header starts, where its value starts and ends, where it ends."""

    tag: int
    vr: bytes
    start: int
    value: int
    value_end: int
    end: int


def body_start(data: bytes) -> int:
    """Offset of the data set after the meta header; NotRaw unless explicit VR little endian."""
    if data[PREAMBLE:PREAMBLE + 4] != b"DICM":
        raise NotRaw("no Part 10 preamble")
    syntax = b""
    pos = PREAMBLE + 4
    for element in _walk(data, pos, len(data), group=0x0002):
        if element.tag == TRANSFER_SYNTAX_TAG:
            syntax = data[element.value:element.value_end].rstrip(b"\0 ")
        pos = element.end
    if syntax != EXPLICIT_LITTLE:
        raise NotRaw("not explicit VR little endian")
    return pos


def elements(data: bytes, start: int, end: int) -> list[RawElement]:
    """The elements of one data set (or item) between ``start`` and ``end``."""
    return list(_walk(data, start, end))


def items(data: bytes, sequence: RawElement) -> list[tuple[int, int]]:
    """(start, end) of the content of each item of a sequence element."""
    found = []
    pos, end = sequence.value, sequence.value_end
    while pos < end:
        tag, length = _item_header(data, pos, end)
        if tag == SEQUENCE_END:
            break
        if tag != ITEM:
            raise NotRaw("not an item in a sequence")
        content = pos + 8
        if length == UNDEFINED:
            pos = content
            for element in _walk(data, content, end, until=ITEM_END):
                pos = element.end
            found.append((content, pos))
            pos += 8  # the item delimitation
        else:
            found.append((content, content + length))
            pos = content + length
    if pos > end:
        raise NotRaw("item runs past its sequence")
    return found


def text(data: bytes, element: RawElement) -> str:
    """An ASCII value without padding; NotRaw for other bytes (their character set matters)."""
    value = data[element.value:element.value_end].strip(b" \0")
    if not value.isascii():
        raise NotRaw("not ASCII")
    return value.decode("ascii")


def encode_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """A non-sequence element with a value of even length."""
    if vr in LONG_VRS:
        return _LONG.pack(tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    return _SHORT.pack(tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def encode_sequence(tag: int, item_contents: list[bytes]) -> bytes:
    """A sequence element of defined length whose items hold the given encoded elements."""
    body = b"".join(_TAG_LENGTH.pack(0xFFFE, 0xE000, len(content)) + content
                    for content in item_contents)
    return _LONG.pack(tag >> 16, tag & 0xFFFF, b"SQ", len(body)) + body


def part10(body: bytes, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """An explicit VR little endian data set as a Part 10 file with wlmd's meta header."""
    meta = b"".join((
        encode_element(0x00020001, b"OB", b"\0\1"),
        encode_element(0x00020002, b"UI", _uid(sop_class_uid)),
        encode_element(0x00020003, b"UI", _uid(sop_instance_uid)),
        encode_element(0x00020010, b"UI", _uid(EXPLICIT_LITTLE.decode())),
        encode_element(0x00020012, b"UI", _uid(IMPLEMENTATION_CLASS_UID)),
        encode_element(0x00020013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
    ))
    group_length = encode_element(0x00020000, b"UL", struct.pack("<L", len(meta)))
    return bytes(PREAMBLE) + b"DICM" + group_length + meta + body


def _uid(value: str) -> bytes:
    return _padded(value, b"\0")


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad * (len(raw) % 2)


def _walk(data: bytes, pos: int, end: int, *, group: int | None = None,
          until: int | None = None, depth: int = 0) -> list[RawElement]:
    """Elements from ``pos``: up to ``end``, the first of another ``group``, or ``until``."""
    if depth > MAX_DEPTH:
        raise NotRaw("sequences nested too deep")
    found: list[RawElement] = []
    while pos < end:
        if pos + 8 > end:
            raise NotRaw("element header runs past the end")
        group_number, element_number = struct.unpack_from("<HH", data, pos)
        tag = group_number << 16 | element_number
        if until is not None and tag == until:
            return found
        if group is not None and group_number != group:
            return found
        vr = data[pos + 4:pos + 6]
        if not (vr.isalpha() and vr.isupper()):
            raise NotRaw("no explicit VR")
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise NotRaw("element header runs past the end")
            (length,) = struct.unpack_from("<L", data, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value = pos + 8
        if length == UNDEFINED:
            if vr != b"SQ":
                raise NotRaw("undefined length outside a sequence")
            value_end = _sequence_end(data, value, end, depth)
            element_end = value_end + 8
        else:
            value_end = element_end = value + length
        if element_end > end:
            raise NotRaw("value runs past the end")
        found.append(RawElement(tag, vr, pos, value, value_end, element_end))
        pos = element_end
    if until is not None:
        raise NotRaw("no delimitation item")
    return found


def _sequence_end(data: bytes, pos: int, end: int, depth: int) -> int:
    """Where the sequence delimitation item of an undefined-length sequence starts."""
    while pos < end:
        tag, length = _item_header(data, pos, end)
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise NotRaw("not an item in a sequence")
        if length == UNDEFINED:
            content = _walk(data, pos + 8, end, until=ITEM_END, depth=depth + 1)
            pos = (content[-1].end if content else pos + 8) + 8
        else:
            pos += 8 + length
    raise NotRaw("no sequence delimitation")


def _item_header(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 8 > end:
        raise NotRaw("item header runs past the end")
    group_number, element_number, length = _TAG_LENGTH.unpack_from(data, pos)
    return group_number << 16 | element_number, length
