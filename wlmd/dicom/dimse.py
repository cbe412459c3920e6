"""DIMSE message codecs (PS3.7): command sets, P-DATA fragments and identifier datasets.

Command sets are always implicit VR little endian and small, so they are encoded by hand with
``struct``. Identifiers are read by pydicom and written by this module's own writer: sequences
and items get explicit lengths (as DCMTK sends them), raw elements with a known VR go out
byte for byte (the worklist hands over the files' verbatim values, padding included), and only
decoded values and (0008,0005), which pydicom decodes to know how to encode them, are encoded
by pydicom.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.values import converters

from wlmd.dicom.pdu import P_DATA_TF, PDU_HEADER

# Transfer syntaxes the engine speaks.
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
DEFLATED_LITTLE = "1.2.840.10008.1.2.1.99"

# Command set elements (group 0000).
AFFECTED_SOP_CLASS_UID = 0x00000002
REQUESTED_SOP_CLASS_UID = 0x00000003
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_RESPONDED_TO = 0x00000120
COMMAND_DATASET_TYPE = 0x00000800
STATUS = 0x00000900
OFFENDING_ELEMENT = 0x00000901
ERROR_COMMENT = 0x00000902
ERROR_ID = 0x00000903
AFFECTED_SOP_INSTANCE_UID = 0x00001000
REQUESTED_SOP_INSTANCE_UID = 0x00001001
ATTRIBUTE_IDENTIFIER_LIST = 0x00001005

# Command field values.
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF
N_SET_RQ = 0x0120
N_SET_RSP = 0x8120
N_CREATE_RQ = 0x0140
N_CREATE_RSP = 0x8140

_SPECIFIC_CHARACTER_SET = 0x00080005

DATASET_PRESENT = 0x0001
NO_DATASET = 0x0101

_ELEMENT = struct.Struct("<HHL")
_PDV = struct.Struct(">LBB")
_ITEM_TAG = 0xFFFEE000
# VRs with a 32-bit length in explicit VR syntaxes (PS3.5 §7.1.2).
_LONG_VRS = frozenset(
    ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
)
# VRs whose encoded value does not depend on the byte order.
_BYTE_ORDER_FREE_VRS = frozenset(
    (
        "AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "OB",
        "PN", "SH", "ST", "TM", "UC", "UI", "UN", "UR", "UT",
    )
)


class DimseError(Exception):
    """A command set, P-DATA value or identifier that cannot be decoded."""


@dataclass(frozen=True)
class Pdv:
    """One presentation data value item of a P-DATA-TF PDU."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes


def parse_pdata(body: bytes) -> list[Pdv]:
    """Split a P-DATA-TF body into its PDV items."""
    pdvs = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < _PDV.size:
            raise DimseError("truncated PDV item header")
        length, context_id, header = _PDV.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise DimseError(f"PDV item length {length} does not fit its PDU")
        data = body[pos + _PDV.size : pos + 4 + length]
        pdvs.append(Pdv(context_id, bool(header & 1), bool(header & 2), data))
        pos += 4 + length
    return pdvs


def encode_pdata(context_id: int, is_command: bool, payload: bytes, peer_max_pdu: int) -> bytes:
    """P-DATA-TF PDUs, one PDV each, fragmenting ``payload`` to the peer's max PDU (0 = none)."""
    # Fragments of even length: DCMTK refuses odd ones ("Odd Fragment Length").
    chunk = max((peer_max_pdu - _PDV.size) & ~1, 2) if peer_max_pdu else max(len(payload), 1)
    flags = 1 if is_command else 0
    if len(payload) <= chunk:  # one fragment: most commands and identifiers
        return (PDU_HEADER.pack(P_DATA_TF, len(payload) + _PDV.size)
                + _PDV.pack(len(payload) + 2, context_id, flags | 2) + payload)
    view = memoryview(payload)
    parts: list[bytes | memoryview] = []
    for start in range(0, max(len(payload), 1), chunk):
        fragment = view[start : start + chunk]
        last = start + chunk >= len(payload)
        header = flags | (2 if last else 0)
        parts.append(PDU_HEADER.pack(P_DATA_TF, len(fragment) + _PDV.size))
        parts.append(_PDV.pack(len(fragment) + 2, context_id, header))
        parts.append(fragment)
    return b"".join(parts)


# --- command sets -------------------------------------------------------------------------------


def decode_command(data: bytes) -> dict[int, bytes]:
    """A command set as {tag: raw value}; implicit VR little endian, group 0000 only."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < _ELEMENT.size:
            raise DimseError("truncated command element")
        group, elem, length = _ELEMENT.unpack_from(data, pos)
        pos += _ELEMENT.size
        if group != 0 or pos + length > end:
            raise DimseError(f"bad command element ({group:04x},{elem:04x}) length {length}")
        elements[elem] = data[pos : pos + length]
        pos += length
    return elements


def command_us(command: dict[int, bytes], tag: int) -> int | None:
    """A US value of a decoded command set, or None when absent or malformed."""
    raw = command.get(tag)
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


def command_ui(command: dict[int, bytes], tag: int) -> str:
    """A UI value of a decoded command set, padding removed ('' when absent)."""
    return command.get(tag, b"").rstrip(b"\0 ").decode("latin-1")


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("latin-1")
    return raw + b"\0" if len(raw) % 2 else raw


def _text_value(text: str) -> bytes:
    raw = text.encode("latin-1", "replace")
    return raw + b" " if len(raw) % 2 else raw


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set from (tag, even-length value) pairs in tag order, with its group length."""
    body = b"".join(_ELEMENT.pack(0, tag, len(value)) + value for tag, value in elements)
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def find_response_command(
    sop_class_uid: str,
    message_id: int,
    status: int,
    *,
    has_dataset: bool,
    offending: tuple[BaseTag, ...] = (),
    comment: str | None = None,
) -> bytes:
    """The C-FIND-RSP command set exactly as wlmscpfs builds it (docs/compat.md §6.3)."""
    elements = [
        (AFFECTED_SOP_CLASS_UID, _uid_value(sop_class_uid)),
        (COMMAND_FIELD, struct.pack("<H", C_FIND_RSP)),
        (MESSAGE_ID_RESPONDED_TO, struct.pack("<H", message_id)),
        (COMMAND_DATASET_TYPE, struct.pack("<H", DATASET_PRESENT if has_dataset else NO_DATASET)),
        (STATUS, struct.pack("<H", status)),
    ]
    if offending:
        at = b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in offending)
        elements.append((OFFENDING_ELEMENT, at))
    if comment is not None:
        elements.append((ERROR_COMMENT, _text_value(comment)))
    return encode_command(elements)


def n_response_command(
    sop_class_uid: str,
    command_field: int,
    message_id: int,
    status: int,
    *,
    sop_instance_uid: str = "",
    attribute_identifiers: tuple[BaseTag, ...] = (),
    comment: str | None = None,
    error_id: int | None = None,
) -> bytes:
    """An N-CREATE-RSP or N-SET-RSP command set without a data set (PS3.7 §10.3)."""
    elements = [
        (AFFECTED_SOP_CLASS_UID, _uid_value(sop_class_uid)),
        (COMMAND_FIELD, struct.pack("<H", command_field)),
        (MESSAGE_ID_RESPONDED_TO, struct.pack("<H", message_id)),
        (COMMAND_DATASET_TYPE, struct.pack("<H", NO_DATASET)),
        (STATUS, struct.pack("<H", status)),
    ]
    if comment is not None:
        elements.append((ERROR_COMMENT, _text_value(comment[:64])))
    if error_id is not None:
        elements.append((ERROR_ID, struct.pack("<H", error_id)))
    if sop_instance_uid:
        elements.append((AFFECTED_SOP_INSTANCE_UID, _uid_value(sop_instance_uid)))
    if attribute_identifiers:
        at = b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in attribute_identifiers)
        elements.append((ATTRIBUTE_IDENTIFIER_LIST, at))
    return encode_command(elements)


def echo_response_command(sop_class_uid: str, message_id: int) -> bytes:
    """The C-ECHO-RSP command set with status success."""
    return encode_command(
        [
            (AFFECTED_SOP_CLASS_UID, _uid_value(sop_class_uid)),
            (COMMAND_FIELD, struct.pack("<H", C_ECHO_RSP)),
            (MESSAGE_ID_RESPONDED_TO, struct.pack("<H", message_id)),
            (COMMAND_DATASET_TYPE, struct.pack("<H", NO_DATASET)),
            (STATUS, struct.pack("<H", 0)),
        ]
    )


# --- identifiers --------------------------------------------------------------------------------


def _syntax(ts_uid: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) for a transfer syntax the engine accepts."""
    if ts_uid == IMPLICIT_LITTLE:
        return True, True, False
    if ts_uid == EXPLICIT_BIG:
        return False, False, False
    return False, True, ts_uid == DEFLATED_LITTLE


def _inflate(data: bytes, max_bytes: int) -> bytes:
    """Raw-deflate decompression with an output cap, so a small bomb cannot exhaust memory."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise DimseError(f"bad deflated identifier: {exc}") from exc
    if len(out) > max_bytes:
        raise DimseError(f"inflated identifier exceeds {max_bytes} bytes")
    return out


def _check_lengths(dataset: Dataset, size: int) -> None:
    """pydicom quietly shortens a value cut off by the end of the data; DCMTK refuses it.

    An empty element is converted when its VR is unknown, so that it raises here; one of a
    known VR (most keys of a query) is left for whoever reads it: converting it is most of the
    cost of decoding a query.
    """
    for tag in tuple(dataset.keys()):  # iterating the dataset would convert every element
        element = dataset.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement):
            continue
        if element.length != 0xFFFFFFFF and element.value_tell + element.length > size:
            raise DimseError(f"element {element.tag} runs past the end of the identifier")
        if element.value is None and not _known_vr(element):
            dataset.get_item(tag)  # converts: raises for an unknown VR


def _known_vr(element: RawDataElement) -> bool:
    """True if pydicom can convert the element's VR (implicit VR: its dictionary VR)."""
    return _convertible(element.VR, element.tag)


@functools.lru_cache(maxsize=1024)
def _convertible(vr: str | None, tag: int) -> bool:
    """``_known_vr`` for one VR and tag: asked for each empty key of every query received."""
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:  # pydicom warns and takes UN: let it
            return False
    return vr in converters


CACHED_DATASET_BYTES = 4096  # data sets up to this size have their raw elements kept
_RAW_CACHE_SIZE = 64
_raw_elements: OrderedDict[tuple[bytes, bool, bool], dict[BaseTag, RawDataElement]] = (
    OrderedDict())


def _read(data: bytes, implicit: bool, little: bool) -> Dataset:
    """``read_dataset``, through a small cache of the raw elements of recent small data sets.

    A modality sends the same query again and again, and reading it was a sixth of a worker's
    time per association. A data set read is only raw elements (immutable) unless it holds a
    sequence of undefined length: only those are kept, and each call gets a new dataset over
    its own copy of them, which it converts and changes as it likes.
    """
    key = (data, implicit, little)
    elements = _raw_elements.get(key)
    if elements is not None:
        _raw_elements.move_to_end(key)
        return Dataset(dict(elements))
    dataset = read_dataset(BytesIO(data), implicit, little)
    if len(data) > CACHED_DATASET_BYTES:
        return dataset
    kept: dict[BaseTag, RawDataElement] = {}
    for tag in tuple(dataset.keys()):
        element = dataset.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement):  # a sequence read already: mutable
            return dataset
        kept[tag] = element
    _raw_elements[key] = kept
    if len(_raw_elements) > _RAW_CACHE_SIZE:
        _raw_elements.popitem(last=False)
    return dataset


def decode_dataset(data: bytes, ts_uid: str, max_bytes: int) -> Dataset:
    """An identifier received in ``ts_uid``; elements stay raw until the application reads them."""
    implicit, little, deflated = _syntax(ts_uid)
    if deflated:
        data = _inflate(data, max_bytes)
    try:
        dataset = _read(data, implicit, little)
        _check_lengths(dataset, len(data))  # may convert a deferred value: an unknown VR raises
    except Exception as exc:  # pydicom signals malformed input with many exception types
        raise DimseError(f"undecodable identifier: {exc}") from exc
    dataset.set_original_encoding(implicit, little, dataset._character_set)
    return dataset


def _tag_bytes(tag: int, little: bool) -> bytes:
    return struct.pack("<HH" if little else ">HH", tag >> 16, tag & 0xFFFF)


class _Writer:
    """Writes a dataset with explicit sequence and item lengths in one transfer syntax."""

    def __init__(self, implicit: bool, little: bool, new_vr: bool) -> None:
        self.implicit = implicit
        self.little = little
        self.old_vr = not new_vr and not implicit
        self.item_tag = _tag_bytes(_ITEM_TAG, little)
        self.ul = struct.Struct("<L" if little else ">L")
        self.us = struct.Struct("<H" if little else ">H")

    def dataset(self, dataset: Dataset, parent_charset: str | list[str]) -> bytes:
        charset, charset_bytes = self.charset(dataset, parent_charset)
        parts = []
        for tag in sorted(dataset.keys()):
            if tag.element == 0:  # group lengths are not sent (PS3.5 §7.2)
                continue
            if tag == _SPECIFIC_CHARACTER_SET and charset_bytes is not None:
                parts.append(charset_bytes)
                continue
            raw = dataset.get_item(tag)
            if isinstance(raw, RawDataElement) and self._verbatim(raw):
                parts.append(self.header(tag, raw.VR, len(raw.value)) + raw.value)
                continue
            element = dataset[tag]
            if element.VR == "SQ":
                parts.append(self.sequence(tag, element.value or [], charset))
            else:
                parts.append(self.element(element, charset))
        return b"".join(parts)

    def charset(self, dataset: Dataset, parent_charset: str | list[str]
                ) -> tuple[str | list[str], bytes | None]:
        """The character set ``dataset``'s decoded values are written in, and its raw
        (0008,0005) as written (None: absent, or decoded and written with the others).

        A raw (0008,0005) is converted and written by pydicom once per value (``_raw_charset``),
        not once per response: pydicom takes about 0.2 ms to convert this one element, most of
        the cost of answering in a character set a policy chose (issue #17).
        """
        element = dataset.get_item(_SPECIFIC_CHARACTER_SET)
        if element is None:
            return parent_charset, None
        if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes):
            return dataset.get("SpecificCharacterSet", parent_charset), None
        return _raw_charset(element.VR, element.value, element.is_implicit_VR,
                            element.is_little_endian, self.implicit, self.little, self.old_vr)

    def _verbatim(self, raw: RawDataElement) -> bool:
        """A raw value whose bytes are right in this syntax: sent as is, padding and all."""
        if raw.VR is None or raw.value is None or len(raw.value) % 2:
            return False
        if not self.implicit and raw.VR not in _LONG_VRS and len(raw.value) > 0xFFFF:
            return False
        return raw.VR in _BYTE_ORDER_FREE_VRS or raw.is_little_endian == self.little

    def header(self, tag: int, vr: str, length: int) -> bytes:
        """Tag, VR (explicit syntaxes) and length of a non-sequence element."""
        head = _tag_bytes(tag, self.little)
        if self.implicit:
            return head + self.ul.pack(length)
        if self.old_vr and vr in ("UN", "UT"):
            vr = "OB"
        if vr in _LONG_VRS:
            return head + vr.encode() + b"\0\0" + self.ul.pack(length)
        return head + vr.encode() + self.us.pack(length)

    def sequence(self, tag: BaseTag, items: list[Dataset], charset: str | list[str]) -> bytes:
        body = b"".join(
            self.item_tag + self.ul.pack(len(encoded)) + encoded
            for encoded in (self.dataset(item, charset) for item in items)
        )
        header = _tag_bytes(tag, self.little)
        if not self.implicit:
            header += b"SQ\0\0"
        return header + self.ul.pack(len(body)) + body

    def element(self, element: DataElement, charset: str | list[str]) -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian = self.little
        fp.is_implicit_VR = self.implicit
        write_data_element(fp, element, charset)
        raw = fp.getvalue()
        if self.old_vr and raw[4:6] in (b"UN", b"UT"):
            # -u: DCMTK writes the post-1993 VRs as OB; both have a 32-bit length, same layout.
            raw = raw[:4] + b"OB" + raw[6:]
        return raw


@functools.lru_cache(maxsize=64)
def _raw_charset(vr: str | None, value: bytes, implicit_vr: bool, little_vr: bool,
                 implicit: bool, little: bool, old_vr: bool) -> tuple[str | list[str], bytes]:
    """What pydicom makes of one raw (0008,0005): its value, and the element as written.

    The same steps as for any dataset (``Dataset.get`` converts, ``_Writer.element`` writes),
    on a copy, so every response holding this value gets these very bytes.
    """
    holder = Dataset()
    holder[_SPECIFIC_CHARACTER_SET] = RawDataElement(
        BaseTag(_SPECIFIC_CHARACTER_SET), vr, len(value), value, 0, implicit_vr, little_vr)
    charset = holder.get("SpecificCharacterSet")
    writer = _Writer(implicit, little, not old_vr)
    return charset, writer.element(holder[_SPECIFIC_CHARACTER_SET], charset)


def encode_dataset(
    dataset: Dataset, ts_uid: str, *, new_vr: bool = True, compression_level: int = 6
) -> bytes:
    """An identifier in ``ts_uid`` (deflated = raw deflate of explicit VR little endian)."""
    implicit, little, deflated = _syntax(ts_uid)
    encoded = _Writer(implicit, little, new_vr).dataset(dataset, "iso8859")
    return deflate_identifier(encoded, compression_level) if deflated else encoded


def deflate_identifier(encoded: bytes, compression_level: int) -> bytes:
    """An explicit VR little endian identifier as the deflated transfer syntax sends it."""
    compressor = zlib.compressobj(compression_level, zlib.DEFLATED, -zlib.MAX_WBITS)
    encoded = compressor.compress(encoded) + compressor.flush()
    if len(encoded) % 2:  # DCMTK pads the deflated stream to even length, and needs it
        encoded += b"\0"
    return encoded
