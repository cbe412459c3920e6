"""Answers encoded straight from a record's raw elements, without a pydicom Dataset each.

A fresh worker's first query with many answers spent most of its time building one Dataset per
answer (``response.build_response``) and encoding it (``dimse.encode_dataset``): about 0.3 ms
an answer, 1,560 answers for a name prefix on 100,000 entries. ``AnswerPlan`` works the search
mask out once per query and transfer syntax into the encoded pieces that never change (element
headers, echoed query items, constant elements); an answer is then the record's raw values
joined between them, by the rules of ``response.py`` (value cut at a NUL and padded to even
length, one item per record item, empty descriptions, codes and references dropped, (0008,0005)
added), giving the very bytes ``encode_dataset(build_response(...))`` gives: the unit tests
compare the two over generated entries and queries. ``wanted`` names the record elements a
plan reads: the service reads only those from the file (``fileview.raw_elements``), walking
over the others, which made a fresh worker's reading a fifth cheaper; a plan looks them up by
the reader's own tag objects (``rawfile.tag_key``), which a dict finds without calling
``BaseTag.__eq__``. What a plan does not model raises
``NotDirect`` and is answered the old way: a mask element of another VR where a rule reads it
(at planning), or a value longer than its header's length field (per record).
"""

from __future__ import annotations

import functools
import struct
from typing import Final, NamedTuple

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import UID

from wlmd.config.settings import CharsetMode
from wlmd.dicom.dimse import deflate_identifier, encode_dataset
from wlmd.dicom.rawfile import EXPLICIT_LITTLE, ITEM, RawLevel, Wanted, tag_key
from wlmd.worklist.keys import (
    CODE_VALUE,
    CODING_SCHEME_DESIGNATOR,
    PREGNANCY_STATUS,
    REFERENCED_PATIENT_SEQUENCE,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_STUDY_SEQUENCE,
    REQUESTED_PROCEDURE_CODE_SEQUENCE,
    REQUESTED_PROCEDURE_DESCRIPTION,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SCHEDULED_PROTOCOL_CODE_SEQUENCE,
    SPECIFIC_CHARACTER_SET,
    SPS_DESCRIPTION,
)
from wlmd.worklist.query import CHARSET_VRS, STRING_VRS, element_vr, make_raw, value_of
from wlmd.worklist.response import PREGNANCY_STATUS_UNKNOWN, raw_pregnancy_status

# Nodes hold plain int tags: ``BaseTag.__eq__`` is Python code, and these are compared often.
(_CODE_VALUE, _CODING_SCHEME, _SPS, _SPS_DESCRIPTION, _PROTOCOL_CODES, _RP_DESCRIPTION,
 _RP_CODES, _STUDY_REFERENCES, _PATIENT_REFERENCES, _SOP_CLASS, _SOP_INSTANCE) = map(int, (
    CODE_VALUE, CODING_SCHEME_DESIGNATOR, SCHEDULED_PROCEDURE_STEP_SEQUENCE, SPS_DESCRIPTION,
    SCHEDULED_PROTOCOL_CODE_SEQUENCE, REQUESTED_PROCEDURE_DESCRIPTION,
    REQUESTED_PROCEDURE_CODE_SEQUENCE, REFERENCED_STUDY_SEQUENCE, REFERENCED_PATIENT_SEQUENCE,
    REFERENCED_SOP_CLASS_UID, REFERENCED_SOP_INSTANCE_UID))
# Elements the response rules test for an empty value: a plan models them as strings only.
_TESTED_EMPTY = frozenset((_CODE_VALUE, _CODING_SCHEME, _SPS_DESCRIPTION, _RP_DESCRIPTION,
                           _SOP_CLASS, _SOP_INSTANCE))
_CHARSET_KEY = tag_key(SPECIFIC_CHARACTER_SET)
_MAX_SHORT: Final = 0xFFFF  # longest value of a VR with a 2-byte length field
_STRING, _PREGNANCY, _CONSTANT, _SEQUENCE = range(4)


class NotDirect(Exception):
    """This query, or this record's answer, is built and encoded the old way."""


class Node(NamedTuple):
    """One element of an answer being built: the encoded element, or for a sequence its items
    (each a list of nodes in tag order). ``empty``: what ``response.py``'s ``_is_empty`` says
    of it (a sequence counts as empty, as ``value_of`` reads one)."""

    tag: int
    vr: str
    encoded: bytes
    items: list[list[Node]] | None
    empty: bool


# Node(...) without the namedtuple's Python-level __new__ (a node per answered element)
_node_of = functools.partial(tuple.__new__, Node)


class _Step(NamedTuple):
    """What one mask element becomes in every answer."""

    kind: int
    tag: int
    key: BaseTag  # the reader's key object for ``tag``: found without ``BaseTag.__eq__``
    vr: str
    header: bytes  # the element up to its length field (string), or to its value (pregnancy)
    wide: bool  # a 4-byte length field (string)
    pad: bytes  # what pads an odd value (string)
    constant: Node | None  # the element as it is in every answer, or the echo (sequence)
    item: tuple[_Step, ...] | None  # the steps of the one query item (sequence)


class AnswerPlan:
    """The encoded answer of one query in one transfer syntax, for any record read raw."""

    def __init__(self, mask: Dataset, transfer_syntax_uid: str, *, charset: CharsetMode,
                 new_vr: bool, compression_level: int) -> None:
        syntax = UID(transfer_syntax_uid)
        self._syntax = EXPLICIT_LITTLE if syntax.is_deflated else transfer_syntax_uid
        self._new_vr = new_vr
        self._implicit = syntax.is_implicit_VR
        self._order = "<" if syntax.is_little_endian else ">"
        self._long = struct.Struct(self._order + "L")
        self._short = struct.Struct(self._order + "H")
        self._item_tag = _tag_bytes(ITEM, self._order)
        self._compression = compression_level if syntax.is_deflated else None
        self._charset = charset
        self._steps = self._plan_level(mask, top_level=True)
        self.wanted = _wanted(self._steps, charset_read=charset is CharsetMode.KEEP)

    def answer(self, record: RawLevel) -> bytes:
        """The encoded identifier of ``record``'s answer (NotDirect: build it the old way)."""
        top = self._fill(self._steps, record)
        sps = _node(top, _SPS)
        if sps is not None and sps.items:
            first = _without_empty_description_or_code(sps.items[0], _SPS_DESCRIPTION,
                                                       _PROTOCOL_CODES)
            if first is not sps.items[0]:
                top = _replaced(top, sps._replace(items=[first, *sps.items[1:]]))
        top = _without_empty_description_or_code(top, _RP_DESCRIPTION, _RP_CODES)
        top = _without_empty_reference_item(top, _STUDY_REFERENCES)
        top = _without_empty_reference_item(top, _PATIENT_REFERENCES)
        charset = self._character_set(top, record)
        if charset is not None:
            top = sorted((*top, charset), key=_tag_of)
        encoded = self._encode_level(top)
        if self._compression is None:
            return encoded
        return deflate_identifier(encoded, self._compression)

    # --- planning: once per query and transfer syntax --------------------------------------

    def _plan_level(self, mask_item: Dataset, *, top_level: bool) -> tuple[_Step, ...]:
        steps = []
        for tag in sorted(mask_item.keys()):
            vr = element_vr(mask_item.get_item(tag))
            if vr == "SQ":
                steps.append(self._plan_sequence(mask_item[tag]))
            elif top_level and tag == PREGNANCY_STATUS and vr == "US":
                steps.append(_Step(_PREGNANCY, int(tag), tag_key(tag), vr,
                                   self._encoded(DataElement(tag, "US", 0))[:-2], False, b"",
                                   None, None))
            elif vr in STRING_VRS:
                header = self._encoded(make_raw(tag, vr, b""))
                wide = self._implicit or len(header) == 12
                steps.append(_Step(_STRING, int(tag), tag_key(tag), vr,
                                   header[:-4] if wide else header[:-2], wide,
                                   b"\0" if vr == "UI" else b" ", None, None))
            else:
                steps.append(_Step(_CONSTANT, int(tag), tag_key(tag), vr, b"", False, b"",
                                   self._constant(mask_item, tag), None))
        return tuple(steps)

    def _plan_sequence(self, element: DataElement) -> _Step:
        tag, items = element.tag, list(element.value or [])
        _check_not_tested(tag, "SQ")
        echo = Node(int(tag), "SQ", b"", [self._echo(item) for item in items], True)
        item = self._plan_level(items[0], top_level=False) if len(items) == 1 else None
        return _Step(_SEQUENCE, int(tag), tag_key(tag), "SQ", b"", False, b"", echo, item)

    def _echo(self, mask_item: Dataset) -> list[Node]:
        """A query item answered as it came (the record has no item for it)."""
        nodes = []
        for tag in sorted(mask_item.keys()):
            if element_vr(mask_item.get_item(tag)) == "SQ":
                _check_not_tested(tag, "SQ")
                nodes.append(Node(int(tag), "SQ", b"", [self._echo(item) for item
                                                        in mask_item[tag].value or []], True))
            else:
                nodes.append(self._constant(mask_item, tag))
        return nodes

    def _constant(self, mask_item: Dataset, tag: BaseTag) -> Node:
        """A mask element copied into answers as it is: a string must be sent verbatim (an
        encoder that converts it would use the answer's character set)."""
        element = mask_item.get_item(tag)
        vr = element_vr(element)
        _check_not_tested(tag, vr)
        found = value_of(mask_item, tag)
        value = b"" if found is None else found[1]
        if vr in STRING_VRS and not (isinstance(element, RawDataElement) and element.VR
                                     and len(value) % 2 == 0 and len(value) <= _MAX_SHORT):
            raise NotDirect("a query value the encoder would convert")
        return Node(int(tag), vr, self._encoded(element), None, not value)

    def _encoded(self, element: DataElement | RawDataElement) -> bytes:
        """``element`` as ``encode_dataset`` writes it in this syntax (before deflating)."""
        holder = Dataset()
        holder[element.tag] = element
        return encode_dataset(holder, self._syntax, new_vr=self._new_vr)

    # --- one answer --------------------------------------------------------------------------

    def _fill(self, steps: tuple[_Step, ...], record: RawLevel) -> list[Node]:
        nodes = []
        get = record.get
        for step in steps:
            kind = step.kind
            if kind == _STRING:
                element = get(step.key)
                if element is None:
                    value = b""
                elif element.__class__ is RawDataElement and element.VR in STRING_VRS:
                    value = element.value or b""  # the common case of _record_string, inline
                    if b"\0" in value:
                        value = value.split(b"\0", 1)[0]
                else:
                    value = _record_string(record, step.key)
                size = len(value)
                if size % 2:
                    value += step.pad
                    size += 1
                if step.wide:
                    length = self._long.pack(size)
                elif size <= _MAX_SHORT:
                    length = self._short.pack(size)
                else:
                    raise NotDirect("a value too long for its VR's length field")
                nodes.append(_node_of((step.tag, step.vr, step.header + length + value, None,
                                       not size)))
            elif kind == _SEQUENCE:
                nodes.append(self._fill_sequence(step, record))
            elif kind == _PREGNANCY:
                nodes.append(Node(step.tag, step.vr, step.header
                                  + self._short.pack(_pregnancy_status(record, step.key)), None,
                                  False))
            else:
                assert step.constant is not None
                nodes.append(step.constant)
        return nodes

    def _fill_sequence(self, step: _Step, record: RawLevel) -> Node:
        """One filled item per record item; the query's items echoed if it has none."""
        assert step.constant is not None
        if step.item is None:
            return step.constant
        element = record.get(step.key)
        if element is None or element_vr(element) != "SQ" or not element.value:
            return step.constant
        return _node_of((step.tag, "SQ", b"", [self._fill(step.item, item)
                                               for item in element.value], True))

    def _character_set(self, top: list[Node], record: RawLevel) -> Node | None:
        """``-cs1``/``-csk``: the (0008,0005) to add, if any."""
        if self._charset is CharsetMode.NONE or not _affected_by_charset(top):
            return None
        if self._charset is CharsetMode.ISO_IR_100:
            value = b"ISO_IR 100"
        else:
            value = _record_string(record, _CHARSET_KEY)
            if not value:
                return None
        if len(value) % 2:
            value += b" "
        return Node(int(SPECIFIC_CHARACTER_SET), "CS",
                    self._encoded(make_raw(SPECIFIC_CHARACTER_SET, "CS", value)), None, False)

    def _encode_level(self, nodes: list[Node]) -> bytes:
        parts = []
        for node in nodes:
            if node.items is None:
                parts.append(node.encoded)
                continue
            body = b"".join(self._item_tag + self._long.pack(len(content)) + content
                            for content in map(self._encode_level, node.items))
            parts.append(_tag_bytes(node.tag, self._order)
                         + (b"" if self._implicit else b"SQ\0\0")
                         + self._long.pack(len(body)) + body)
        return b"".join(parts)


def _wanted(steps: tuple[_Step, ...], *, charset_read: bool = False) -> Wanted:
    """The record elements that the steps of one level read (``ElementReader``'s ``keep``)."""
    wanted: dict[int, Wanted] = {int(SPECIFIC_CHARACTER_SET): {}} if charset_read else {}
    for step in steps:
        if step.kind in (_STRING, _PREGNANCY):
            wanted[step.tag] = {}
        elif step.kind == _SEQUENCE and step.item is not None:
            wanted[step.tag] = _wanted(step.item)
    return wanted


def _check_not_tested(tag: int, vr: str) -> None:
    """The response rules read these elements as strings; a plan models nothing else."""
    if tag in _TESTED_EMPTY and vr not in STRING_VRS:
        raise NotDirect("an element the response rules test, of another VR")


def _tag_bytes(tag: int, order: str) -> bytes:
    return struct.pack(order + "HH", tag >> 16, tag & 0xFFFF)


def _tag_of(node: Node) -> int:
    return node.tag


def _record_string(record: RawLevel, key: BaseTag) -> bytes:
    """``findAndGetString``: the raw value of a string element, up to a NUL; else empty."""
    element = record.get(key)
    if not isinstance(element, RawDataElement) or element_vr(element) not in STRING_VRS:
        return b""
    value: bytes = element.value or b""
    return value.split(b"\0", 1)[0] if b"\0" in value else value


def _pregnancy_status(record: RawLevel, key: BaseTag) -> int:
    """The record's first US value of PregnancyStatus (``key``), or 4 (unknown)."""
    element = record.get(key)
    if not isinstance(element, RawDataElement) or element_vr(element) != "US":
        return PREGNANCY_STATUS_UNKNOWN
    return raw_pregnancy_status(element)


def _node(nodes: list[Node], tag: int) -> Node | None:
    for node in nodes:
        if node.tag == tag:
            return node
    return None


def _replaced(nodes: list[Node], new: Node) -> list[Node]:
    return [new if node.tag == new.tag else node for node in nodes]


def _without(nodes: list[Node], tag: int) -> list[Node]:
    return [node for node in nodes if node.tag != tag]


def _is_empty(nodes: list[Node], tag: int) -> bool:
    node = _node(nodes, tag)
    return node is not None and node.empty


def _without_empty_description_or_code(item: list[Node], description: int, code_sequence: int
                                       ) -> list[Node]:
    """``HandleExistentButEmptyDescriptionAndCodeSequenceAttributes`` (a new list if it
    drops one: echoed items are shared by every answer)."""
    code = _node(item, code_sequence)
    if code is not None and code.items is not None:
        items = code.items
        if not items or (len(items) == 1 and _is_empty(items[0], _CODE_VALUE)
                         and _is_empty(items[0], _CODING_SCHEME)):
            return _without(item, code_sequence)
    if _is_empty(item, description):
        return _without(item, description)
    return item


def _without_empty_reference_item(top: list[Node], tag: int) -> list[Node]:
    """``HandleExistentButEmptyReferencedStudyOrPatientSequenceAttributes``."""
    node = _node(top, tag)
    if node is None or node.items is None or len(node.items) != 1:
        return top
    item = node.items[0]
    if _is_empty(item, _SOP_CLASS) and _is_empty(item, _SOP_INSTANCE):
        return _replaced(top, node._replace(items=[]))
    return top


def _affected_by_charset(nodes: list[Node]) -> bool:
    """``DcmItem::isAffectedBySpecificCharacterSet``, nested items included."""
    for node in nodes:
        if node.vr in CHARSET_VRS:
            return True
        if node.items is not None and any(map(_affected_by_charset, node.items)):
            return True
    return False
