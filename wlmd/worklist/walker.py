"""A quick parser for the common layout of worklist files, for the first start's 100,000 files.

pydicom's reader spends most of a worklist file's parsing on being general (a file object,
a generator per dataset, look-aheads, lazily converted sequences), and the store then watches
every read to refuse truncated files as DCMTK does. This walker covers the layout nearly every
writer produces -- preamble, "DICM", an explicit VR little endian meta header, an explicit or
implicit VR little endian dataset whose tags ascend -- in one pass over the bytes, and builds
the same datasets pydicom builds (raw elements; sequences as pydicom converts them), so the
completeness checks, the sort and index keys and the packed matching keys are computed by the
very same code from the very same values.

The elements are read by ``wlmd.dicom.rawfile.ElementReader`` in its strict mode; this module
only turns the levels it reads into Datasets. It is strict on purpose: anything else (no meta
header, another transfer syntax, a value that runs past the end, an unknown VR, a delimiter out
of place, tags out of order, a VR switch inside a sequence…) gives None, and the caller parses
the file with pydicom, which decides what the file is worth and words the refusal. A file is
never refused here.
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset, Sequence
from pydicom.charset import (
    STAND_ALONE_ENCODINGS,
    convert_encodings,
    default_encoding,
    python_encoding,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.values import convert_string

from wlmd.dicom.rawfile import (
    ElementReader,
    NotRaw,
    RawLevel,
    meta_header,
    shared_tag,
    transfer_syntax,
)

Body = tuple[int, bool, bool]  # offset of the dataset in the file, implicit VR, little endian

SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
IMPLICIT_BY_SYNTAX = {str(ExplicitVRLittleEndian): False, str(ImplicitVRLittleEndian): True}
# What Dataset() sets up, copied into each new dataset (Dataset.__init__ costs ten times more).
_FRESH_DATASET = vars(Dataset())
_FRESH_MUTABLE = tuple(key for key, value in _FRESH_DATASET.items()
                       if isinstance(value, dict | list) and key != "_dict")  # copied for each


class WalkedDataset(Dataset):
    """A Dataset the walker built, whose elements are found by tag number at dict speed.

    The checks, keys and packing of a first start look up some 50 elements per file;
    pydicom's ``get_item`` makes each key a new Tag, which the dict then compares with
    ``BaseTag.__eq__``, a Python call: about a sixth of a first start's parsing. The reader
    keys every element with its shared BaseTag object, found here by number, so the dict
    finds it by identity. The element is the very object pydicom's ``get_item`` gives
    (every raw value was read: none is deferred); any other key is left to pydicom.
    """

    def get_item(self, key: Any, *, keep_deferred: bool = False) -> Any:
        if type(key) is int or type(key) is BaseTag:
            element = self._dict.get(shared_tag(key) or BaseTag(key))
            if not isinstance(element, RawDataElement) or element.value is not None:
                return element
        return super().get_item(key, keep_deferred=keep_deferred)


def walk(data: bytes) -> tuple[Dataset, Body] | None:
    """The dataset pydicom would read from ``data`` (meta header dropped), and where it starts.

    None if ``data`` is not of the plain layout described above.
    """
    try:
        return _walk(data)
    except NotRaw:
        return None


def _walk(data: bytes) -> tuple[Dataset, Body]:
    meta, offset = meta_header(data)
    implicit = IMPLICIT_BY_SYNTAX.get(transfer_syntax(meta) or "")
    if implicit is None:
        raise NotRaw("neither implicit nor explicit VR little endian")
    reader = _DatasetReader(data, implicit, strict=True)
    elements, end = reader.level(offset, len(data), top=True)
    if end != len(data):
        raise NotRaw("bytes after the last element")
    return reader.dataset(elements, default_encoding), (offset, implicit, True)


class _DatasetReader(ElementReader):
    """Reads sequences into the Datasets pydicom's reader builds (little endian always)."""

    def sequence_element(self, tag: BaseTag, items: list[RawLevel], start: int,
                         value_tell: int, end: int, undefined: bool, level: RawLevel
                         ) -> DataElement:
        charset = level.get(SPECIFIC_CHARACTER_SET)
        encoding = default_encoding if charset is None else _encodings(charset.value)
        sequence = Sequence([self.dataset(item, encoding) for item in items])
        sequence.is_undefined_length = undefined
        return DataElement(tag, "SQ", sequence, value_tell, undefined, True)

    def dataset(self, elements: RawLevel, parent_encoding: str | list[str]
                ) -> Dataset:
        """A Dataset of ``elements`` set up as pydicom's reader sets it up.

        Its state is set as ``Dataset()`` and ``set_original_encoding`` set it, without
        their calls: four datasets per file, a tenth of a first start's parsing before.
        """
        charset = elements.get(SPECIFIC_CHARACTER_SET)
        state = _FRESH_DATASET.copy()
        for key in _FRESH_MUTABLE:
            state[key] = state[key].copy()
        state["_dict"] = elements
        state["_parent_encoding"] = parent_encoding
        state["_read_implicit"], state["_read_little"] = self.implicit, True
        state["_read_charset"] = parent_encoding if charset is None \
            else _encodings(charset.value)
        dataset = WalkedDataset.__new__(WalkedDataset)
        vars(dataset).update(state)
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
        raise NotRaw("a character set pydicom warns about")
    return convert_encodings(terms)
