"""A worklist file's elements read straight from its bytes, so an answer needs no pydicom decode.

An answer copies raw values of its record (``response.py`` reads them with ``value_of`` and
walks sequence items), so a full pydicom decode (a Dataset per item, a generator per level)
is more than it needs: it was half the time of a cold query with many answers. ``elements_of``
indexes every level once: each element as the ``RawDataElement`` pydicom's ``read_dataset``
gives for it (VR None in implicit VR, the value's bytes), each sequence as a list of items.
Whatever pydicom might read differently (an unknown VR, an item or dataset switching between
implicit and explicit VR, an undefined length outside a sequence, a length past the end) is
left to pydicom: the caller decodes the file as before.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from wlmd.worklist.compact import SequenceElement
from wlmd.worklist.completeness import REFERENCED_SEQUENCES

if TYPE_CHECKING:
    from wlmd.worklist.query import Elements
    from wlmd.worklist.records import WorklistRecord

ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
_KNOWN_VRS = {str(vr).encode(): str(vr) for vr in STANDARD_VR}  # as a file spells them
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)


class FileItem(dict[int, "RawDataElement | SequenceElement"]):
    """One level of a file (the dataset or a sequence item), read as response.py reads one."""

    get_item = dict.get


class _Unusual(Exception):
    """Bytes pydicom might read otherwise than this module: let pydicom decode them."""


def record_elements(record: WorklistRecord) -> Elements:
    """What an answer reads of ``record``: read from its bytes, or else its decoded dataset."""
    if record.body is not None:
        offset, implicit, little = record.body
        try:
            elements = _Reader(record.data, implicit, little).level(offset, None, top=True)[0]
        except (_Unusual, struct.error, IndexError):
            pass
        else:
            if record.add_references:  # as records.add_missing_references does
                for tag in REFERENCED_SEQUENCES:
                    elements.setdefault(tag, SequenceElement("SQ", []))
            return elements
    return record.dataset


class _Reader:
    """Reads the levels of one encoded dataset as pydicom's filereader does."""

    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data, self.implicit, self.little = data, implicit, little
        order = "<" if little else ">"
        self.tag_length = struct.Struct(order + "HHL")
        self.explicit_head = struct.Struct(order + "HH2sH")
        self.u32 = struct.Struct(order + "L")

    def level(self, at: int, end: int | None, *, top: bool = False) -> tuple[FileItem, int]:
        """The elements from ``at`` to ``end`` (None: to the item delimiter, or for the
        dataset to the end of the data), and where reading stopped."""
        data, implicit = self.data, self.implicit
        elements = FileItem()
        first = True
        while end is None or at < end:
            if at + 8 > len(data):
                if top:
                    return elements, at  # pydicom stops at fewer than 8 bytes
                raise _Unusual("item runs past the data")
            group, number = self.explicit_head.unpack_from(data, at)[:2]
            tag = group << 16 | number
            if tag == ITEM_END:
                return elements, at + 8
            if first:
                first = False
                looks_explicit = 0x40 < data[at + 4] < 0x5B and 0x40 < data[at + 5] < 0x5B
                if looks_explicit == implicit and (top or not implicit):
                    raise _Unusual("pydicom switches between implicit and explicit VR here")
            vr: str | None
            if implicit:
                vr, length = None, self.u32.unpack_from(data, at + 4)[0]
                at += 8
            else:
                vr = _KNOWN_VRS.get(data[at + 4:at + 6])
                if vr is None:
                    raise _Unusual("unknown VR")
                if vr in _LONG_VRS:
                    length = self.u32.unpack_from(data, at + 8)[0]
                    at += 12
                else:
                    length = self.explicit_head.unpack_from(data, at)[3]
                    at += 8
            is_sequence = vr == "SQ" if vr is not None else _dictionary_sequence(tag)
            if is_sequence:
                items, at = self.items(at, None if length == UNDEFINED else at + length)
                elements[tag] = SequenceElement("SQ", items)
                continue
            if length == UNDEFINED or at + length > len(data):
                raise _Unusual("undefined length outside a sequence, or past the end")
            elements[tag] = RawDataElement(BaseTag(tag), vr, length, data[at:at + length], at,
                                           implicit, self.little)
            at += length
        if at != end:
            raise _Unusual("the last element runs past its item")
        return elements, at

    def items(self, at: int, end: int | None) -> tuple[list[FileItem], int]:
        """The items of a sequence from ``at`` to ``end`` (None: to its delimiter)."""
        items: list[FileItem] = []
        while end is None or at < end:
            tag_group, tag_number, length = self.tag_length.unpack_from(self.data, at)
            tag = tag_group << 16 | tag_number
            at += 8
            if tag == SEQUENCE_END:
                break
            if tag != ITEM:
                raise _Unusual("not an item")
            item, at = self.level(at, None if length == UNDEFINED else at + length)
            items.append(item)
        if end is not None and at != end:
            raise _Unusual("the sequence's items overrun it")
        return items, at


@functools.lru_cache(maxsize=1024)
def _dictionary_sequence(tag: int) -> bool:
    """True if the data dictionary gives ``tag`` the VR SQ (as pydicom reads implicit VR)."""
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False
