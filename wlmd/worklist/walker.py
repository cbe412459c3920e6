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

from pydicom.charset import STAND_ALONE_ENCODINGS, python_encoding
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.values import convert_string

from wlmd.dicom.rawfile import (
    ElementReader,
    NotRaw,
    RawLevel,
    RawSequence,
    dictionary_sequence,
    meta_header,
    share_tags,
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
    and where it starts. None if ``data`` is not of the plain layout described above."""
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
