"""Datasets as text in the layout of DCMTK's dcmdump, for request files and client output.

Administrators read request files and findscu output side by side with DCMTK's, so the layout
(tag, VR, value padded to a fixed column, ``# length, VM Name``) follows dcmdump's.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

TRANSFER_SYNTAX_NAMES = {
    ImplicitVRLittleEndian: "Little Endian Implicit",
    ExplicitVRLittleEndian: "Little Endian Explicit",
    ExplicitVRBigEndian: "Big Endian Explicit",
    DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
}

_VALUE_COLUMN_WIDTH = 40  # dcmdump pads "[value]" to this width before " # "
_MAX_VALUE_TEXT = 70  # longer value texts are cut and end in "..."
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}


def dump_request(identifier: Dataset, transfer_syntax_uid: str) -> str:
    """The text wlmscpfs writes to a request file: two header comments, then the dataset."""
    ts_name = TRANSFER_SYNTAX_NAMES.get(transfer_syntax_uid, transfer_syntax_uid)
    lines = ["", "# Dicom-Data-Set", f"# Used TransferSyntax: {ts_name}"]
    lines += dump_lines(identifier)
    return "\n".join(lines) + "\n"


def dump_lines(dataset: Dataset, level: int = 0) -> list[str]:
    """One dcmdump line per element, recursing into sequences with two spaces per level."""
    lines: list[str] = []
    for element in dataset:
        if element.VR == "SQ":
            items = element.value or []
            lines.append(_line(element.tag, "SQ",
                               f"(Sequence with explicit length #={len(items)})",
                               _sequence_length(element), 1, level))
            for item in items:
                lines.append(_line(0xFFFEE000, "na", f"(Item with explicit length #={len(item)})",
                                   _encoded_length(item), 1, level + 1, "Item"))
                lines += dump_lines(item, level + 2)
                lines.append(_line(0xFFFEE00D, "na", "(ItemDelimitationItem for re-encoding)",
                                   0, 0, level + 1, "ItemDelimitationItem"))
            lines.append(_line(0xFFFEE0DD, "na", "(SequenceDelimitationItem for re-encod.)",
                               0, 0, level, "SequenceDelimitationItem"))
        else:
            text, length, vm = _value_text(element)
            lines.append(_line(element.tag, element.VR, text, length, vm, level))
    return lines


def _line(tag: int, vr: str, text: str, length: int, vm: int, level: int,
          name: str | None = None) -> str:
    if len(text) > _MAX_VALUE_TEXT:
        text = text[: _MAX_VALUE_TEXT - 3] + "..."
    group, elem = tag >> 16, tag & 0xFFFF
    name = name or keyword_for_tag(tag) or "Unknown Tag & Data"
    head = f"{'  ' * level}({group:04x},{elem:04x}) {vr} {text.ljust(_VALUE_COLUMN_WIDTH)}"
    return f"{head} # {length:3d},{vm:2d} {name}"


def _value_text(element: DataElement) -> tuple[str, int, int]:
    """The printed value, its encoded length and its VM, as dcmdump shows them."""
    raw = _raw_bytes(element)
    if not raw:
        return "(no value available)", 0, 0
    if element.VR in _BINARY_VRS:
        return "\\".join(f"{b:02x}" for b in raw[:32]), len(raw), 1
    values = element.value if element.VM > 1 else [element.value]
    if element.VR in _NUMERIC_VRS:
        return "\\".join(str(v) for v in values), len(raw), element.VM
    return f"[{raw.decode('latin-1').rstrip(' ').rstrip(chr(0))}]", len(raw), element.VM


def _raw_bytes(element: DataElement) -> bytes:
    """The element's value bytes, even-padded as on the wire."""
    value = element.value
    if value is None or value == "" or value == []:
        return b""
    if isinstance(value, bytes):
        raw = value
    elif element.VR in _NUMERIC_VRS:
        width = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "UV": 8, "SV": 8,
                 "AT": 4}[element.VR]
        return b"\0" * (width * element.VM)
    else:
        values = value if element.VM > 1 else [value]
        raw = "\\".join(str(v) for v in values).encode("utf-8", "replace")
    return raw + b" " * (len(raw) % 2)


def _encoded_length(item: Dataset) -> int:
    """Explicit-VR little endian length of an item's content, as dcmdump reports it."""
    total = 0
    for element in item:
        if element.VR == "SQ":
            total += 12 + _sequence_length(element)
        else:
            header = 12 if element.VR in _BINARY_VRS | {"SQ", "UT", "UR", "UC"} else 8
            total += header + len(_raw_bytes(element))
    return total


def _sequence_length(element: DataElement) -> int:
    return sum(8 + _encoded_length(item) for item in element.value or [])
