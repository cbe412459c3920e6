"""PS3.18 chapter 14 search: query parameters in, the C-FIND identifier that asks the same out.

The web search reuses the C-FIND pipeline unchanged (``WorklistService.find``), so that the
HTTP answer to a query is by construction the set of datasets the C-FIND with the same keys
returns. This module only translates: PS3.18 §8.3.4 query parameters (attribute matching by
keyword or tag, dotted sequence paths, ``includefield``, ``fuzzymatching``, ``offset``,
``limit``) into an identifier, and rejects what the standard says is a bad request.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from wlmd.dicom.dimse import encode_dataset
from wlmd.dicom.types import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PENDING,
    STATUS_PENDING_WARNING,
    AssociationInfo,
    FindResponse,
    UndecodableIdentifier,
)
from wlmd.worklist.keys import RETURN_KEY_TAGS
from wlmd.worklist.service import WorklistService

MAX_LIMIT = 100_000
# What pydicom raises writing a value that does not fit its VR.
ENCODING_ERRORS = (struct.error, ValueError, TypeError, OverflowError, NotImplementedError,
                   AttributeError, UnicodeError, OSError)
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
HTTP_CALLING_AE = "HTTP"  # the calling AE title an HTTP search is logged and matched under
FUZZY_CALLING_AE = "HTTP-FUZZY"  # the same, for fuzzymatching=true (a policy matches it)


class BadSearch(ValueError):
    """The request's query parameters cannot be turned into a query (HTTP 400)."""


@dataclass
class Search:
    """A parsed search: the identifier to run (as a C-FIND would deliver it) and the paging."""

    identifier: Dataset
    encoded: bytes = b""  # the identifier's bytes: the service prepares a query once per bytes
    offset: int = 0
    limit: int | None = None
    fuzzy_requested: bool = False


def parse_search(parameters: Iterable[tuple[str, str]]) -> Search:
    """Translate query parameters (in their order, repeated names allowed) into a ``Search``."""
    search = Search(Dataset())
    keys = []
    for name, value in parameters:
        if name == "fuzzymatching":
            search.fuzzy_requested = _boolean(name, value)
        elif name == "offset":
            search.offset = _count(name, value)
        elif name == "limit":
            search.limit = _count(name, value)
        else:
            keys.append((name, value))
    search.identifier, search.encoded = identifier_for(tuple(keys))
    return search


@functools.lru_cache(maxsize=256)
def identifier_for(keys: tuple[tuple[str, str], ...]) -> tuple[Dataset, bytes]:
    """The received identifier of a set of matching and include parameters, and its bytes.

    Cached: a modality's searches repeat, and building and encoding the identifier is most of a
    small search's cost. The pipeline only reads the identifier, so one object serves them all.
    """
    identifier = default_identifier()
    for name, value in keys:
        if name == "includefield":
            for attribute in filter(None, (part.strip() for part in value.split(","))):
                if attribute != "all":
                    _set_path(identifier, attribute_path(attribute), None)
        else:
            _set_path(identifier, attribute_path(name), value)
    return as_received(identifier)


def default_identifier() -> Dataset:
    """Every return key wlmd supports, universally matched: what a search returns by default."""
    return _universal_level(None)


def _universal_level(sequence_tag: BaseTag | None) -> Dataset:
    level = Dataset()
    for tag in sorted(RETURN_KEY_TAGS[sequence_tag]):
        vr = dictionary_VR(tag)
        if vr == "SQ":
            item = _universal_level(tag) if tag in RETURN_KEY_TAGS else Dataset()
            level.add(DataElement(tag, "SQ", Sequence([item])))
        else:
            level.add(DataElement(tag, vr, None))
    return level


def attribute_path(text: str) -> list[BaseTag]:
    """``PatientName``, ``00100010`` or ``00400100.Modality`` as a list of tags."""
    path = []
    for part in text.split("."):
        tag = _attribute_tag(part)
        path.append(tag)
    for tag in path[:-1]:
        if dictionary_VR(tag) != "SQ":
            raise BadSearch(f"{text}: {tag_text(tag)} is not a sequence")
    return path


def _attribute_tag(part: str) -> BaseTag:
    if len(part) == 8 and all(ch in "0123456789abcdefABCDEF" for ch in part):
        tag = Tag(int(part, 16))
    else:
        number = tag_for_keyword(part)
        if number is None:
            raise BadSearch(f"unknown attribute {part!r}")
        tag = Tag(number)
    try:
        dictionary_VR(tag)
    except KeyError:
        raise BadSearch(f"unknown attribute {part!r}") from None
    return tag


def _set_path(level: Dataset, path: list[BaseTag], value: str | None) -> None:
    """Put a matching value (or, with ``None``, a return key) at the end of ``path``."""
    for tag in path[:-1]:
        element = level.get(tag)
        if element is None or element.VR != "SQ":
            level.add(DataElement(tag, "SQ", Sequence([Dataset()])))
            element = level[tag]
        if not element.value:
            element.value = Sequence([Dataset()])
        level = element.value[0]
    tag = path[-1]
    vr = dictionary_VR(tag)
    if vr == "SQ":
        if value:
            raise BadSearch(f"{tag_text(tag)} is a sequence and takes no value")
        if tag not in level:
            level.add(DataElement(tag, "SQ", Sequence([Dataset()])))
        return
    if value is None:
        if tag not in level:
            level.add(DataElement(tag, vr, None))
        return
    if "\\" in value and vr not in ("UI",):
        raise BadSearch(f"{tag_text(tag)}: multiple values are only allowed for UIDs")
    level.add(DataElement(tag, vr, value))


def _boolean(name: str, value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadSearch(f"{name} must be true or false")


def _count(name: str, value: str) -> int:
    if not value.isdigit() or int(value) > MAX_LIMIT:
        raise BadSearch(f"{name} must be an integer from 0 to {MAX_LIMIT}")
    return int(value)


def tag_text(tag: BaseTag) -> str:
    return f"{tag.group:04X}{tag.element:04X}"


@dataclass
class SearchOutcome:
    """What the C-FIND pipeline answered: the matches, or the HTTP status of its failure."""

    answers: list[bytes] = field(default_factory=list)  # explicit VR little endian, as sent
    unsupported_removed: bool = False
    failure: int = 0  # an HTTP status code when the query failed
    problem: str = ""


def run_search(service: WorklistService, ae: str, search: Search, peer: str,
               calling_ae: str = HTTP_CALLING_AE) -> SearchOutcome:
    """Run a parsed search's identifier through the workers' C-FIND pipeline for called AE
    ``ae``, with its bytes, as a C-FIND's identifier arrives."""
    assoc = AssociationInfo(peer_address=peer, peer_port=0, calling_ae=calling_ae,
                            called_ae=ae)
    try:
        responses = list(service.find(assoc, search.identifier, EXPLICIT_LITTLE,
                                      search.encoded))
    except UndecodableIdentifier as error:
        return SearchOutcome(failure=400, problem=f"query cannot be encoded: {error}")
    final = responses[-1]
    if final.status == STATUS_IDENTIFIER_MISMATCH:
        return SearchOutcome(failure=400, problem=final.error_comment or "invalid query")
    if final.status == STATUS_OUT_OF_RESOURCES:
        comment = final.error_comment or "worklist temporarily unavailable"
        return SearchOutcome(failure=413 if comment.startswith("Too many") else 503,
                             problem=comment)
    pending = [r for r in responses if r.status in (STATUS_PENDING, STATUS_PENDING_WARNING)]
    return SearchOutcome(answers=[_encoded(r) for r in pending],
                         unsupported_removed=any(r.status == STATUS_PENDING_WARNING
                                                 for r in pending))


def as_received(identifier: Dataset) -> tuple[Dataset, bytes]:
    """The identifier as a C-FIND would deliver it: encoded (UTF-8 when a value needs it) and
    read back raw, so the pipeline meets the same bytes whichever protocol asked; and those
    bytes."""
    if any(not str(element.value or "").isascii() for element in identifier.iterall()
           if element.VR != "SQ"):
        identifier.SpecificCharacterSet = "ISO_IR 192"
    try:
        encoded = encode_dataset(identifier, EXPLICIT_LITTLE)
    except ENCODING_ERRORS as error:
        raise BadSearch(f"a value does not fit its attribute's VR ({type(error).__name__})"
                        ) from None
    return read_dataset(io.BytesIO(encoded), is_implicit_VR=False,
                        is_little_endian=True), encoded


def _encoded(response: FindResponse) -> bytes:
    """A pending response's identifier as the bytes the service cached for it."""
    identifier = response.identifier
    if isinstance(identifier, Dataset):
        return encode_dataset(identifier, EXPLICIT_LITTLE)
    assert identifier is not None
    return identifier

