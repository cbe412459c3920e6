"""What MPPS reads and changes in a worklist entry file, done on the file's bytes.

Linking an MPPS to its entry needs four values and a status mark changes one element in the
Scheduled Procedure Step Sequence; parsing and re-encoding the whole entry with pydicom costs
milliseconds per step, the raw walk (``wlmd.dicom.rawfile``) tens of microseconds. Every other
byte of the file stays as it was. Files in another layout, or with values that are not ASCII
(whose meaning depends on the character set), raise ``NotRaw`` and the caller uses pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass

from wlmd.dicom.rawfile import (
    NotRaw,
    RawElement,
    body_start,
    elements,
    encode_element,
    encode_sequence,
    items,
    text,
)

STUDY_INSTANCE_UID = 0x0020000D
ACCESSION_NUMBER = 0x00080050
REQUESTED_PROCEDURE_ID = 0x00401001
SPS_SEQUENCE = 0x00400100
SPS_ID = 0x00400009
SPS_STATUS = 0x00400020

__all__ = ["EntryLinkValues", "NotRaw", "link_values", "with_sps_status"]


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
    sps_ids: list[str] = []
    sequence = top.get(SPS_SEQUENCE)
    if sequence is not None and sequence.vr == b"SQ":
        for start, end in items(data, sequence):
            step = {e.tag: e for e in elements(data, start, end)}
            sps_ids.append(_text(data, step, SPS_ID))
    return EntryLinkValues(_text(data, top, STUDY_INSTANCE_UID), _text(data, top, ACCESSION_NUMBER),
                           _text(data, top, REQUESTED_PROCEDURE_ID), tuple(sps_ids))


def with_sps_status(data: bytes, status: str, sps_ids: set[str]) -> bytes:
    """The file with Scheduled Procedure Step Status (0040,0020) set in the linked steps (all
    steps when ``sps_ids`` is empty); unchanged when the entry has no step sequence."""
    top = _top_level(data)
    sequence = top.get(SPS_SEQUENCE)
    if sequence is None or sequence.vr != b"SQ":
        return data
    encoded_status = status.encode("ascii")
    encoded_status += b" " * (len(encoded_status) % 2)
    contents = []
    for start, end in items(data, sequence):
        step = elements(data, start, end)
        by_tag = {e.tag: e for e in step}
        if any(tag & 0xFFFF == 0 for tag in by_tag):
            raise NotRaw("a group length would no longer be true")
        if sps_ids and _text(data, by_tag, SPS_ID) not in sps_ids:
            contents.append(data[start:end])
            continue
        new = encode_element(SPS_STATUS, b"CS", encoded_status)
        parts = [data[e.start:e.end] for e in step if e.tag < SPS_STATUS]
        parts.append(new)
        parts.extend(data[e.start:e.end] for e in step if e.tag > SPS_STATUS)
        contents.append(b"".join(parts))
    return (data[:sequence.start] + encode_sequence(SPS_SEQUENCE, contents)
            + data[sequence.end:])


def _top_level(data: bytes) -> dict[int, RawElement]:
    found = {e.tag: e for e in elements(data, body_start(data), len(data))}
    if any(tag & 0xFFFF == 0 for tag in found):
        raise NotRaw("a group length would no longer be true")
    return found


def _text(data: bytes, found: dict[int, RawElement], tag: int) -> str:
    element = found.get(tag)
    return "" if element is None else text(data, element)
