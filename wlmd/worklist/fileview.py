"""A worklist file's elements read straight from its bytes, so an answer needs no pydicom decode.

An answer copies raw values of its record (``response.py`` reads them with ``value_of`` and
walks sequence items), so a full pydicom decode (a Dataset per item, a generator per level)
is more than it needs: it was half the time of a cold query with many answers. ``raw_elements``
indexes every level once: each element as the ``RawDataElement`` pydicom's ``read_dataset``
gives for it (VR None in implicit VR, the value's bytes), each sequence as its list of items.
Whatever pydicom might read differently (an unknown VR, an item or dataset switching between
implicit and explicit VR, an undefined length outside a sequence, a length past the end) is
left to pydicom: the caller decodes the file (``record.dataset``) as before. The walk is
``wlmd.dicom.rawfile.ElementReader``'s, which the first-start walker shares; an explicit VR
little endian file, nearly every one, is read by the walker's quick reader first
(``walker.explicit_dataset``: a third faster, and a cold query with 1,560 answers walks 1,560
files).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from wlmd.dicom.rawfile import ElementReader, NotRaw, RawLevel, Wanted
from wlmd.worklist.compact import SequenceElement
from wlmd.worklist.completeness import REFERENCED_SEQUENCES
from wlmd.worklist.walker import explicit_dataset

if TYPE_CHECKING:
    from wlmd.worklist.records import WorklistRecord


def raw_elements(record: WorklistRecord, wanted: Wanted | None = None) -> RawLevel | None:
    """The elements of ``record`` read from its bytes; None where pydicom must decode it.

    ``wanted``: at least those elements (what an answer plan reads). The quick reader reads
    every element; the general one walks over the others, or jumps over a sequence of
    defined length (``ElementReader.level``).
    """
    if record.body is None:
        return None
    offset, implicit, little = record.body
    data = record.data
    elements: RawLevel | None = None
    if not implicit and little:
        with contextlib.suppress(NotRaw):  # else the general reader decides
            elements = explicit_dataset(data, offset)
    if elements is None:
        try:
            elements = ElementReader(data, implicit, little).level(offset, None, top=True,
                                                                   keep=wanted)[0]
        except NotRaw:
            return None
    if record.add_references:  # as records.add_missing_references does
        for tag in REFERENCED_SEQUENCES:
            elements.setdefault(tag, SequenceElement("SQ", []))
    return elements
