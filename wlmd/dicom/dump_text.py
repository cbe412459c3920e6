"""Datasets read from DCMTK's dump text: ``dump2dcm`` input, ``dcmdump`` output, ``-rfp`` files.

One element per line, ``(gggg,eeee) VR value``, the value bare or in brackets and optionally
followed by dcmdump's ``# length, VM Name`` comment; ``SQ`` opens a sequence, ``(fffe,e000)``
an item, ``(fffe,e00d)`` and ``(fffe,e0dd)`` close them. Text values keep their bytes (the
file's character set is the dataset's own, as with dump2dcm), so every string element becomes
a raw element that pydicom decodes later with (0008,0005). The meta header (group 0002) is
left out: a worklist file's header is written anew.
"""

from __future__ import annotations

import re
import struct

from pydicom import Dataset
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from wlmd.dicom.dump import element_vr

_LINE = re.compile(rb"^\s*\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)\s*([A-Za-z]{2}|-)?\s?(.*)$")
_COMMENT = re.compile(rb"\s+#\s*(?:\d+|u/l),\s*\d+(?:\s.*)?$")
_NUMBERS = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l", "FL": "<f", "FD": "<d",
            "UV": "<Q", "SV": "<q"}
_BINARY = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
ITEM, ITEM_END, SEQUENCE_END = Tag(0xFFFE, 0xE000), Tag(0xFFFE, 0xE00D), Tag(0xFFFE, 0xE0DD)


class DumpSyntaxError(ValueError):
    """A line of dump text that cannot be read; the message names the line."""


def parse_dump(text: bytes) -> Dataset:
    """The dataset that ``text`` describes (raises DumpSyntaxError on a malformed line)."""
    root = Dataset()
    stack: list[tuple[Dataset, Sequence | None]] = [(root, None)]  # (dataset, open sequence)
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(b"#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise DumpSyntaxError(f"line {number}: not a dump element line")
        tag = Tag(int(match.group(1), 16), int(match.group(2), 16))
        vr = (match.group(3) or b"").decode("ascii").upper()
        value = _COMMENT.sub(b"", match.group(4)).strip()
        current, sequence = stack[-1]
        if tag == ITEM:
            if sequence is None:
                raise DumpSyntaxError(f"line {number}: item outside a sequence")
            item = Dataset()
            sequence.append(item)
            stack.append((item, None))
        elif tag in (ITEM_END, SEQUENCE_END):
            if len(stack) == 1:
                raise DumpSyntaxError(f"line {number}: delimiter without an open item/sequence")
            stack.pop()
        elif tag.group == 0x0002:
            continue
        elif (vr or element_vr(tag)) == "SQ":
            items = Sequence()
            current.add(DataElement(tag, "SQ", items))
            # the sequence is open until its delimiter; items are read into it
            stack.append((current, items))
        elif tag in current:
            continue  # dump2dcm keeps the first of two equal tags
        else:
            if not vr or vr in ("NA", "-"):
                vr = element_vr(tag)
            try:
                current[tag] = _element(tag, vr, _value_text(value))
            except (ValueError, struct.error) as error:
                raise DumpSyntaxError(f"line {number}: {error}") from None
    return root


def _value_text(value: bytes) -> bytes:
    """The value between the brackets (dcmdump), or as written (dump2dcm input)."""
    if value == b"(no value available)":
        return b""
    if value.startswith(b"[") and value.endswith(b"]"):
        return value[1:-1]
    return value


def _element(tag: BaseTag, vr: str, value: bytes) -> RawDataElement | DataElement:
    """One leaf element: numbers packed, binary hex decoded, text kept as bytes."""
    if vr in _NUMBERS:
        fmt = _NUMBERS[vr]
        parts = value.split(b"\\") if value else []
        numbers = [float(p) if fmt in ("<f", "<d") else int(p, 0) for p in parts]
        data = b"".join(struct.pack(fmt, n) for n in numbers)
    elif vr in _BINARY:
        data = bytes(int(p, 16) for p in value.split(b"\\")) if value else b""
        if vr == "OW":
            data = b"".join(struct.pack("<H", int(p, 16)) for p in value.split(b"\\")) \
                if value else b""
    else:
        if vr == "UI" and value.startswith(b"="):
            data = _uid_named(value[1:].decode("ascii", "replace")).encode("ascii")
        else:
            data = value
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
    return RawDataElement(tag, vr, len(data), data, 0, False, True)


def _uid_named(keyword: str) -> str:
    """dcmdump prints well-known UIDs as ``=Name``; this is the UID again where the name is
    pydicom's keyword or name too (DCMTK's own names differ for some)."""
    for uid, entry in UID_dictionary.items():
        if entry[4] == keyword or entry[0].replace(" ", "") == keyword:
            return uid
    raise ValueError(f"unknown UID name ={keyword} (dcmdump -Un prints UIDs as numbers)")
