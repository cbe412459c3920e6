"""The matching-key values of a record, kept compact, so that matching never decodes a dataset.

A record keeps the file's bytes and is decoded only to build an answer; deciding whether it
matches needs only the matching keys of the conformance statement (``keys.ROOT_MATCHING_KEYS``).
Their values are packed once, when the file is parsed, into one small ``bytes`` object per
record (about a fifth of the file) holding each key's VR and raw value as ``query.value_of``
reads them from the full dataset, and the SPS items with their own keys. ``MatchView`` unpacks
it into what the matcher reads of a dataset (``get_item``, ``[tag].value`` for the sequence),
so every ``matching.KeyCheck`` judges a view exactly as it judges the decoded dataset.

Layout, per level, one slot per key in table order (plain keys, date/time pairs, sequences):
``0`` absent; ``1`` VR length, VR, 4-byte value length, value; ``2`` a sequence: 4-byte item
count, then each item's slots.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from wlmd.worklist.keys import ROOT_MATCHING_KEYS, MatchingKeys
from wlmd.worklist.query import element_vr, present_value

ABSENT, VALUE, ITEMS = 0, 1, 2


class Slots(NamedTuple):
    """The keys of one level in packing order; ``nested`` for the sequence slots."""

    tags: tuple[BaseTag, ...]
    nested: dict[BaseTag, Slots]


def _slots(keys: MatchingKeys) -> Slots:
    tags = [tag for tag, _ in keys.keys] + [tag for pair in keys.combined for tag in pair]
    nested = {tag: _slots(inner) for tag, inner in keys.sequences}
    return Slots(tuple(tags) + tuple(nested), nested)


ROOT_SLOTS = _slots(ROOT_MATCHING_KEYS)


def pack(dataset: Dataset) -> bytes:
    """The matching-key values of ``dataset`` (a parsed worklist file) in compact form."""
    out = bytearray()
    _pack_level(dataset, ROOT_SLOTS, out)
    return bytes(out)


def _pack_level(dataset: Dataset, slots: Slots, out: bytearray) -> None:
    for tag in slots.tags:
        element = dataset.get_item(tag)
        if element is None:
            out.append(ABSENT)
            continue
        nested = slots.nested.get(tag)
        if nested is not None and element_vr(element) == "SQ":
            items = dataset[tag].value or []
            out.append(ITEMS)
            out += len(items).to_bytes(4, "little")
            for item in items:
                _pack_level(item, nested, out)
            continue
        vr, raw = present_value(dataset, tag)
        code = vr.encode("latin-1")
        out.append(VALUE)
        out.append(len(code))
        out += code
        out += len(raw).to_bytes(4, "little")
        out += raw


class SequenceElement(NamedTuple):
    """A sequence slot as the matcher reads an element: its VR and its items."""

    VR: str
    value: list[MatchView]


class MatchView:
    """The matching keys of one record (or SPS item), read as the matcher reads a dataset."""

    __slots__ = ("_elements",)

    def __init__(self, elements: dict[int, Any]) -> None:
        self._elements = elements

    @classmethod
    def of(cls, packed: bytes) -> MatchView:
        """Unpack what ``pack`` made."""
        return _unpack_level(packed, 0, ROOT_SLOTS)[0]

    def get_item(self, tag: int) -> RawDataElement | SequenceElement | None:
        """The element of ``tag``, or None if the record has none."""
        return self._elements.get(tag)

    def __getitem__(self, tag: int) -> RawDataElement | SequenceElement:
        return self._elements[tag]


def _unpack_level(packed: bytes, pos: int, slots: Slots) -> tuple[MatchView, int]:
    elements: dict[int, Any] = {}
    for tag in slots.tags:
        kind = packed[pos]
        pos += 1
        if kind == VALUE:
            size = packed[pos]
            vr = packed[pos + 1:pos + 1 + size].decode("latin-1")
            pos += 1 + size
            length = int.from_bytes(packed[pos:pos + 4], "little")
            pos += 4
            elements[tag] = RawDataElement(tag, vr, length, packed[pos:pos + length], 0,
                                           False, True)
            pos += length
        elif kind == ITEMS:
            count = int.from_bytes(packed[pos:pos + 4], "little")
            pos += 4
            items = []
            for _ in range(count):
                item, pos = _unpack_level(packed, pos, slots.nested[tag])
                items.append(item)
            elements[tag] = SequenceElement("SQ", items)
    return MatchView(elements), pos
