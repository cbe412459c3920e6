"""The raw elements of an encoded dataset, walked once for every hot path that reads them.

pydicom's reader is general (a file object, a generator per dataset, look-aheads, lazily
converted sequences); hot paths need only the elements as it gives them raw. The one
``ElementReader`` walks element headers here -- tags, explicit or implicit VR, lengths, sequences
and items of defined or undefined length, their delimiters -- and whatever pydicom might read
otherwise raises ``NotRaw``, so the caller lets pydicom decide. Its users: the first-start
parser (``worklist.walker``, strict), answers read from a record's bytes
(``worklist.fileview``), MPPS link values and status marks on an entry file's bytes
(``mpps.entryfile``, with ``span``), and stored MPPS instances (``body_start``). The writing side
(``encode_element``, ``part10``) builds wlmd's explicit VR little endian Part 10 files.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from wlmd.dicom.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

PREAMBLE = 128
DATASET_MAGIC = b"DICM"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
TRANSFER_SYNTAX_TAG = 0x00020010
LONG_VRS = frozenset(str(vr).encode() for vr in EXPLICIT_VR_LENGTH_32)  # 4-byte lengths
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 16  # nested sequences read; deeper files are left to pydicom
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LITTLE_TAG_LENGTH, _BIG_TAG_LENGTH = struct.Struct("<HHL"), struct.Struct(">HHL")
_VR_TEXT = {str(vr).encode(): str(vr) for vr in STANDARD_VR}  # as a file spells them
_LONG_VR_TEXT = frozenset(vr.decode() for vr in LONG_VRS)
_TAGS: dict[int, BaseTag] = {}  # one BaseTag per tag seen: they recur in every file
MAX_SHARED_TAGS = 4096  # far more tags than worklist files use; odd files cannot grow it more
# RawDataElement(...) without the namedtuple's Python-level __new__ (an element per call)
_raw_element = functools.partial(tuple.__new__, RawDataElement)
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xL")
Wanted = Mapping[int, "Wanted"]  # tags to keep, each with what to keep in its items
_NOTHING: Wanted = {}  # a sequence walked only to find where it ends


class NotRaw(ValueError):
    """The bytes are not in a layout this module reads as pydicom reads it: use pydicom."""


class RawLevel(dict[int, Any]):
    """One level of an encoded dataset (the dataset itself or one sequence item), read as a
    Dataset is read: each element by tag as pydicom's reader gives it before conversion (a
    ``RawDataElement``), each sequence as ``ElementReader.sequence_element`` makes it."""

    get_item = dict.get


class RawSequence(NamedTuple):
    """A sequence element as read: its items, and where it lies in the data."""

    VR: str
    value: list[RawLevel]
    start: int  # the element's header
    value_tell: int  # its first item
    end: int  # after its last item (or its delimiter)
    is_undefined_length: bool


class ElementReader:
    """Walks the element headers of one encoded dataset as pydicom's filereader does: tags,
    explicit or implicit VR, lengths, sequences and items of defined or undefined length, and
    their delimiters. Where pydicom might read the bytes otherwise (an unknown VR, a switch
    between implicit and explicit VR, an undefined length outside a sequence, a value or item
    running past its end) it raises NotRaw, so the caller lets pydicom decide.

    ``strict`` also refuses what pydicom reads but only with warnings or look-aheads: tags out
    of order, a group 0002 or 0xFFFE element in the dataset, a delimiter out of place, bytes
    left over after the last element. Subclasses may turn sequences into other objects
    (``sequence_element``).
    """

    def __init__(self, data: bytes, implicit: bool, little: bool = True, *,
                 strict: bool = False) -> None:
        self.data, self.implicit, self.little, self.strict = data, implicit, little, strict
        self.tag_length = _LITTLE_TAG_LENGTH if little else _BIG_TAG_LENGTH

    def level(self, at: int, end: int | None, *, top: bool = False, meta: bool = False,
              depth: int = 0, keep: Wanted | None = None) -> tuple[RawLevel, int]:
        """The elements from ``at`` up to ``end`` and where reading stopped. ``end`` None: up to
        the item delimiter, or for the dataset (``top``) to the end of the data. ``meta``: only
        group 0002, stopping before the first other group. ``keep``: only the elements it
        names are kept. Every other one is still walked, so NotRaw comes where it would, but
        for a sequence of defined length, which is jumped over: pydicom reads one as bytes
        and decodes its items only when asked for them, so what lies inside cannot change
        how any element that ``keep`` names is read."""
        data, implicit, little, strict = self.data, self.implicit, self.little, self.strict
        tag_length = self.tag_length
        bound = len(data) if end is None else end
        elements = RawLevel()
        if (top or not implicit) and at + 8 <= bound:
            group, number, _ = tag_length.unpack_from(data, at)  # the first element
            if group << 16 | number != ITEM_END and (group == 2 or not meta):
                looks_explicit = 0x40 < data[at + 4] < 0x5B and 0x40 < data[at + 5] < 0x5B
                if looks_explicit == implicit:
                    raise NotRaw("pydicom switches between implicit and explicit VR here")
        in_dataset = top and not meta
        previous = -1
        while at < bound:
            if at + 8 > bound:
                if top and end is None and not strict:
                    return elements, at  # pydicom stops at fewer than 8 bytes
                raise NotRaw("an element runs past its level")
            group, number, length = tag_length.unpack_from(data, at)
            tag = group << 16 | number
            if meta and group != 2:
                return elements, at
            if tag == ITEM_END:
                if strict and (end is not None or length):
                    raise NotRaw("an item delimiter out of place")
                return elements, at + 8
            if strict:
                if tag <= previous or (in_dataset and group <= 2) or group == 0xFFFE:
                    raise NotRaw("tags out of order, or a group pydicom reads otherwise")
                previous = tag
            vr: str | None
            if implicit:
                vr, value_at = None, at + 8
            else:
                code = data[at + 4:at + 6]
                if code in LONG_VRS:
                    if at + 12 > bound:
                        raise NotRaw("an element header runs past its level")
                    length = tag_length.unpack_from(data, at + 4)[2]
                    value_at = at + 12
                elif code in _VR_TEXT:
                    length = length >> 16 if little else length & 0xFFFF
                    value_at = at + 8
                else:
                    raise NotRaw("unknown VR")
                vr = _VR_TEXT[code]
            if vr == "SQ" or (vr is None and dictionary_sequence(tag)):
                inner = None if keep is None else keep.get(tag, _NOTHING)
                if inner is _NOTHING and length != UNDEFINED:  # as pydicom, not looked into
                    if value_at + length > bound:
                        raise NotRaw("a sequence runs past its level")
                    at = value_at + length
                    continue
                items, after = self.items(value_at, None if length == UNDEFINED
                                          else value_at + length, bound, depth + 1, inner)
                if keep is None or tag in keep:
                    key = _TAGS.get(tag) or _tag(tag)
                    elements[key] = self.sequence_element(key, items, at, value_at, after,
                                                          length == UNDEFINED, elements)
                at = after
                continue
            if length == UNDEFINED or value_at + length > bound:
                raise NotRaw("an undefined length outside a sequence, or past the end")
            at = value_at + length
            if keep is not None and tag not in keep:
                continue
            key = _TAGS.get(tag) or _tag(tag)
            elements[key] = _raw_element((key, vr, length,
                                          data[value_at:at] if length else _empty(vr),
                                          value_at, implicit, little))
        if end is None and not top:
            raise NotRaw("no item delimiter")
        return elements, at

    def items(self, at: int, end: int | None, bound: int, depth: int,
              keep: Wanted | None = None) -> tuple[list[RawLevel], int]:
        """The items of a sequence from ``at`` to ``end`` (None: to its delimiter), within
        ``bound``, and where the sequence ends; ``keep`` as for ``level``."""
        return read_items(self.data, at, end, bound, depth, self.tag_length, self.strict,
                          lambda item_at, item_end: self.level(item_at, item_end,
                                                               depth=depth, keep=keep))

    def sequence_element(self, tag: BaseTag, items: list[RawLevel], start: int, value_tell: int,
                         end: int, undefined: bool, level: RawLevel) -> Any:
        """What a level holds for a sequence read in ``level`` (read so far)."""
        return RawSequence("SQ", items, start, value_tell, end, undefined)


def read_items(data: bytes, at: int, end: int | None, bound: int, depth: int,
               tag_length: struct.Struct, strict: bool,
               read_level: Callable[[int, int | None], tuple[RawLevel, int]]
               ) -> tuple[list[RawLevel], int]:
    """The items of a sequence from ``at`` to ``end`` (None: to its delimiter) within
    ``bound``, each read by ``read_level(start, end)`` (end None: to its delimiter), and where
    the sequence ends: the one item walk of every raw reader (``ElementReader`` and the
    first start's quick reader)."""
    if depth > MAX_DEPTH:
        raise NotRaw("sequences nested too deep")
    if end is not None and end > bound:
        raise NotRaw("a sequence runs past its level")
    stop = bound if end is None else end
    items: list[RawLevel] = []
    while end is None or at < end:
        if at + 8 > stop:
            raise NotRaw("an item runs past its sequence")
        group, number, length = tag_length.unpack_from(data, at)
        tag = group << 16 | number
        at += 8
        if tag == SEQUENCE_END:
            if strict and (end is not None or length):
                raise NotRaw("a sequence delimiter out of place")
            break
        if tag != ITEM:
            raise NotRaw("not an item")
        if length != UNDEFINED and at + length > stop:
            raise NotRaw("an item runs past its sequence")
        item, at = read_level(at, None if length == UNDEFINED else at + length)
        items.append(item)
    if end is not None and at != end:
        raise NotRaw("the sequence's items overrun it")
    return items, at


def _tag(value: int) -> BaseTag:
    """One BaseTag per tag seen: they recur in every file."""
    tag = _TAGS.get(value)
    if tag is None:
        tag = BaseTag(value)
        if len(_TAGS) < MAX_SHARED_TAGS:
            _TAGS[value] = tag
    return tag


def tag_key(value: int) -> BaseTag:
    """The BaseTag object the reader keys elements of tag ``value`` with (see ``share_tags``),
    made now if it has none yet."""
    return _tag(int(value))  # a plain int key: _TAGS.get(int) would call BaseTag.__eq__


def share_tags(tags: Iterable[BaseTag]) -> None:
    """Key the elements of these tags with these very objects from now on.

    Callers pass the constants they look elements up with: a dict then finds each by
    identity, without calling ``BaseTag.__eq__`` (a Python function, which every other
    lookup of a BaseTag key calls, ints included).
    """
    for tag in tags:
        _TAGS[int(tag)] = tag


def _empty(vr: str | None) -> bytes | None:
    """The value pydicom gives a raw element of length 0."""
    return cast(bytes | None, empty_value_for_VR(vr, raw=True))


@functools.lru_cache(maxsize=1024)
def dictionary_sequence(tag: int) -> bool:
    """True if the data dictionary gives ``tag`` the VR SQ (as pydicom reads implicit VR)."""
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


def meta_header(data: bytes) -> tuple[RawLevel, int]:
    """The file meta elements of a Part 10 file and where its dataset starts (strictly read)."""
    if data[PREAMBLE:PREAMBLE + 4] != DATASET_MAGIC:
        raise NotRaw("no Part 10 preamble")
    return ElementReader(data, implicit=False, strict=True).level(
        PREAMBLE + 4, len(data), top=True, meta=True)


def transfer_syntax(meta: RawLevel) -> str | None:
    """The Transfer Syntax UID of ``meta`` without padding; None if it has none."""
    syntax = meta.get(TRANSFER_SYNTAX_TAG)
    if not isinstance(syntax, RawDataElement) or not syntax.value:
        return None
    return syntax.value.rstrip(b"\0 ").decode("latin-1")


def body_start(data: bytes) -> int:
    """Offset of the data set after the meta header; NotRaw unless explicit VR little endian."""
    meta, start = meta_header(data)
    if transfer_syntax(meta) != EXPLICIT_LITTLE:
        raise NotRaw("not explicit VR little endian")
    return start


def span(element: RawDataElement | RawSequence) -> tuple[int, int]:
    """Where an element ``ElementReader`` read lies in its data, header included."""
    if isinstance(element, RawSequence):
        return element.start, element.end
    header = 8 if element.is_implicit_VR or element.VR not in _LONG_VR_TEXT else 12
    return element.value_tell - header, element.value_tell + element.length


def text(element: RawDataElement | RawSequence) -> str:
    """An ASCII value without padding; NotRaw for other bytes (their character set matters)."""
    if not isinstance(element, RawDataElement):
        raise NotRaw("a sequence, not a value")
    value = (element.value or b"").strip(b" \0")
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
    body = b"".join(_LITTLE_TAG_LENGTH.pack(0xFFFE, 0xE000, len(content)) + content
                    for content in item_contents)
    return _LONG.pack(tag >> 16, tag & 0xFFFF, b"SQ", len(body)) + body


def part10(body: bytes, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """An explicit VR little endian data set as a Part 10 file with wlmd's meta header."""
    meta = b"".join((
        encode_element(0x00020001, b"OB", b"\0\1"),
        encode_element(0x00020002, b"UI", uid_value(sop_class_uid)),
        encode_element(0x00020003, b"UI", uid_value(sop_instance_uid)),
        encode_element(0x00020010, b"UI", uid_value(EXPLICIT_LITTLE)),
        encode_element(0x00020012, b"UI", uid_value(IMPLEMENTATION_CLASS_UID)),
        encode_element(0x00020013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
    ))
    group_length = encode_element(0x00020000, b"UL", struct.pack("<L", len(meta)))
    return bytes(PREAMBLE) + DATASET_MAGIC + group_length + meta + body


def uid_value(value: str) -> bytes:
    """A UI value as encoded: ASCII, padded with NUL to an even length."""
    return _padded(value, b"\0")


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad * (len(raw) % 2)
