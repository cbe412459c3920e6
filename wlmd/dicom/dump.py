"""Datasets printed the way DCMTK prints them (``DcmDataset::print``): findscu's log and
wlmscpfs's request files.

Values are shown exactly as they arrived, padding included; each sequence and item is reported
as encoded on the wire (explicit or undefined length), with lengths in the negotiated transfer
syntax. People diff this output against DCMTK's.

DCMTK prints value bytes as they are, whatever the character set, and pads the value column
by bytes. Here bytes are decoded as UTF-8 with ``surrogateescape`` (any other byte, such as
Latin-1 0xC1, becomes a lone surrogate), columns are padded by encoded length, and
``byte_exact`` lets a text stream write those bytes back out unchanged.
"""

from __future__ import annotations

import io
import struct
from typing import TextIO

from pydicom import Dataset
from pydicom.datadict import dictionary_is_retired, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

TRANSFER_SYNTAX_NAMES: dict[str, str] = {
    ImplicitVRLittleEndian: "Little Endian Implicit",
    ExplicitVRLittleEndian: "Little Endian Explicit",
    ExplicitVRBigEndian: "Big Endian Explicit",
    DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
}

_VALUE_WIDTH = 40  # DCM_OptPrintValueLength: the value column is padded to this width
ENCODING, ESCAPE = "utf-8", "surrogateescape"  # round-trips every byte of a value
_SINGLE_VALUED = {"LT", "ST", "UT", "UR", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_STRUCT = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d",
           "UV": "Q", "SV": "q"}
_WORDS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def element_vr(tag: BaseTag) -> str:
    """The VR DCMTK's dictionary would give ``tag``: private creators are LO, unknowns UN."""
    if tag.is_private:
        return "LO" if tag.is_private_creator else "UN"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def dump_request(identifier: Dataset, transfer_syntax: str) -> str:
    """The text of a wlmscpfs request file (``-rfp``): a blank line, then the dataset."""
    return "\n".join(["", *dump_dataset(identifier, transfer_syntax)]) + "\n"


def byte_exact(stream: TextIO) -> TextIO:
    """``stream`` set to write dumped value bytes as received (UTF-8 with surrogateescape).

    A stream that cannot be reconfigured (a test's capture, a ``StringIO``) is returned as is.
    """
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(encoding=ENCODING, errors=ESCAPE)
    return stream


def transfer_syntax_name(uid: str) -> str:
    """DCMTK's name for a transfer syntax, as in ``# Used TransferSyntax: ...``."""
    return TRANSFER_SYNTAX_NAMES.get(uid, "Unknown Transfer Syntax")


def dump_dataset(dataset: Dataset, transfer_syntax: str, *, built: bool = False,
                 response: bool = False) -> list[str]:
    """The lines of ``DcmDataset::print``: two header comments, then one line per element.

    ``built``: the dataset was made in memory (``-k`` only), where DCMTK has not computed
    sequence and item lengths yet and prints 0 for them. ``response``: a response wlmscpfs
    built from its file's values, as C strings: its top-level UIDs show no NUL padding.
    """
    header = ["# Dicom-Data-Set", f"# Used TransferSyntax: {transfer_syntax_name(transfer_syntax)}"]
    return header + _dump_items(dataset, _Encoding.of(transfer_syntax, built), 0, response)


def dump_elements(dataset: Dataset, transfer_syntax: str) -> list[str]:
    """One line per element, without the header (wlmscpfs's "Status Detail")."""
    return _dump_items(dataset, _Encoding.of(transfer_syntax), 0)


class _Encoding:
    """How lengths are computed: the negotiated transfer syntax's VR mode and byte order."""

    def __init__(self, implicit: bool, little: bool, built: bool = False) -> None:
        self.implicit = implicit
        self.little = little
        self.built = built

    @classmethod
    def of(cls, uid: str, built: bool = False) -> _Encoding:
        return cls(uid == ImplicitVRLittleEndian, uid != ExplicitVRBigEndian, built)

    def stream(self) -> DicomBytesIO:
        out = DicomBytesIO()
        out.is_implicit_VR = self.implicit
        out.is_little_endian = self.little
        return out


def _dump_items(dataset: Dataset, enc: _Encoding, level: int,
                response: bool = False) -> list[str]:
    lines: list[str] = []
    for tag in sorted(dataset.keys()):
        if element_vr_of(dataset, tag) == "SQ":
            lines += _dump_sequence(dataset[tag], enc, level)
        else:
            lines.append(_leaf_line(dataset, tag, enc, level, response))
    return lines


def _dump_sequence(element: DataElement, enc: _Encoding, level: int) -> list[str]:
    items = element.value or []
    undefined = bool(element.is_undefined_length)
    kind = "undefined" if undefined else "explicit"
    length = None if undefined else sum(8 + _item_length(item, enc) for item in items)
    if enc.built:
        length = 0
    lines = [_line(element.tag, "SQ", f"(Sequence with {kind} length #={len(items)})",
                   length, 1, level)]
    for item in items:
        item_undefined = bool(getattr(item, "is_undefined_length_sequence_item", False))
        item_kind = "undefined" if item_undefined else "explicit"
        lines.append(_line(Tag(0xFFFEE000), "na", f"(Item with {item_kind} length #={len(item)})",
                           None if item_undefined else _item_length(item, enc), 1, level + 1,
                           "Item"))
        lines += _dump_items(item, enc, level + 2)
        suffix = "" if item_undefined else " for re-encoding"
        lines.append(_line(Tag(0xFFFEE00D), "na", f"(ItemDelimitationItem{suffix})", 0, 0,
                           level + 1, "ItemDelimitationItem"))
    suffix = "" if undefined else " for re-encod."
    lines.append(_line(Tag(0xFFFEE0DD), "na", f"(SequenceDelimitationItem{suffix})", 0, 0, level,
                       "SequenceDelimitationItem"))
    return lines


def _item_length(item: Dataset, enc: _Encoding) -> int:
    return 0 if enc.built else item_length(item, _uid_of(enc))


def item_length(item: Dataset, transfer_syntax: str) -> int:
    """An item's content length with explicit-length sequences, as DCMTK computes it."""
    implicit = transfer_syntax == ImplicitVRLittleEndian
    total = 0
    for tag in sorted(item.keys()):
        vr = element_vr_of(item, tag)
        if vr == "SQ":
            value = sum(8 + item_length(sub, transfer_syntax) for sub in item[tag].value or [])
        else:
            value = len(value_bytes(item, tag, transfer_syntax))
        total += (8 if implicit else _explicit_header(vr)) + value
    return total


def value_bytes(dataset: Dataset, tag: BaseTag, enc_uid: str) -> bytes:
    """An element's value bytes as sent (even length), whether received raw or built locally."""
    raw = dataset.get_item(tag)
    if isinstance(raw, RawDataElement):
        return raw.value or b""
    enc = _Encoding.of(enc_uid)
    out = enc.stream()
    write_data_element(out, dataset[tag])
    data = out.getvalue()
    header = 8 if enc.implicit or len(data) < 12 else _explicit_header(dataset[tag].VR)
    return data[header:]


def _explicit_header(vr: str) -> int:
    return 12 if vr in {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UT", "UN", "UC", "UR",
                        "SV", "UV"} else 8


def element_vr_of(dataset: Dataset, tag: BaseTag) -> str:
    """The element's VR without converting a raw element (implicit VR has none: ask the dict)."""
    raw = dataset.get_item(tag)
    if isinstance(raw, RawDataElement):
        return raw.VR or element_vr(Tag(tag))
    return dataset[tag].VR


def _leaf_line(dataset: Dataset, tag: BaseTag, enc: _Encoding, level: int,
               response: bool = False) -> str:
    vr = element_vr_of(dataset, tag)
    data = value_bytes(dataset, tag, _uid_of(enc))
    if not data:
        return _line(tag, vr, "(no value available)", 0, 0, level)
    if isinstance(dataset.get_item(tag), RawDataElement):
        shown = data.rstrip(b"\0") if response and vr == "UI" else data
        text, vm = _raw_text(vr, shown, enc.little)
    else:
        text, vm = _local_text(dataset[tag])
    return _line(tag, vr, text, len(data), vm, level)


def _uid_of(enc: _Encoding) -> str:
    if enc.implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if enc.little else ExplicitVRBigEndian


def _raw_text(vr: str, data: bytes, little: bool) -> tuple[str, int]:
    """Printed value and VM of bytes received from the network, shown verbatim."""
    order = "<" if little else ">"
    if vr in _STRUCT:
        size = struct.calcsize(_STRUCT[vr])
        count = len(data) // size
        values = struct.unpack(f"{order}{count}{_STRUCT[vr]}", data[: count * size])
        return "\\".join(_number(v) for v in values), count
    if vr == "AT":
        words = struct.unpack(f"{order}{len(data) // 2}H", data[: len(data) // 2 * 2])
        pairs = [f"({words[i]:04x},{words[i + 1]:04x})" for i in range(0, len(words) - 1, 2)]
        return "\\".join(pairs), len(pairs)
    if vr in _WORDS or vr in {"OB", "UN"}:
        width = _WORDS.get(vr, 1)
        chunks = [data[i : i + width] for i in range(0, len(data), width)]
        text = "\\".join(_hex_word(chunk, little) for chunk in chunks)
        return text, 1
    text = data.decode(ENCODING, ESCAPE)
    vm = 1 if vr in _SINGLE_VALUED else text.count("\\") + 1
    return f"[{text}]", vm


def _hex_word(chunk: bytes, little: bool) -> str:
    return (chunk[::-1] if little else chunk).hex()


def _number(value: float) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)


def _local_text(element: DataElement) -> tuple[str, int]:
    """Printed value and VM of an element built from the command line (shown unpadded)."""
    values = list(element.value) if element.VM > 1 else [element.value]
    if element.VR in _STRUCT:
        return "\\".join(_number(v) for v in values), len(values)
    if isinstance(element.value, bytes):
        return "\\".join(f"{b:02x}" for b in element.value), 1
    return "[" + "\\".join(str(v) for v in values) + "]", len(values)


def _line(tag: BaseTag, vr: str, text: str, length: int | None, vm: int, level: int,
          name: str | None = None) -> str:
    tag = Tag(tag)
    shown_length = "u/l" if length is None else f"{length:3d}"
    padding = " " * (_VALUE_WIDTH - len(text.encode(ENCODING, ESCAPE)))
    head = f"{'  ' * level}({tag.group:04x},{tag.element:04x}) {vr} {text}{padding}"
    return f"{head} # {shown_length},{vm:2d} {name or tag_name(tag)}"


def tag_name(tag: BaseTag) -> str:
    """DCMTK's dictionary name for a tag (``RETIRED_`` before a retired keyword), or its
    placeholders for private and unknown tags."""
    tag = Tag(tag)
    if tag.is_private_creator:
        return "PrivateCreator"
    keyword = keyword_for_tag(tag)
    if not keyword:
        return "Unknown Tag & Data"
    return f"RETIRED_{keyword}" if dictionary_is_retired(tag) else keyword
