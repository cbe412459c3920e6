"""Build one C-FIND response from the search mask and a matching record (docs/compat.md §5).

Mirrors DCMTK ``wldsfs.cc StartFindRequest``: the response starts as a copy of the cleaned,
expanded mask, so only requested keys come back, each with the VR of the request. Every string
value is the record's raw bytes (``findAndGetString``: all values, original padding, cut at a
NUL), padded to even length like DCMTK's encoder (space, NUL for UI).

Representation handed to the encoder: string elements are ``RawDataElement``s with an explicit
VR and even-length bytes, PregnancyStatus is a ``DataElement`` (US, int) and sequences are
``DataElement``s holding ``Dataset`` items of the same kind. An encoder that writes raw values
as they are sends wlmscpfs's bytes whatever the character set; pydicom's ``write_dataset``
decodes and re-encodes raw values with the response's (0008,0005) (latin-1 when absent), which
keeps the bytes but drops trailing spaces before re-padding.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from wlmd.config.settings import CharsetMode
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
from wlmd.worklist.query import (
    CHARSET_VRS,
    STRING_VRS,
    Elements,
    PreparedQuery,
    element_vr,
    make_raw,
    value_of,
)

PREGNANCY_STATUS_UNKNOWN = 4


def build_response(query: PreparedQuery, record: Elements, charset: CharsetMode) -> Dataset:
    """The identifier of one pending response: the mask filled from ``record`` (its decoded
    dataset, or ``fileview.raw_elements``)."""
    response = _fill_item(query.mask, record, top_level=True)
    _drop_empty_description_or_code(
        _first_item(response, SCHEDULED_PROCEDURE_STEP_SEQUENCE),
        SPS_DESCRIPTION,
        SCHEDULED_PROTOCOL_CODE_SEQUENCE,
    )
    _drop_empty_description_or_code(
        response, REQUESTED_PROCEDURE_DESCRIPTION, REQUESTED_PROCEDURE_CODE_SEQUENCE
    )
    _drop_empty_reference_item(response, REFERENCED_STUDY_SEQUENCE)
    _drop_empty_reference_item(response, REFERENCED_PATIENT_SEQUENCE)
    _add_specific_character_set(response, record, charset)
    return response


def _fill_item(mask_item: Dataset, record_item: Elements | None, *, top_level: bool) -> Dataset:
    """One level of the response: every mask element filled from ``record_item``.

    The elements go into the Dataset at once: one by one, pydicom's checks of each
    assignment cost more than filling it.
    """
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    for tag in sorted(mask_item.keys()):
        element = mask_item.get_item(tag)
        vr = element_vr(element)
        if vr == "SQ":
            elements[tag] = _fill_sequence(mask_item[tag], record_item)
        elif top_level and tag == PREGNANCY_STATUS and vr == "US":
            elements[tag] = DataElement(tag, "US", _pregnancy_status(record_item))
        elif vr in STRING_VRS:
            elements[tag] = make_raw(tag, vr, _padded(_record_string(record_item, tag), vr))
        else:
            elements[tag] = copy.deepcopy(mask_item[tag])
    return Dataset(elements)


def _record_string(record_item: Elements | None, tag: BaseTag) -> bytes:
    """``findAndGetString``: the raw value of a string element, up to a NUL; else empty."""
    found = None if record_item is None else value_of(record_item, tag)
    if found is None or found[0] not in STRING_VRS:
        return b""
    return found[1].split(b"\0", 1)[0]


def _padded(value: bytes, vr: str) -> bytes:
    """Even length, as DCMTK's encoder pads odd values (NUL for UI, space otherwise)."""
    if len(value) % 2:
        return value + (b"\0" if vr == "UI" else b" ")
    return value


def _pregnancy_status(record: Elements | None) -> int:
    """The record's first US value, or 4 (unknown) when it has none; read without decoding."""
    element = None if record is None else record.get_item(PREGNANCY_STATUS)
    if element is None or element_vr(element) != "US":
        return PREGNANCY_STATUS_UNKNOWN
    if isinstance(element, RawDataElement):
        return raw_pregnancy_status(element)
    values = [] if element.value in (None, "") else element.value
    if isinstance(values, int):
        values = [values]
    return int(values[0]) if values else PREGNANCY_STATUS_UNKNOWN


def raw_pregnancy_status(element: RawDataElement) -> int:
    """The first value of a raw US PregnancyStatus, read without decoding; 4 if it has none."""
    raw = element.value or b""
    order: Literal["little", "big"] = "little" if element.is_little_endian else "big"
    return int.from_bytes(raw[:2], order) if len(raw) >= 2 else PREGNANCY_STATUS_UNKNOWN


def _fill_sequence(mask_element: DataElement, record_item: Elements | None) -> DataElement:
    """One query item cloned once per record item and filled; otherwise echoed unchanged."""
    mask_items = mask_element.value or []
    tag = mask_element.tag
    if len(mask_items) != 1:
        return DataElement(tag, "SQ", Sequence([copy.deepcopy(i) for i in mask_items]))
    record_items = _record_items(record_item, tag)
    if not record_items:
        return DataElement(tag, "SQ", Sequence([copy.deepcopy(mask_items[0])]))
    filled = [_fill_item(mask_items[0], item, top_level=False) for item in record_items]
    return DataElement(tag, "SQ", Sequence(filled))


def _record_items(record_item: Elements | None, tag: BaseTag) -> list[Elements]:
    """The items of the record's sequence ``tag``, if it has one."""
    if record_item is None:
        return []
    element = record_item.get_item(tag)
    if element is None or element_vr(element) != "SQ":
        return []
    return list(record_item[tag].value or [])


def _first_item(dataset: Dataset, tag: BaseTag) -> Dataset | None:
    """Item 0 of a sequence; None where DCMTK would dereference NULL (``-nse``, zero items)."""
    element = dataset.get(tag)
    if element is None or element.VR != "SQ" or not element.value:
        return None
    item: Dataset = element.value[0]
    return item


def _is_empty(dataset: Dataset, tag: BaseTag) -> bool:
    """Present with a zero-length value."""
    found = value_of(dataset, tag)
    return found is not None and not found[1]


def _drop_empty_description_or_code(
    item: Dataset | None, description: BaseTag, code_sequence: BaseTag
) -> None:
    """``HandleExistentButEmptyDescriptionAndCodeSequenceAttributes``."""
    if item is None:
        return
    code = item.get(code_sequence)
    if code is not None and code.VR == "SQ":
        items = code.value or []
        if not items or (
            len(items) == 1
            and _is_empty(items[0], CODE_VALUE)
            and _is_empty(items[0], CODING_SCHEME_DESIGNATOR)
        ):
            del item[code_sequence]
            return
    if _is_empty(item, description):
        del item[description]


def _drop_empty_reference_item(response: Dataset, tag: BaseTag) -> None:
    """``HandleExistentButEmptyReferencedStudyOrPatientSequenceAttributes``: drop the lone item."""
    element = response.get(tag)
    if element is None or element.VR != "SQ" or len(element.value or []) != 1:
        return
    item = element.value[0]
    if _is_empty(item, REFERENCED_SOP_CLASS_UID) and _is_empty(item, REFERENCED_SOP_INSTANCE_UID):
        del element.value[0]


def _add_specific_character_set(response: Dataset, record: Elements, charset: CharsetMode
                                ) -> None:
    """``-cs1``/``-csk``: add (0008,0005) when a PN/LO/SH/ST/LT/UT/UC element is anywhere."""
    if charset is CharsetMode.NONE or not _affected_by_charset(response):
        return
    if charset is CharsetMode.ISO_IR_100:
        value = b"ISO_IR 100"
    else:
        value = _record_string(record, SPECIFIC_CHARACTER_SET)
        if not value:
            return
    response[SPECIFIC_CHARACTER_SET] = make_raw(
        SPECIFIC_CHARACTER_SET, "CS", _padded(value, "CS")
    )


def _affected_by_charset(dataset: Dataset) -> bool:
    """``DcmItem::isAffectedBySpecificCharacterSet``, nested items included."""
    for tag in sorted(dataset.keys()):
        vr = element_vr(dataset.get_item(tag))
        if vr in CHARSET_VRS:
            return True
        if vr == "SQ" and any(_affected_by_charset(item) for item in dataset[tag].value or []):
            return True
    return False
