"""What MPPS reads and changes in a worklist entry file (and reads in its own instance files),
done on the file's bytes.

Linking an MPPS to its entry needs four values and a status mark changes one element in the
Scheduled Procedure Step Sequence; parsing and re-encoding the whole entry with pydicom costs
milliseconds per step, the raw walk (``wlmd.dicom.rawfile``) tens of microseconds. Every other
byte of the file stays as it was. Files in another layout, or with values that are not ASCII
(whose meaning depends on the character set), raise ``NotRaw`` and the caller uses pydicom.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement

from wlmd.dicom.rawfile import (
    ElementReader,
    NotRaw,
    RawLevel,
    RawSequence,
    body_start,
    encode_element,
    encode_sequence,
    span,
    text,
)

STUDY_INSTANCE_UID = 0x0020000D
ACCESSION_NUMBER = 0x00080050
REQUESTED_PROCEDURE_ID = 0x00401001
SPS_SEQUENCE = 0x00400100
SPS_ID = 0x00400009
SPS_STATUS = 0x00400020
STEP_SEQUENCE = 0x00400270  # Scheduled Step Attributes Sequence of an MPPS instance

__all__ = ["EntryLinkValues", "NotRaw", "instance_link_values", "link_values",
           "step_link_values", "with_sps_status"]


@dataclass(frozen=True)
class EntryLinkValues:
    """The values an MPPS link is checked against (``LinkKey.matches_values``)."""

    study_uid: str
    accession: str
    requested_procedure_id: str
    sps_ids: tuple[str, ...]


def link_values(data: bytes) -> EntryLinkValues:
    """The entry's Study Instance UID, Accession Number, Requested Procedure ID and SPS IDs."""
    top = _top_level(data)
    sequence = top.get(SPS_SEQUENCE)
    steps = sequence.value if isinstance(sequence, RawSequence) else []
    return EntryLinkValues(_text(top, STUDY_INSTANCE_UID), _text(top, ACCESSION_NUMBER),
                           _text(top, REQUESTED_PROCEDURE_ID),
                           tuple(_text(step, SPS_ID) for step in steps))


def instance_link_values(data: bytes) -> list[tuple[str, str, str, str]]:
    """Study Instance UID, Accession Number, Requested Procedure ID and SPS ID of each item of
    an MPPS instance's Scheduled Step Attributes Sequence, as ``rules.text`` reads them;
    NotRaw where pydicom might read the values otherwise (multiple values, escapes)."""
    return step_link_values(
        ElementReader(data, implicit=False).level(body_start(data), len(data), top=True)[0])


def step_link_values(top: RawLevel) -> list[tuple[str, str, str, str]]:
    """``instance_link_values`` of an instance's top level as read already."""
    sequence = top.get(STEP_SEQUENCE)
    if sequence is None:
        return []
    if not isinstance(sequence, RawSequence):
        raise NotRaw("not read as a sequence")
    return [(_single_text(item, STUDY_INSTANCE_UID), _single_text(item, ACCESSION_NUMBER),
             _single_text(item, REQUESTED_PROCEDURE_ID), _single_text(item, SPS_ID))
            for item in sequence.value]


def _single_text(level: RawLevel, tag: int) -> str:
    value = _text(level, tag)
    if "\\" in value or "\x1b" in value:
        raise NotRaw("a value pydicom reads as several, or with escapes")
    return value


def with_sps_status(data: bytes, status: str, sps_ids: set[str]) -> bytes:
    """The file with Scheduled Procedure Step Status (0040,0020) set in the linked steps (all
    steps when ``sps_ids`` is empty); unchanged when the entry has no step sequence."""
    top = _top_level(data)
    sequence = top.get(SPS_SEQUENCE)
    if not isinstance(sequence, RawSequence):
        return data
    encoded_status = status.encode("ascii")
    encoded_status += b" " * (len(encoded_status) % 2)
    new_status = encode_element(SPS_STATUS, b"CS", encoded_status)
    contents = []
    for step in sequence.value:
        _refuse_group_lengths(step)
        tags, elements = list(step), list(step.values())
        start, end = _extent(elements)
        if sps_ids and _text(step, SPS_ID) not in sps_ids:
            contents.append(data[start:end])
            continue
        # Tags ascend (strict reading) and elements are contiguous: cut the status in place.
        place = bisect_left(tags, SPS_STATUS)
        if place < len(tags):
            cut, after = span(elements[place])
            rest = after if tags[place] == SPS_STATUS else cut
        else:
            cut = rest = end
        contents.append(data[start:cut] + new_status + data[rest:end])
    return (data[:sequence.start] + encode_sequence(SPS_SEQUENCE, contents)
            + data[sequence.end:])


@functools.lru_cache(maxsize=4)
def _top_level(data: bytes) -> RawLevel:
    """The entry's dataset, strictly read (tags ascend, so each appears once); kept for the
    few latest entries, since a status mark changes the entry its link was just read from.
    Shared: read only."""
    top = ElementReader(data, implicit=False, strict=True).level(body_start(data), len(data),
                                                                 top=True)[0]
    _refuse_group_lengths(top)
    return top


def _refuse_group_lengths(level: RawLevel) -> None:
    if any(tag & 0xFFFF == 0 for tag in level):
        raise NotRaw("a group length would no longer be true")


def _extent(elements: list[RawDataElement | RawSequence]) -> tuple[int, int]:
    """Where the elements of one item lie (empty at 0 if it has none)."""
    if not elements:
        return 0, 0
    return span(elements[0])[0], span(elements[-1])[1]


def _text(level: RawLevel, tag: int) -> str:
    element = level.get(tag)
    return "" if element is None else text(element)
