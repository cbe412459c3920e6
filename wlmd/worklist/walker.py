"""A quick parser for the common layout of worklist files, for the first start's 100,000 files.

pydicom's reader spends most of a worklist file's parsing on being general (a file object,
a generator per dataset, look-aheads, lazily converted sequences), and the store then watches
every read to refuse truncated files as DCMTK does. This walker covers the layout nearly every
writer produces -- preamble, "DICM", an explicit VR little endian meta header, an explicit or
implicit VR little endian dataset whose tags ascend -- in one pass over the bytes, and gives its
levels as ``wlmd.dicom.rawfile`` reads them: each element raw, as pydicom's reader gives it
before conversion, each sequence a ``RawSequence`` of such levels. The completeness checks, the
sort and index keys and the packed matching keys read raw elements only, so they judge these
levels exactly as they judge the Dataset pydicom builds of the same bytes, without the cost of
building it (a Dataset, a Sequence and a DataElement per level: a third of a first start's
parsing before).

The elements are read by ``wlmd.dicom.rawfile.ElementReader`` in its strict mode. It is strict
on purpose: anything else (no meta header, another transfer syntax, a value that runs past the
end, an unknown VR, a delimiter out of place, tags out of order, a VR switch inside a sequence,
a sequence where the data dictionary expects none, a character set pydicom warns about…) gives
None, and the caller parses the file with pydicom, which decides what the file is worth and
words the refusal. A file is never refused here.
"""

from __future__ import annotations

import functools
import struct

from pydicom.charset import STAND_ALONE_ENCODINGS, python_encoding
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import STANDARD_VR
from pydicom.values import convert_string

from wlmd.dicom.rawfile import (
    DATASET_MAGIC,
    ITEM_END,
    LONG_VRS,
    MAX_SHARED_TAGS,
    PREAMBLE,
    UNDEFINED,
    ElementReader,
    NotRaw,
    RawLevel,
    RawSequence,
    dictionary_sequence,
    meta_header,
    read_items,
    share_tags,
    tag_key,
    transfer_syntax,
)
from wlmd.worklist import completeness, keys
from wlmd.worklist.compact import ROOT_SLOTS, Slots

Body = tuple[int, bool, bool]  # offset of the dataset in the file, implicit VR, little endian

IMPLICIT_BY_SYNTAX = {str(ExplicitVRLittleEndian): False, str(ImplicitVRLittleEndian): True}


def _looked_up_tags() -> list[BaseTag]:
    """The tag objects the checks, keys and packing look elements up with."""
    def slot_tags(slots: Slots) -> list[BaseTag]:
        return [*slots.tags, *(tag for inner in slots.nested.values()
                               for tag in slot_tags(inner))]
    constants = [value for module in (keys, completeness) for value in vars(module).values()]
    tags = [*slot_tags(ROOT_SLOTS), *(tag for value in constants
                                      for tag in (value if isinstance(value, tuple) else (value,))
                                      if isinstance(tag, BaseTag))]
    return tags


# Elements are keyed with these very objects, so that a dict finds them by identity instead of
# calling ``BaseTag.__eq__`` (a Python function) for each of the 50 lookups of one file.
share_tags(_looked_up_tags())


def walk(data: bytes) -> tuple[RawLevel, Body] | None:
    """The dataset's elements as pydicom would read them from ``data`` (meta header dropped),
    and where it starts. None if ``data`` is not of the plain layout described above.

    Explicit VR little endian files, nearly all of them, are read by the quick reader below;
    whatever it does not take (another syntax, anything odd) goes to ``ElementReader``, which
    decides.
    """
    try:
        return _walk_explicit(data)
    except NotRaw:
        pass
    try:
        return _walk(data)
    except NotRaw:
        return None


def _walk(data: bytes) -> tuple[RawLevel, Body]:
    meta, offset = meta_header(data)
    implicit = IMPLICIT_BY_SYNTAX.get(transfer_syntax(meta) or "")
    if implicit is None:
        raise NotRaw("neither implicit nor explicit VR little endian")
    elements, end = _LevelReader(data, implicit, strict=True).level(offset, len(data), top=True)
    if end != len(data):
        raise NotRaw("bytes after the last element")
    _check_charset(elements)
    return elements, (offset, implicit, True)


# The quick reader: explicit VR little endian only, strict, every level as ``_walk`` gives it.
# It is ``ElementReader.level`` and ``items`` unrolled for that one case (a third of their
# cost); anything it does not read exactly as they do raises NotRaw, and ``walk`` asks them.
_ELEMENT = struct.Struct("<HH2sH")  # tag, VR, 2-byte length
_TAG_LENGTH = struct.Struct("<HHL")  # tag, 4-byte length (items, delimiters)
_U32 = struct.Struct("<L")
_VRS = {str(vr).encode(): (str(vr), str(vr).encode() in LONG_VRS) for vr in STANDARD_VR}
_EXPLICIT_SYNTAX = str(ExplicitVRLittleEndian).encode()
_LAST_META_TAG = 0x0002FFFF
_raw_element = functools.partial(tuple.__new__, RawDataElement)  # without the Python __new__
_KEYS: dict[int, BaseTag] = {}  # ``tag_key``'s objects, found without a call
_TAG = struct.Struct("<HH")
_NO_LENGTH = bytes(4)  # an item delimiter's VR bytes and length
# An element header's tag and VR bytes -> its tag, ``tag_key``'s object, VR, 4-byte length:
# one lookup instead of an unpack, the tag's arithmetic and two lookups per element.
_Head = tuple[int, BaseTag, str, bool]
_HEADS: dict[bytes, _Head] = {}


def _walk_explicit(data: bytes) -> tuple[RawLevel, Body]:
    offset = _explicit_meta_end(data)
    elements, _ = _explicit_level(data, offset, None, 0)
    _check_charset(elements)
    return elements, (offset, False, True)


def _explicit_meta_end(data: bytes) -> int:
    """Where the dataset starts, if the meta header is a plain one naming explicit VR little
    endian (nothing in it is kept: only the transfer syntax matters)."""
    if data[PREAMBLE:PREAMBLE + 4] != DATASET_MAGIC:
        raise NotRaw("no Part 10 preamble")
    at, size, previous, syntax = PREAMBLE + 4, len(data), -1, None
    while at + 8 <= size:
        group, number, code, length = _ELEMENT.unpack_from(data, at)
        tag = group << 16 | number
        if group != 2:
            if syntax is None or syntax.rstrip(b"\0 ") != _EXPLICIT_SYNTAX:
                raise NotRaw("not explicit VR little endian")
            return at
        known = _VRS.get(code)
        if tag <= previous or known is None or known[0] == "SQ":
            raise NotRaw("a meta header the quick reader leaves to the general one")
        previous = tag
        if known[1]:
            if at + 12 > size:
                raise NotRaw("a meta element runs past the end")
            length = _U32.unpack_from(data, at + 8)[0]
            at += 12
        else:
            at += 8
        if length == UNDEFINED or at + length > size:
            raise NotRaw("a meta value runs past the end")
        if tag == 0x00020010:
            syntax = data[at:at + length]
        at += length
    raise NotRaw("no dataset after the meta header, or a short element")


def explicit_dataset(data: bytes, offset: int) -> RawLevel:
    """The dataset of an explicit VR little endian file from ``offset`` (``Body``) to the end,
    by the quick reader: the levels ``ElementReader`` gives, a third faster; NotRaw where the
    quick reader leaves the bytes to the general one."""
    return _explicit_level(data, offset, None, 0)[0]


def _explicit_level(data: bytes, at: int, end: int | None, depth: int
                    ) -> tuple[RawLevel, int]:
    """One level from ``at`` to ``end`` (None: to its item delimiter, or for the dataset --
    ``depth`` 0 -- to the end of the data), and where it stops."""
    top = depth == 0
    bound = len(data) if end is None else end
    elements = RawLevel()
    previous = _LAST_META_TAG if top else -1
    heads = _HEADS
    while at < bound:
        if at + 8 > bound:
            raise NotRaw("an element runs past its level")
        head = data[at:at + 6]
        tag, key, vr, long = heads.get(head) or _head(head)
        if tag <= previous or tag >= 0xFFFE0000:  # no delimiter is below the previous tag
            if tag == ITEM_END and not top and end is None and data[at + 4:at + 8] == _NO_LENGTH:
                return elements, at + 8
            raise NotRaw("tags out of order, or a delimiter the quick reader leaves to the "
                         "general one")
        previous = tag
        if long:  # a 4-byte length: SQ, or a value that can have an undefined length
            if at + 12 > bound:
                raise NotRaw("an element header runs past its level")
            length = _U32.unpack_from(data, at + 8)[0]
            value_at = at + 12
            if vr == "SQ":
                at = _explicit_sequence(data, at, value_at, length, bound, depth, tag,
                                        elements)
                continue
            if length == UNDEFINED:
                raise NotRaw("an undefined length outside a sequence")
        else:
            value_at = at + 8
            length = data[at + 6] | data[at + 7] << 8
        at = value_at + length
        if at > bound:
            raise NotRaw("a value runs past the end")
        elements[key] = _raw_element((key, vr, length, data[value_at:at] if length
                                      else empty_value_for_VR(vr, raw=True), value_at,
                                      False, True))
    if not top:
        if end is None:
            raise NotRaw("no item delimiter")
    elif at != len(data):
        raise NotRaw("bytes after the last element")
    return elements, at


def _head(head: bytes) -> _Head:
    """What the 6 bytes of an element's tag and VR say, kept for the next file while there is
    room; NotRaw for an unknown VR (a delimiter has none: its tag is all that is read)."""
    group, number = _TAG.unpack_from(head)
    tag = group << 16 | number
    if tag >= 0xFFFE0000:
        return tag, _key(tag), "", False
    known = _VRS.get(head[4:])
    if known is None:
        raise NotRaw("unknown VR")
    found = (tag, _key(tag), *known)
    if len(_HEADS) < MAX_SHARED_TAGS:
        _HEADS[head] = found
    return found


def _explicit_sequence(data: bytes, at: int, value_at: int, length: int, bound: int,
                       depth: int, tag: int, elements: RawLevel) -> int:
    """Read the sequence ``tag`` whose header is at ``at`` into ``elements``; where it ends."""
    if not dictionary_sequence(tag):
        raise NotRaw("a sequence where the data dictionary has none")
    undefined = length == UNDEFINED
    items, after = _explicit_items(data, value_at, None if undefined else value_at + length,
                                   bound, depth + 1)
    for item in items:
        _check_charset(item)
    key = _KEYS.get(tag) or _key(tag)
    elements[key] = RawSequence("SQ", items, at, value_at, after, undefined)
    return after


def _explicit_items(data: bytes, at: int, end: int | None, bound: int, depth: int
                    ) -> tuple[list[RawLevel], int]:
    """The items of a sequence from ``at`` to ``end`` (None: to its delimiter) within
    ``bound``, each read by the quick reader, and where the sequence ends."""
    return read_items(data, at, end, bound, depth, _TAG_LENGTH, True,
                      lambda item_at, item_end: _explicit_level(data, item_at, item_end, depth))


def _key(tag: int) -> BaseTag:
    """``tag_key``'s object for ``tag``, kept for the next file while there is room."""
    key = tag_key(tag)
    if len(_KEYS) < MAX_SHARED_TAGS:
        _KEYS[tag] = key
    return key


class _LevelReader(ElementReader):
    """Keeps the raw sequences of tags that the data dictionary knows as sequences only.

    pydicom converts a sequence found under another tag differently (its value is then read
    as the tag's own VR would be), so those files are left to it; so are items whose
    character set pydicom warns about.
    """

    def sequence_element(self, tag: BaseTag, items: list[RawLevel], start: int,
                         value_tell: int, end: int, undefined: bool, level: RawLevel
                         ) -> RawSequence:
        if not dictionary_sequence(tag):
            raise NotRaw("a sequence where the data dictionary has none")
        for item in items:
            _check_charset(item)
        return RawSequence("SQ", items, start, value_tell, end, undefined)


def _check_charset(level: RawLevel) -> None:
    """NotRaw if ``level``'s (0008,0005) holds terms pydicom does not know as spelled.

    Misspelt, unknown or conflicting terms make pydicom warn when it decodes text: such
    files are left to pydicom.
    """
    charset = level.get(keys.SPECIFIC_CHARACTER_SET)
    if charset is None:
        return
    if not isinstance(charset, RawDataElement):
        raise NotRaw("a sequence as the character set")
    terms = convert_string(charset.value or b"", True)
    listed = [terms] if isinstance(terms, str) else list(terms)
    if any(term not in python_encoding for term in listed) or (
            len(listed) > 1 and any(term in STAND_ALONE_ENCODINGS for term in listed)):
        raise NotRaw("a character set pydicom warns about")
