"""The file-reject rules of wlmscpfs (``--enable-file-reject``, docs/compat.md §3).

A worklist file is served only if it carries every return key of type 1 that a modality relies
on. The rules, their order, their short-circuiting and their DEBUG lines follow DCMTK 3.6.7
``WlmFileSystemInteractionManager::DatasetIsComplete`` (dcmwlm/libsrc/wlfsim.cc), so the log of
a rejected file reads the same. Values are judged by their raw length, as DCMTK does: a value of
only spaces is not empty, except for the descriptions, which are compared after trimming.
"""

from __future__ import annotations

import logging
from typing import overload

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from wlmd.dicom.rawfile import RawLevel, RawSequence
from wlmd.worklist import keys

LOGGER = logging.getLogger(__name__)

# The keys module's tag objects: the first start's walker keys elements with these very
# objects, so a lookup finds them by identity (``rawfile.share_tags``).
SPS = keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE
SPS_REQUIRED = (keys.SCHEDULED_STATION_AE_TITLE, keys.SPS_START_DATE, keys.SPS_START_TIME,
                keys.MODALITY, keys.SPS_ID)
TOP_REQUIRED = (keys.REQUESTED_PROCEDURE_ID, keys.STUDY_INSTANCE_UID, keys.PATIENT_NAME,
                keys.PATIENT_ID)
SPS_DESCRIPTION, SPS_CODES = keys.SPS_DESCRIPTION, keys.SCHEDULED_PROTOCOL_CODE_SEQUENCE
RP_DESCRIPTION, RP_CODES = (keys.REQUESTED_PROCEDURE_DESCRIPTION,
                            keys.REQUESTED_PROCEDURE_CODE_SEQUENCE)
CODE_VALUE, CODING_SCHEME = keys.CODE_VALUE, keys.CODING_SCHEME_DESIGNATOR
REFERENCED_SEQUENCES = (keys.REFERENCED_STUDY_SEQUENCE, keys.REFERENCED_PATIENT_SEQUENCE)
REFERENCED_UIDS = (keys.REFERENCED_SOP_CLASS_UID, keys.REFERENCED_SOP_INSTANCE_UID)
# A dataset as pydicom reads it, or one level of a file as the first start's walker reads it
# (``wlmd.worklist.walker``: every element raw, sequences as ``RawSequence``).
Level = Dataset | RawLevel


def is_complete(dataset: Level) -> bool:
    """True if wlmscpfs would serve ``dataset``; logs the first failing rule at DEBUG.

    Like DCMTK, a missing (0008,1110) or (0008,1120) is inserted into a Dataset as an empty
    sequence (in memory only) when the checks get that far, so the record answers for it (a
    walked level is dropped after the checks: its record notes ``add_references``).
    """
    LOGGER.debug("Checking whether dataset is complete ...")
    if type(dataset) is RawLevel and _walked_and_complete(dataset):
        return True
    steps = sequence_of(dataset, SPS)
    if steps is None or len(steps) != 1:
        LOGGER.debug("- %s is missing or does not have exactly one item", _named(SPS))
        return False
    step = steps[0]
    return not (
        any(_absent_or_empty(step, tag) for tag in SPS_REQUIRED)
        or any(_absent_or_empty(dataset, tag) for tag in TOP_REQUIRED)
        or _description_and_codes_incomplete(step, SPS_DESCRIPTION, SPS_CODES)
        or _description_and_codes_incomplete(dataset, RP_DESCRIPTION, RP_CODES)
        or any(_reference_incomplete(dataset, tag) for tag in REFERENCED_SEQUENCES)
    )


def _walked_and_complete(level: RawLevel) -> bool:
    """True if ``level`` (as the first start's walker reads a file) passes every rule with
    nothing to log or add: the common case, judged straight from its raw elements. False
    leaves the judgement, and its log lines, to the rules above. Run for every file of a
    first start: loops, not generators."""
    steps = level.get(SPS)
    if type(steps) is not RawSequence or len(steps.value) != 1:
        return False
    step = steps.value[0]
    for tag in SPS_REQUIRED:
        if not _filled(step, tag):
            return False
    for tag in TOP_REQUIRED:
        if not _filled(level, tag):
            return False
    if not (_described(step, SPS_DESCRIPTION, SPS_CODES)
            and _described(level, RP_DESCRIPTION, RP_CODES)):
        return False
    for tag in REFERENCED_SEQUENCES:
        items = level.get(tag)
        if type(items) is not RawSequence:
            return False
        for item in items.value:
            for uid in REFERENCED_UIDS:
                if not _filled(item, uid):
                    return False
    return True


def _filled(level: RawLevel, tag: BaseTag) -> bool:
    element = level.get(tag)
    return type(element) is RawDataElement and bool(element[3])


def _described(level: RawLevel, description: BaseTag, codes: BaseTag) -> bool:
    """``_description_and_codes_incomplete`` is False, read from raw elements only."""
    items = level.get(codes)
    if items is not None:
        if type(items) is not RawSequence or not items.value:
            return False
        for item in items.value:
            if not (_filled(item, CODE_VALUE) and _filled(item, CODING_SCHEME)):
                return False
    text = level.get(description)
    if text is None:
        return items is not None
    if type(text) is not RawDataElement:
        return False
    value = text[3] or b""
    return b"\\" in value or bool(value.strip(b" "))


@overload
def sequence_of(dataset: Dataset, tag: BaseTag) -> Sequence | None: ...


@overload
def sequence_of(dataset: Level, tag: BaseTag) -> Sequence | list[RawLevel] | None: ...


def sequence_of(dataset: Level, tag: BaseTag) -> Sequence | list[RawLevel] | None:
    """The items of sequence ``tag``, or None if it is absent or not a sequence."""
    element = dataset.get_item(tag)
    if element is None:
        return None
    if isinstance(element, RawSequence):
        return element.value
    if isinstance(element, RawDataElement) and (element.VR or dictionary_vr(tag)) != "SQ":
        return None
    value = dataset[tag].value
    return value if isinstance(value, Sequence) else None


def raw_value(dataset: Level, tag: int) -> bytes | None:
    """The value of ``tag`` as stored in the file (padding kept), or None if it is absent.

    Elements pydicom has already converted (such as (0008,0005), which it decodes while
    reading) are re-encoded as text; their padding is not needed by any rule here.
    """
    element = dataset.get_item(tag)
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        return element.value or b""
    value = element.value
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).encode("utf-8", "replace")


def dictionary_vr(tag: BaseTag) -> str | None:
    """The data dictionary VR of ``tag``; None for tags pydicom does not know."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _absent_or_empty(dataset: Level, tag: BaseTag) -> bool:
    """DCMTK ``AttributeIsAbsentOrEmpty``: missing, or a raw length of zero."""
    if raw_value(dataset, tag):
        return False
    LOGGER.debug("- %s is missing or empty", _named(tag))
    return True


def _description_and_codes_incomplete(dataset: Level, description: BaseTag,
                                      codes: BaseTag) -> bool:
    """DCMTK ``DescriptionAndCodeSequenceAttributesAreIncomplete`` for one pair."""
    items = sequence_of(dataset, codes)
    if items is not None:
        if len(items) == 0:
            LOGGER.debug("- %s is empty", _named(codes))
            return True
        for item in items:
            if _absent_or_empty(item, CODE_VALUE) or _absent_or_empty(item, CODING_SCHEME):
                LOGGER.debug("- %s has incomplete or empty code entries", _named(codes))
                return True
    text = raw_value(dataset, description)
    if text is None:
        if items is None:
            # DCMTK prints the description's tag twice here (DcmTag streams as its key).
            LOGGER.debug("- %s and %s %s are both not set", _named(codes),
                         _tag_text(description), _tag_text(description))
            return True
    elif b"\\" not in text and not text.strip(b" "):  # one value, only spaces

        LOGGER.debug("- %s is empty", _named(description))
        return True
    return False


def add_missing_references(dataset: Dataset) -> None:
    """Insert what ``is_complete`` inserts into a dataset it accepted (decoded again later)."""
    for tag in REFERENCED_SEQUENCES:
        if dataset.get_item(tag) is None:
            _add_empty_sequence(dataset, tag)


def _add_empty_sequence(dataset: Dataset, tag: BaseTag) -> None:
    dataset.add(DataElement(tag, "SQ", Sequence()))


def _reference_incomplete(dataset: Level, tag: BaseTag) -> bool:
    """DCMTK ``ReferencedStudyOrPatientSequenceIsAbsentOrExistentButNonEmptyAndIncomplete``."""
    if dataset.get_item(tag) is None:
        LOGGER.debug("- %s is missing", _named(tag))
        if isinstance(dataset, Dataset):
            _add_empty_sequence(dataset, tag)
        LOGGER.warning("Added missing type 2 sequence attribute %s to the current record",
                       _tag_text(tag))
        return False
    for item in sequence_of(dataset, tag) or ():
        if any(_absent_or_empty(item, uid) for uid in REFERENCED_UIDS):
            LOGGER.debug("- %s is incomplete", _named(tag))
            return True
    return False


def _named(tag: BaseTag) -> str:
    """``Keyword (gggg,eeee)`` as DCMTK's log lines print a tag."""
    return f"{keyword_for_tag(tag) or 'Unknown Tag & Data'} {_tag_text(tag)}"


def _tag_text(tag: BaseTag) -> str:
    """``(gggg,eeee)`` in DCMTK's lower-case hex."""
    return f"({tag.group:04x},{tag.element:04x})"
