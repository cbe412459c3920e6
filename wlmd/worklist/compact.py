"""The matching-key values of a record, kept compact, so that matching never decodes a dataset.

A record keeps the file's bytes and is decoded only to build an answer; deciding whether it
matches needs only the matching keys of the conformance statement (``keys.ROOT_MATCHING_KEYS``).
Their values are packed once, when the file is parsed, into one small ``bytes`` object per
record (about a fifth of the file) holding each key's VR and raw value as ``query.value_of``
reads them from the full dataset, and the SPS items with their own keys. ``MatchView`` unpacks
it into what the matcher reads of a dataset (``get_item``, ``[tag].value`` for the sequence),
so every ``matching.KeyCheck`` judges a view exactly as it judges the decoded dataset.
``screens`` go further for the keys a query names: substring searches of the packed bytes,
run in C, that every record the matcher would accept passes, so most are never unpacked.

Layout of one level (the record, or one SPS item): a table of 4-byte offsets, one per key in
table order (plain keys, date/time pairs, sequences; ``ABSENT``: no such element), then each
present key: ``1``, VR length, VR, 4-byte value length, value; or, for the sequence, ``2``,
4-byte item count, then each item as a 4-byte size and a level. A view reads only the keys a
query asks about, so matching a record costs about one key's unpacking.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Sequence
from typing import NamedTuple

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.valuerep import STANDARD_VR

from wlmd.dicom.rawfile import RawLevel, RawSequence
from wlmd.worklist.keys import ROOT_MATCHING_KEYS, MatchingKeys
from wlmd.worklist.matching import required_fragments
from wlmd.worklist.query import Elements, PreparedQuery, element_vr, present_value

VALUE, ITEMS = 1, 2
ABSENT = 0xFFFFFFFF
_U32 = struct.Struct("<I")


class Slots(NamedTuple):
    """The keys of one level in packing order; ``nested`` for the sequence slots."""

    tags: tuple[BaseTag, ...]
    position: dict[int, int]  # tag (the table's own objects: found by identity) -> place
    nested: dict[BaseTag, Slots]


def _slots(keys: MatchingKeys) -> Slots:
    nested = {tag: _slots(inner) for tag, inner in keys.sequences}
    tags = (*(tag for tag, _ in keys.keys), *(tag for pair in keys.combined for tag in pair),
            *nested)
    return Slots(tags, {tag: place for place, tag in enumerate(tags)}, nested)


ROOT_SLOTS = _slots(ROOT_MATCHING_KEYS)


def pack(dataset: Dataset | Elements) -> bytes:
    """The matching-key values of ``dataset`` (a parsed worklist file) in compact form."""
    if type(dataset) is RawLevel:
        return _pack_walked(dataset, ROOT_SLOTS)
    return _pack_level(dataset, ROOT_SLOTS)


# What a present key's entry starts with, by VR: its marker, the VR's length and the VR.
_HEADS = {vr: bytes((VALUE, len(vr))) + vr.encode("latin-1") for vr in STANDARD_VR}


def _pack_walked(level: RawLevel, slots: Slots) -> bytes:
    """``_pack_level`` of a level the first start's walker read: the same bytes, copied
    straight from its raw elements. A level holding anything else is left to
    ``_pack_level``.

    Run for every file of a first start: the parts are gathered in one list and joined once,
    and each value's length is the element's own (a walked value is never cut short)."""
    tags = slots.tags
    offsets: list[int] = []
    parts: list[bytes] = [b""]  # the offset table, once known
    size = 4 * len(tags)
    get = level.get
    for tag in tags:
        element = get(tag)
        if element is None:
            offsets.append(ABSENT)
            continue
        offsets.append(size)
        kind = type(element)
        if kind is RawDataElement:
            vr = element[1]
            if vr and vr != "SQ":
                head = _HEADS[vr]
                length = element[2]
                parts += (head, _U32.pack(length), element[3] or b"")
                size += len(head) + 4 + length
                continue
        elif kind is RawSequence and (nested := slots.nested.get(tag)) is not None:
            packed_items = [_pack_walked(item, nested) for item in element.value]
            part = bytes((ITEMS,)) + _U32.pack(len(packed_items)) + b"".join(
                _U32.pack(len(packed)) + packed for packed in packed_items)
            parts.append(part)
            size += len(part)
            continue
        return _pack_level(level, slots)
    parts[0] = _offset_table(len(offsets)).pack(*offsets)
    return b"".join(parts)


@functools.cache
def _offset_table(count: int) -> struct.Struct:
    """The layout of a level's table of ``count`` offsets."""
    return struct.Struct(f"<{count}I")


def _pack_level(dataset: Dataset | Elements, slots: Slots) -> bytes:
    offsets: list[int] = []
    body = bytearray()
    table_size = 4 * len(slots.tags)
    for tag in slots.tags:
        element = dataset.get_item(tag)
        if element is None:
            offsets.append(ABSENT)
            continue
        offsets.append(table_size + len(body))
        vr = element_vr(element)
        nested = slots.nested.get(tag)
        if nested is not None and vr == "SQ":
            items = dataset[tag].value or []
            body.append(ITEMS)
            body += _U32.pack(len(items))
            for item in items:
                packed = _pack_level(item, nested)
                body += _U32.pack(len(packed)) + packed
            continue
        if isinstance(element, RawDataElement) and vr != "SQ":  # as value_of reads it
            raw = element.value or b""
        else:
            vr, raw = present_value(dataset, tag)
        code = vr.encode("latin-1")
        body.append(VALUE)
        body.append(len(code))
        body += code + _U32.pack(len(raw)) + raw
    return struct.pack(f"<{len(offsets)}I", *offsets) + bytes(body)


def screens(query: PreparedQuery) -> tuple[re.Pattern[bytes], ...]:
    """Searches that find something in ``pack``'s bytes of every record ``query`` matches.

    ``pack`` keeps each key's raw value verbatim and a view reads values from those bytes, so
    a byte string that every accepted value contains (``matching.required_fragments``) is in
    the packed bytes of every match: a record where a search finds nothing is not worth
    unpacking. One search per key, run in C; a key that matches nothing gives a search that
    finds nothing.
    """
    return tuple(re.compile(b"|".join(map(re.escape, sorted(alternatives)))
                            if alternatives else b"(?!)")
                 for alternatives in required_fragments(query))


class SequenceElement(NamedTuple):
    """A sequence as the matcher and answers read an element: its VR and its items."""

    VR: str
    value: Sequence[Elements]


class MatchView:
    """The matching keys of one record (or SPS item), read as the matcher reads a dataset."""

    __slots__ = ("_packed", "_slots", "_start")

    def __init__(self, packed: bytes, start: int = 0, slots: Slots = ROOT_SLOTS) -> None:
        self._packed, self._start, self._slots = packed, start, slots

    @classmethod
    def of(cls, packed: bytes) -> MatchView:
        """A view of what ``pack`` made (nothing is unpacked until a key is read)."""
        return cls(packed)

    def get_item(self, tag: int) -> RawDataElement | SequenceElement | None:
        """The element of ``tag``, or None if the record has none (or it is no matching key).

        What the matcher calls for every key of every candidate: all inline.
        """
        place = self._slots.position.get(tag)
        if place is None:
            return None
        packed, start = self._packed, self._start
        offset = _U32.unpack_from(packed, start + 4 * place)[0]
        if offset == ABSENT:
            return None
        at = start + offset
        if packed[at] == ITEMS:
            return SequenceElement("SQ", self._items(at + 1, self._slots.nested[BaseTag(tag)]))
        size = packed[at + 1]
        vr = packed[at + 2:at + 2 + size].decode("latin-1")
        at += 2 + size
        length = _U32.unpack_from(packed, at)[0]
        return RawDataElement(BaseTag(tag), vr, length, packed[at + 4:at + 4 + length], 0,
                              False, True)

    def value(self, tag: int) -> tuple[str, bytes] | None:
        """``query.value_of`` this view, without making an element: (VR, raw value), or None
        if the record has no such element (or it is no matching key, or a sequence)."""
        at = self._entry(tag)
        packed = self._packed
        if at is None or packed[at] == ITEMS:
            return None
        size = packed[at + 1]
        vr = packed[at + 2:at + 2 + size].decode("latin-1")
        at += 2 + size
        length = _U32.unpack_from(packed, at)[0]
        return vr, packed[at + 4:at + 4 + length]

    def items(self, tag: int) -> list[MatchView]:
        """The items of sequence ``tag`` (none if absent, or not a sequence)."""
        at = self._entry(tag)
        if at is None or self._packed[at] != ITEMS:
            return []
        return self._items(at + 1, self._slots.nested[BaseTag(tag)])

    def _entry(self, tag: int) -> int | None:
        """Where the entry of ``tag`` starts in the packed bytes; None if absent."""
        place = self._slots.position.get(tag)
        if place is None:
            return None
        offset = _U32.unpack_from(self._packed, self._start + 4 * place)[0]
        return None if offset == ABSENT else self._start + offset

    def __getitem__(self, tag: int) -> RawDataElement | SequenceElement:
        element = self.get_item(tag)
        if element is None:
            raise KeyError(tag)
        return element

    def _items(self, at: int, slots: Slots) -> list[MatchView]:
        packed = self._packed
        count = _U32.unpack_from(packed, at)[0]
        at += 4
        items = []
        for _ in range(count):
            size = _U32.unpack_from(packed, at)[0]
            items.append(MatchView(packed, at + 4, slots))
            at += 4 + size
        return items
