"""Turn a C-FIND identifier into the search mask wlmscpfs works with (docs/compat.md §4, §5.4).

``prepare_query`` does what DCMTK's ``WlmDataSourceFileSystem::StartFindRequest`` and
``WlmDataSource::CheckSearchMask`` do before matching: copy the identifier without group lengths
and padding, validate the matching keys (0xA900), strip unsupported keys (0xFF01) and expand empty
sequences.

Values are kept as the bytes that came off the wire: every string element of the mask is a
``RawDataElement`` with an explicit VR (the request's, or the dictionary's for implicit VR) and
its undecoded value, because wlmscpfs matches and answers on raw byte strings, whatever the
character set. ``value_of`` reads any dataset (raw or already decoded by pydicom) the same way.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom import Dataset
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from wlmd.dicom.dimse import encode_dataset
from wlmd.dicom.dump import tag_name
from wlmd.worklist.keys import (
    SEQUENCE_EXPANSION,
    SPECIFIC_CHARACTER_SET,
    ExpansionItem,
    is_matching_key,
    is_return_key,
)

LOGGER = logging.getLogger(__name__)

STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)
CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # DcmCharString
TRAILING_PADDING = Tag(0xFFFC, 0xFFFC)
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

MANY_ERRORS_COMMENT = "Syntax error in 1 or more matching keys"
SEQUENCE_ITEMS_COMMENT = "More than 1 item in sequence."

# wlds.cc CheckMatchingKey character repertoires ("%%" in the C source is one '%').
_PRINTABLE = bytes(range(0x20, 0x7F))
_REPERTOIRES: dict[str, frozenset[int]] = {
    "CS": frozenset(b"*?ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _"),
    "AE": frozenset(_PRINTABLE),
    "PN": frozenset(_PRINTABLE.replace(b"~", b"")),
    "LO": frozenset(_PRINTABLE.replace(b"~", b"")),
    "SH": frozenset(_PRINTABLE.replace(b"~", b"")),
}
_TEXT_CHECKED_ONLY_WITHOUT_CHARSET = frozenset({"PN", "LO", "SH"})

# vrscanl.l: DA accepts any 4-digit year ("dubious"), TM allows trailing spaces per value.
_DA_VALUE = rb"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_TM_VALUE = rb"(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:[0-5][0-9](?:\.[0-9]{1,6})?)?)? *"
_VALUE_CHECKS = {
    "DA": re.compile(rb"(?:%s)?(?:\\(?:%s)?)*" % (_DA_VALUE, _DA_VALUE)),
    "TM": re.compile(rb"(?:%s)?(?:\\(?:%s)?)*" % (_TM_VALUE, _TM_VALUE)),
}


class Elements(Protocol):
    """What matching and answers read of a record: a pydicom Dataset, its packed matching
    keys (``compact.MatchView``) or its elements read from the file (``rawfile.RawLevel``)."""

    def get_item(self, tag: int, /) -> Any: ...

    def __getitem__(self, tag: int, /) -> Any: ...


class InvalidQuery(Exception):
    """The identifier fails wlmscpfs's checks: answer 0xA900 with these offending elements."""

    def __init__(self, offending: tuple[BaseTag, ...], comment: str) -> None:
        super().__init__(comment)
        self.offending = offending
        self.comment = comment


@dataclass
class PreparedQuery:
    """The cleaned, expanded search mask, and whether unsupported keys were dropped (0xFF01)."""

    mask: Dataset
    unsupported_removed: bool
    # Filled by wlmd.worklist.matching on first use, so a query is compiled once, not per record.
    compiled: Callable[[Elements], bool] | None = field(default=None, repr=False,
                                                      compare=False)
    _key: bytes | None = field(default=None, repr=False, compare=False)

    def key(self) -> bytes:
        """The mask in explicit VR little endian (VRs matter): what the response caches are
        keyed by. Encoded once per query, since a reused query asks for it on every search."""
        if self._key is None:
            self._key = encode_dataset(self.mask, EXPLICIT_VR_LITTLE_ENDIAN)
        return self._key


@dataclass
class _Check:
    """What CheckSearchMask accumulates: error count, offending tags, last comment."""

    charset: bytes
    errors: int = 0
    offending: list[BaseTag] = field(default_factory=list)
    comment: str = ""
    unsupported_removed: bool = False

    def fail(self, tag: BaseTag, comment: str) -> None:
        self.errors += 1
        if tag not in self.offending:
            self.offending.append(tag)
        self.comment = comment


def prepare_query(identifier: Dataset, *, no_fail: bool, expand_sequences: bool) -> PreparedQuery:
    """Clean, validate, strip and expand ``identifier`` as wlmscpfs does before matching.

    Raises ``InvalidQuery`` on validation errors unless ``no_fail`` (then invalid values are kept
    and simply fail to match).
    """
    mask = _clean_copy(identifier)
    charset = value_of(mask, SPECIFIC_CHARACTER_SET)
    check = _Check(charset=_first_value(charset[1]).strip(b" ") if charset else b"")
    LOGGER.info("Checking the search mask")
    _check_level(mask, None, check, expand_sequences)
    if check.errors > 1:
        check.comment = MANY_ERRORS_COMMENT
    if check.errors and not no_fail:
        raise InvalidQuery(tuple(check.offending), check.comment)
    return PreparedQuery(mask=mask, unsupported_removed=check.unsupported_removed)


# --- raw values -----------------------------------------------------------------------------


def element_vr(element: DataElement | RawDataElement) -> str:
    """The element's VR; for implicit VR raw elements, the dictionary's."""
    if element.VR:
        return str(element.VR)
    try:
        return str(dictionary_VR(element.tag))
    except KeyError:
        return "UN"


def value_of(dataset: Dataset | Elements, tag: int) -> tuple[str, bytes] | None:
    """``(VR, raw bytes)`` of a non-sequence element, or None if absent.

    Raw elements give their bytes untouched (padding included); elements pydicom has already
    decoded are encoded back with the dataset's character set.
    """
    element = dataset.get_item(tag)
    if element is None:
        return None
    vr = element_vr(element)
    if vr == "SQ":
        return vr, b""
    if isinstance(element, RawDataElement):
        return vr, element.value or b""
    assert isinstance(dataset, Dataset)  # a MatchView holds raw elements only
    return vr, _encode_value(element.value, vr, dataset)


def present_value(dataset: Dataset | Elements, tag: int) -> tuple[str, bytes]:
    """``value_of`` an element the caller found in ``dataset`` (KeyError if it is not)."""
    found = value_of(dataset, tag)
    if found is None:
        raise KeyError(tag)
    return found


def _encode_value(value: object, vr: str, dataset: Dataset) -> bytes:
    """Bytes of a decoded pydicom value, as they would have been on the wire."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, PersonName) and value.original_string is not None:
        return value.original_string
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original.encode("latin-1", "replace")
    if isinstance(value, str):
        if vr in CHARSET_VRS:
            return encode_string(value, convert_encodings(_charset_of(dataset)))
        return value.encode("latin-1", "replace")
    if isinstance(value, PersonName):
        return value.encode(convert_encodings(_charset_of(dataset)))
    if isinstance(value, Iterable):
        return b"\\".join(_encode_value(item, vr, dataset) for item in value)
    return str(value).encode("latin-1", "replace")


def _charset_of(dataset: Dataset) -> str | list[str]:
    return dataset._character_set  # pydicom resolves (0008,0005) and the parent's charset


def _first_value(raw: bytes) -> bytes:
    return raw.split(b"\\", 1)[0]


# --- step 1: copy without group lengths and padding ----------------------------------------------


def _clean_copy(dataset: Dataset) -> Dataset:
    """A copy holding raw string elements (explicit VR) and converted other elements.

    Group lengths and trailing padding are dropped at every level, as
    ``computeGroupLengthAndPadding(EGL_withoutGL, EPD_withoutPadding)`` does.
    """
    clean = Dataset()
    for tag in sorted(dataset.keys()):
        if tag.element == 0 or tag == TRAILING_PADDING:
            continue
        element = dataset.get_item(tag)
        vr = element_vr(element)
        if vr == "SQ":
            items = dataset[tag].value or []
            clean.add(DataElement(tag, "SQ", Sequence([_clean_copy(item) for item in items])))
        elif vr in STRING_VRS:
            clean[tag] = make_raw(tag, vr, present_value(dataset, tag)[1])
        else:
            clean.add(copy.deepcopy(dataset[tag]))
    return clean


def make_raw(tag: BaseTag, vr: str, value: bytes) -> RawDataElement:
    """A raw explicit-VR element carrying ``value`` verbatim."""
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


# --- step 2: CheckSearchMask ---------------------------------------------------------------------


def _check_level(item: Dataset, parent: BaseTag | None, check: _Check, expand: bool) -> None:
    """Check every element of one level in tag order, removing unsupported ones."""
    for tag in sorted(item.keys()):
        element = item.get_item(tag)
        if element_vr(element) == "SQ":
            _check_sequence(item, tag, parent, check, expand)
        else:
            _check_element(item, tag, parent, check)


def _check_element(item: Dataset, tag: BaseTag, parent: BaseTag | None, check: _Check) -> None:
    """``CheckNonSequenceElementInSearchMask``: validate keys, note return-key values, strip."""
    if is_matching_key(tag, parent):
        vr, raw = present_value(item, tag)
        comment = _invalid_value(vr, raw, check.charset)
        if comment is not None:
            check.fail(Tag(tag), comment)
            LOGGER.warning("Matching key attribute (%s) with invalid value encountered in the "
                           "search mask", tag_name(tag))
    elif is_return_key(tag, parent):
        if present_value(item, tag)[1]:
            LOGGER.info("  - Non-empty return key attribute (%s) encountered in the search "
                        "mask.\n    The specified value will be overridden.", tag_name(tag))
    else:
        del item[tag]
        if tag == SPECIFIC_CHARACTER_SET:
            LOGGER.warning("Attribute %s found in the search mask, value is neither checked nor "
                           "used for matching", tag_name(tag))
        else:
            LOGGER.info("  - Unsupported (non-sequence) attribute (%s) encountered in the search "
                        "mask.\n    This attribute will not be existent in any result dataset.",
                        tag_name(tag))
            check.unsupported_removed = True


def _invalid_value(vr: str, raw: bytes, charset: bytes) -> str | None:
    """The error comment of ``CheckMatchingKey`` for an invalid value, else None."""
    if vr in _VALUE_CHECKS:
        value = raw.strip(b" \0")
        if value and not _is_range_query(_VALUE_CHECKS[vr], value):
            return f"Invalid value for an attribute with VR={vr}"
        return None
    repertoire = _REPERTOIRES.get(vr)
    if repertoire is None or (vr in _TEXT_CHECKED_ONLY_WITHOUT_CHARSET and charset):
        return None
    text = raw.split(b"\0", 1)[0]  # DCMTK checks the C string
    if all(byte in repertoire for byte in text):
        return None
    return f"Invalid Character Repertoire for datatype {vr}"


def _is_range_query(pattern: re.Pattern[bytes], value: bytes) -> bool:
    """``DcmAttributeMatching::checkRangeQuery``: one value or a range split at the first '-'."""
    first, dash, second = value.partition(b"-")
    if not dash:
        return pattern.fullmatch(value) is not None
    return (not first or pattern.fullmatch(first) is not None) and (
        not second or pattern.fullmatch(second) is not None
    )


def _check_sequence(
    item: Dataset, tag: BaseTag, parent: BaseTag | None, check: _Check, expand: bool
) -> None:
    """``CheckSequenceElementInSearchMask``: expand empty, trim extra items, recurse, strip."""
    if not (is_matching_key(tag, parent) or is_return_key(tag, parent)):
        del item[tag]
        LOGGER.info("  - Unsupported (sequence) attribute (%s) encountered in the search mask."
                    "\n    This attribute will not be existent in any result dataset.",
                    tag_name(tag))
        check.unsupported_removed = True
        return
    sequence = item[tag].value
    if len(sequence) == 0 or (len(sequence) == 1 and len(sequence[0]) == 0):
        if len(sequence) == 0:
            LOGGER.warning("Empty sequence (%s) encountered within the query, treating as if an "
                           "empty item within the sequence has been sent", tag_name(tag))
        contents = SEQUENCE_EXPANSION.get(Tag(tag))
        if expand and contents is not None:
            item[tag].value = [_expansion_item(contents)]
        return
    if len(sequence) > 1:
        check.fail(Tag(tag), SEQUENCE_ITEMS_COMMENT)
        LOGGER.error("More than one item in sequence (%s) within the query encountered, "
                     "discarding all items except for the first one", tag_name(tag))
        del sequence[1:]  # departure: DCMTK's remove(i) loop skips every other item
    _check_level(sequence[0], Tag(tag), check, expand)


def _expansion_item(contents: ExpansionItem) -> Dataset:
    """The item an empty sequence is expanded to: zero-length elements with dictionary VRs."""
    item = Dataset()
    for tag, vr in contents:
        if isinstance(vr, str):
            item[tag] = make_raw(tag, vr, b"")
        else:
            item.add(DataElement(tag, "SQ", Sequence([_expansion_item(vr)])))
    return item
