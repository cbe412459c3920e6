"""A quick parser for the common layout of worklist files, for the first start's 100,000 files.

pydicom's reader spends most of a worklist file's parsing on being general (a file object,
a generator per dataset, look-aheads, lazily converted sequences), and the store then watches
every read to refuse truncated files as DCMTK does. This walker covers the layout nearly every
writer produces -- preamble, "DICM", an explicit VR little endian meta header, an explicit or
implicit VR little endian dataset whose tags ascend -- in one pass over the bytes, and builds
the same datasets pydicom builds (raw elements; sequences as pydicom converts them), so the
completeness checks, the sort and index keys and the packed matching keys are computed by the
very same code from the very same values.

It is strict on purpose: anything else (no meta header, another transfer syntax, a value that
runs past the end, an unknown VR, a delimiter out of place, tags out of order, a VR switch
inside a sequence…) gives None, and the caller parses the file with pydicom, which decides
what the file is worth and words the refusal. A file is never refused here.
"""

from __future__ import annotations

import struct
from copy import copy
from typing import Any, cast

from pydicom import Dataset, Sequence
from pydicom.charset import (
    STAND_ALONE_ENCODINGS,
    convert_encodings,
    default_encoding,
    python_encoding,
)
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.filereader import ENCODED_VR
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

Body = tuple[int, bool, bool]  # offset of the dataset in the file, implicit VR, little endian

PREAMBLE = 128
DATASET_MAGIC = b"DICM"
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
SPECIFIC_CHARACTER_SET = 0x00080005
TRANSFER_SYNTAX = BaseTag(0x00020010)
IMPLICIT_BY_SYNTAX = {ExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}

_IMPLICIT = struct.Struct("<HHI")  # group, element, 32-bit length (explicit VR: VR, length)
_U32 = struct.Struct("<I")
_ITEM_END_BYTES = _U32.pack(ITEM_END >> 16 | (ITEM_END & 0xFFFF) << 16)
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_VR_TEXT = {vr: vr.decode(default_encoding) for vr in ENCODED_VR}
_TAGS: dict[int, BaseTag] = {}  # one BaseTag per tag seen: they recur in every file
MAX_SHARED_TAGS = 4096  # far more tags than worklist files use; odd files cannot grow it more
# What Dataset() sets up, copied into each new dataset (Dataset.__init__ costs ten times more).
_FRESH_DATASET = vars(Dataset())


class NotPlain(Exception):
    """The file is not of the layout the walker reads: let pydicom parse it."""


def walk(data: bytes) -> tuple[Dataset, Body] | None:
    """The dataset pydicom would read from ``data`` (meta header dropped), and where it starts.

    None if ``data`` is not of the plain layout described above.
    """
    try:
        return _walk(data)
    except NotPlain:
        return None


def _walk(data: bytes) -> tuple[Dataset, Body]:
    if data[PREAMBLE:PREAMBLE + 4] != DATASET_MAGIC:
        raise NotPlain
    if _looks_implicit(data, PREAMBLE + 4):
        raise NotPlain
    reader = _Reader(data, implicit=False)
    meta, offset = reader.level(PREAMBLE + 4, len(data), top=True, meta=True)
    syntax = meta.get(TRANSFER_SYNTAX)
    if syntax is None or not syntax.value:
        raise NotPlain
    implicit = IMPLICIT_BY_SYNTAX.get(syntax.value.rstrip(b"\0 ").decode("latin-1"))
    if implicit is None:
        raise NotPlain
    if offset < len(data) and _looks_implicit(data, offset) != implicit:
        raise NotPlain  # pydicom would switch the encoding (and warn)
    reader = _Reader(data, implicit)
    elements, end = reader.level(offset, len(data), top=True)
    if end != len(data):
        raise NotPlain
    return reader.dataset(elements, default_encoding), (offset, implicit, True)


def _looks_implicit(data: bytes, offset: int) -> bool:
    """pydicom's test of the first element: a VR must be two capital letters."""
    vr = data[offset + 4:offset + 6]
    return not (len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)


def _tag(value: int) -> BaseTag:
    tag = _TAGS.get(value)
    if tag is None:
        tag = BaseTag(value)
        if len(_TAGS) < MAX_SHARED_TAGS:
            _TAGS[value] = tag
    return tag


class _Reader:
    """Walks one file's elements in one encoding (little endian always)."""

    def __init__(self, data: bytes, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit

    def level(self, at: int, end: int, *, top: bool = False, meta: bool = False,
              item_delimited: bool = False) -> tuple[dict[BaseTag, Any], int]:
        """The elements from ``at`` up to ``end`` (or to the item delimiter), and where the
        next byte is. ``meta``: only group 2, stopping before the first other group."""
        data, implicit = self.data, self.implicit
        elements: dict[BaseTag, Any] = {}
        previous = -1
        encoding: str | list[str] = default_encoding
        while at < end:
            if at + 8 > end:
                raise NotPlain
            group, element, length = _IMPLICIT.unpack_from(data, at)
            number = group << 16 | element
            if meta and group != 2:
                break
            if number == ITEM_END:
                if not item_delimited or length:
                    raise NotPlain
                return elements, at + 8
            value_at = at + 8
            vr = None
            if not implicit:
                code = data[at + 4:at + 6]
                length = length >> 16
                if code in _LONG_VRS:
                    if at + 12 > end:
                        raise NotPlain
                    length = _U32.unpack_from(data, at + 8)[0]
                    value_at = at + 12
                elif code not in _VR_TEXT:
                    raise NotPlain
                vr = _VR_TEXT[code]
            if number <= previous or (top and not meta and group <= 2) or group == 0xFFFE:
                raise NotPlain
            previous = number
            tag = _tag(number)
            if vr == "SQ" or (implicit and _dictionary_vr(number) == "SQ"):
                items, at = self.sequence(value_at, length, end, encoding)
                elements[tag] = DataElement(tag, "SQ", items, value_at, length == UNDEFINED,
                                            True)
                continue
            if length == UNDEFINED or value_at + length > end:
                raise NotPlain
            at = value_at + length
            value = data[value_at:at] if length else _empty(vr)
            elements[tag] = RawDataElement(tag, vr, length, value, value_at, implicit, True)
            if number == SPECIFIC_CHARACTER_SET:
                encoding = _encodings(value)
        if item_delimited:
            raise NotPlain
        return elements, at

    def sequence(self, at: int, length: int, end: int, encoding: str | list[str]
                 ) -> tuple[Sequence, int]:
        """The items of a sequence whose value starts at ``at``, and where it ends."""
        data = self.data
        undefined = length == UNDEFINED
        stop = end if undefined else at + length
        if stop > end:
            raise NotPlain
        items = []
        while True:
            if not undefined and at == stop:
                break
            if at + 8 > stop:
                raise NotPlain
            group, element, size = _IMPLICIT.unpack_from(data, at)
            number = group << 16 | element
            at += 8
            if number == SEQUENCE_END and undefined and not size:
                break
            if number != ITEM:
                raise NotPlain
            if not self.implicit and _looks_implicit(data, at) and (
                    size >= 6 if size != UNDEFINED else data[at:at + 4] != _ITEM_END_BYTES):
                raise NotPlain  # pydicom would read this item as implicit VR
            if size == UNDEFINED:
                elements, at = self.level(at, stop, item_delimited=True)
            else:
                if at + size > stop:
                    raise NotPlain
                elements, after = self.level(at, at + size)
                if after != at + size:
                    raise NotPlain
                at = after
            items.append(self.dataset(elements, encoding))
        sequence = Sequence(items)
        sequence.is_undefined_length = undefined
        return sequence, at

    def dataset(self, elements: dict[BaseTag, Any], parent_encoding: str | list[str]
                ) -> Dataset:
        """A Dataset of ``elements`` set up as pydicom's reader sets it up."""
        dataset = Dataset.__new__(Dataset)
        fresh = {key: copy(value) if isinstance(value, dict | list) else value
                 for key, value in _FRESH_DATASET.items()}
        fresh["_dict"] = elements
        fresh["_parent_encoding"] = parent_encoding
        vars(dataset).update(fresh)
        encoding = parent_encoding
        charset = elements.get(_tag(SPECIFIC_CHARACTER_SET))
        if charset is not None:
            encoding = _encodings(charset.value)
        dataset.set_original_encoding(self.implicit, True, encoding)
        return dataset


def _encodings(charset: bytes | None) -> list[str]:
    """The Python encodings of a (0008,0005) value pydicom knows as it is spelled.

    Misspelt, unknown or conflicting terms make pydicom warn (once per conversion, and it
    converts more often than the walker): such files are left to pydicom.
    """
    terms = convert_string(charset or b"", True)
    listed = [terms] if isinstance(terms, str) else list(terms)
    if any(term not in python_encoding for term in listed) or (
            len(listed) > 1 and any(term in STAND_ALONE_ENCODINGS for term in listed)):
        raise NotPlain
    return convert_encodings(terms)


def _empty(vr: str | None) -> bytes | None:
    """The value pydicom gives a raw element of length 0."""
    return cast(bytes | None, empty_value_for_VR(vr, raw=True))


def _dictionary_vr(number: int) -> str | None:
    try:
        return str(dictionary_VR(number))
    except KeyError:
        return None
