"""PS3.4 Annex F: which attributes an N-CREATE must carry and an N-SET may change.

From Table F.7.2-1 (Modality Performed Procedure Step SOP Class N-CREATE, N-SET and final state
attributes). Type 1 = present with a value, type 2 = present (may be empty), 3 = optional,
"not allowed" in N-SET = fixed at creation. Attributes the table does not list are accepted
and stored as sent (the table allows Standard Extended SOP Classes).

The checks read a pydicom Dataset or the raw elements of a received data set
(``wlmd.mpps.encoded``); on raw elements, whatever pydicom might read otherwise (a value that
is not plain ASCII, a sequence sent with another VR) raises ``NotRaw`` and the caller checks
the Dataset, so both give the same answer.
"""

from __future__ import annotations

import re
from collections.abc import MutableSequence
from dataclasses import dataclass
from typing import overload

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag, Tag

from wlmd.dicom.rawfile import NotRaw, RawLevel, RawSequence
from wlmd.dicom.types import (
    STATUS_INVALID_ATTRIBUTE_VALUE,
    STATUS_MISSING_ATTRIBUTE,
    STATUS_MISSING_ATTRIBUTE_VALUE,
)
from wlmd.mpps.encoded import EncodedLevel

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
FINAL_STATES = (COMPLETED, DISCONTINUED)
STATUS_TAG = Tag(0x0040, 0x0252)  # Performed Procedure Step Status
STEP_SEQUENCE_TAG = Tag(0x0040, 0x0270)  # Scheduled Step Attributes Sequence
SERIES_SEQUENCE_TAG = Tag(0x0040, 0x0340)  # Performed Series Sequence
# Text VRs whose raw value is empty exactly when the decoded one is (no escape sequences):
# checked on the bytes, since converting a value costs more than the whole check.
_RAW_TEXT_VRS = frozenset(("AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC",
                           "UI", "UR", "UT"))
_RAW_UNSURE = (b"\\", b"\x1b")  # several values, or escapes: pydicom's reading decides
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

# N-CREATE: (tag, type) of the top-level attributes with type 1 or 2.
CREATE_REQUIRED: tuple[tuple[int, int], ...] = (
    (0x00400270, 1),  # Scheduled Step Attributes Sequence
    (0x00100010, 2),  # Patient's Name
    (0x00100020, 2),  # Patient ID
    (0x00100030, 2),  # Patient's Birth Date
    (0x00100040, 2),  # Patient's Sex
    (0x00081120, 2),  # Referenced Patient Sequence
    (0x00400253, 1),  # Performed Procedure Step ID
    (0x00400241, 1),  # Performed Station AE Title
    (0x00400242, 2),  # Performed Station Name
    (0x00400243, 2),  # Performed Location
    (0x00400244, 1),  # Performed Procedure Step Start Date
    (0x00400245, 1),  # Performed Procedure Step Start Time
    (0x00400252, 1),  # Performed Procedure Step Status
    (0x00400254, 2),  # Performed Procedure Step Description
    (0x00400255, 2),  # Performed Procedure Type Description
    (0x00081032, 2),  # Procedure Code Sequence
    (0x00400250, 2),  # Performed Procedure Step End Date
    (0x00400251, 2),  # Performed Procedure Step End Time
    (0x00080060, 1),  # Modality
    (0x00200010, 2),  # Study ID
    (0x00400260, 2),  # Performed Protocol Code Sequence
    (0x00400340, 2),  # Performed Series Sequence
)
# N-CREATE: the attributes of each Scheduled Step Attributes Sequence item.
STEP_ITEM_REQUIRED: tuple[tuple[int, int], ...] = (
    (0x0020000D, 1),  # Study Instance UID
    (0x00081110, 2),  # Referenced Study Sequence
    (0x00080050, 2),  # Accession Number
    (0x00401001, 2),  # Requested Procedure ID
    (0x00321060, 2),  # Requested Procedure Description
    (0x00400009, 2),  # Scheduled Procedure Step ID
    (0x00400007, 2),  # Scheduled Procedure Step Description
    (0x00400008, 2),  # Scheduled Protocol Code Sequence
)
# Performed Series Sequence items (N-CREATE and N-SET alike).
SERIES_ITEM_REQUIRED: tuple[tuple[int, int], ...] = (
    (0x00081050, 2),  # Performing Physician's Name
    (0x00181030, 1),  # Protocol Name
    (0x00081070, 2),  # Operators' Name
    (0x0020000E, 1),  # Series Instance UID
    (0x0008103E, 2),  # Series Description
    (0x00080054, 2),  # Retrieve AE Title
    (0x00081140, 2),  # Referenced Image Sequence
    (0x00400220, 2),  # Referenced Non-Image Composite SOP Instance Sequence
)
# N-SET "Not allowed": fixed once the instance exists.
SET_NOT_ALLOWED = frozenset(Tag(t) for t in (
    0x00080005, 0x00400270, 0x00100010, 0x00100020, 0x00100021, 0x00100030, 0x00100040,
    0x00081120, 0x00380010, 0x00400253, 0x00400241, 0x00400242, 0x00400243, 0x00400244,
    0x00400245, 0x00080060, 0x00200010, 0x00080016, 0x00080018,
))
# Final state: required with a value once the status becomes COMPLETED or DISCONTINUED.
FINAL_REQUIRED = (Tag(0x00400250), Tag(0x00400251))  # End Date, End Time


Attributes = Dataset | RawLevel  # decoded, or the raw elements of a received data set


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the DIMSE status, the offending attributes and a comment."""

    status: int
    tags: tuple[BaseTag, ...]
    comment: str


def _missing(dataset: Attributes, required: tuple[tuple[int, int], ...],
             where: str) -> Refusal | None:
    absent = tuple(Tag(t) for t, _ in required if Tag(t) not in dataset)
    if absent:
        return Refusal(STATUS_MISSING_ATTRIBUTE, absent, f"missing attribute{where}")
    empty = tuple(Tag(t) for t, kind in required if kind == 1 and _is_empty(dataset, Tag(t)))
    if empty:
        return Refusal(STATUS_MISSING_ATTRIBUTE_VALUE, empty, f"missing value{where}")
    return None


def _is_empty(dataset: Attributes, tag: BaseTag) -> bool:
    raw = dataset.get_item(tag)
    if (isinstance(raw, RawDataElement) and raw.VR in _RAW_TEXT_VRS
            and (raw.value is None or b"\x1b" not in raw.value)):
        return not raw.value or not raw.value.strip(b" \0")  # as decoded: no conversion
    if isinstance(dataset, RawLevel):
        if isinstance(raw, RawSequence):
            return not raw.value
        raise NotRaw("a value pydicom converts before it is read")
    value = dataset[tag].value
    if isinstance(value, str):
        return not value.strip(" \0")
    if isinstance(value, bytes):
        return not value.strip(b" \0")
    # pydicom's Sequence is no list: a sequence without items is empty too
    return value is None or value == "" or (isinstance(value, MutableSequence) and not value)


def text(dataset: Attributes, tag: int) -> str:
    """A string value without padding ('' when absent or empty)."""
    if isinstance(dataset, RawLevel):
        return _raw_text(dataset.get(tag))
    element = dataset.get(Tag(tag))
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip(" \0")


def _raw_text(element: RawDataElement | RawSequence | None) -> str:
    """``text`` of a raw element, as pydicom would decode it; NotRaw where it might not."""
    if element is None:
        return ""
    if not isinstance(element, RawDataElement) or element.VR not in _RAW_TEXT_VRS:
        raise NotRaw("not a text value")
    value = element.value or b""
    if not value.isascii() or any(mark in value for mark in _RAW_UNSURE):
        raise NotRaw("a value pydicom may read otherwise")
    return value.decode("ascii").strip(" \0")


def _sequence_vr(dataset: Attributes, tag: BaseTag) -> str:
    """The VR of a present element that should be a sequence, as pydicom reads it."""
    element = dataset.get_item(tag)
    if isinstance(dataset, RawLevel):
        if not isinstance(element, RawSequence):
            raise NotRaw("pydicom may read this element as a sequence")
        return "SQ"
    return str(dataset[tag].VR)


def is_uid(value: str) -> bool:
    """A syntactically valid UID (PS3.5 §9.1): safe to use as a file name."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def check_create(dataset: Attributes) -> Refusal | None:
    """The N-CREATE rules: required attributes present, status IN PROGRESS."""
    if isinstance(dataset, Dataset):
        dataset = shallow_copy(dataset)
    if (refusal := _missing(dataset, CREATE_REQUIRED, "")) is not None:
        return refusal
    if _sequence_vr(dataset, STEP_SEQUENCE_TAG) != "SQ":
        return Refusal(STATUS_INVALID_ATTRIBUTE_VALUE, (STEP_SEQUENCE_TAG,),
                       "Scheduled Step Attributes Sequence is not a sequence")
    for item in dataset[STEP_SEQUENCE_TAG].value:
        if (refusal := _missing(item, STEP_ITEM_REQUIRED, " in the scheduled step")):
            return refusal
        if not is_uid(text(item, 0x0020000D)):
            return Refusal(STATUS_INVALID_ATTRIBUTE_VALUE, (Tag(0x0020000D),),
                           "invalid Study Instance UID")
    if (refusal := _check_series(dataset)) is not None:
        return refusal
    if text(dataset, STATUS_TAG) != IN_PROGRESS:
        return Refusal(STATUS_INVALID_ATTRIBUTE_VALUE, (STATUS_TAG,),
                       "N-CREATE status must be IN PROGRESS")
    return None


def _check_series(dataset: Attributes) -> Refusal | None:
    element = dataset.get(SERIES_SEQUENCE_TAG)
    if element is None or not element.value:
        return None
    if _sequence_vr(dataset, SERIES_SEQUENCE_TAG) != "SQ":
        return Refusal(STATUS_INVALID_ATTRIBUTE_VALUE, (SERIES_SEQUENCE_TAG,),
                       "Performed Series Sequence is not a sequence")
    for item in element.value:
        if (refusal := _missing(item, SERIES_ITEM_REQUIRED, " in a performed series")):
            return refusal
    return None


def check_set(current: Attributes, modifications: Attributes) -> Refusal | None:
    """The N-SET rules against the stored instance ``current`` (not yet final); both decoded
    or both raw."""
    if isinstance(modifications, Dataset):
        modifications = shallow_copy(modifications)
    fixed = tuple(Tag(t) for t in sorted(set(modifications.keys()) & SET_NOT_ALLOWED))
    if fixed:
        return Refusal(STATUS_INVALID_ATTRIBUTE_VALUE, fixed, "attribute may not be changed")
    if (refusal := _check_series(modifications)) is not None:
        return refusal
    status = text(modifications, STATUS_TAG) if STATUS_TAG in modifications else IN_PROGRESS
    if status not in (IN_PROGRESS, *FINAL_STATES):
        return Refusal(STATUS_INVALID_ATTRIBUTE_VALUE, (STATUS_TAG,),
                       "status must be IN PROGRESS, COMPLETED or DISCONTINUED")
    if status in FINAL_STATES:
        merged = _merged_view(current, modifications)
        empty = tuple(tag for tag in FINAL_REQUIRED
                      if tag not in merged or _is_empty(merged, tag))
        if empty:
            return Refusal(STATUS_MISSING_ATTRIBUTE_VALUE, empty,
                           f"{status} needs the end date and time")
        if status == COMPLETED and (
            SERIES_SEQUENCE_TAG not in merged or _is_empty(merged, SERIES_SEQUENCE_TAG)
        ):
            return Refusal(STATUS_MISSING_ATTRIBUTE_VALUE, (SERIES_SEQUENCE_TAG,),
                           "COMPLETED needs a performed series")
    return None


@overload
def merge(current: Dataset, modifications: Dataset) -> Dataset: ...


@overload
def merge(current: EncodedLevel, modifications: EncodedLevel) -> EncodedLevel: ...


@overload
def merge(current: Dataset | EncodedLevel,
          modifications: Dataset | EncodedLevel) -> Dataset | EncodedLevel: ...


def merge(current: Dataset | EncodedLevel,
          modifications: Dataset | EncodedLevel) -> Dataset | EncodedLevel:
    """The instance after the N-SET: each modified attribute replaces the stored one whole
    (both decoded, or both raw)."""
    if isinstance(current, EncodedLevel) and isinstance(modifications, EncodedLevel):
        return current.merged(modifications)
    if not (isinstance(current, Dataset) and isinstance(modifications, Dataset)):
        raise TypeError("a decoded and a raw data set")
    merged = dict(current.items())
    merged.update(modifications.items())
    return Dataset(merged)


def _merged_view(current: Attributes, modifications: Attributes) -> Attributes:
    """``merge`` for reading: raw levels merge as dicts do."""
    if isinstance(current, RawLevel) and isinstance(modifications, RawLevel):
        return RawLevel({**current, **modifications})
    if isinstance(current, Dataset) and isinstance(modifications, Dataset):
        return merge(current, modifications)
    raise TypeError("a decoded and a raw data set")


def shallow_copy(dataset: Dataset) -> Dataset:
    """The same elements in a new dataset, still undecoded: reading the copy decodes them in
    the copy only (``Dataset.update`` would decode every one), so the original can be stored
    by copying its bytes (``dimse.encode_dataset``) instead of encoding it again."""
    return Dataset(dict(dataset.items()))
