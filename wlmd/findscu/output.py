"""Where responses go besides the log: ``rsp0001.dcm`` files, ``rsp0001.xml`` files, one XML file.

The files follow DCMTK's findscu: Part 10 files in the transfer syntax the response arrived
in, XML per DCMTK's ``dcm2xml.dtd`` (``data-set`` per response; ``responses`` around all of
them for ``-Xs``), numbered by the response counter that runs across the whole invocation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import escape, quoteattr

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, generate_uid

from wlmd.dicom.dump import (
    element_vr_of,
    item_length,
    tag_name,
    transfer_syntax_name,
    value_bytes,
)
from wlmd.dicom.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

# DCMTK's "private generic file" SOP class, which its findscu writes for identifiers
# (they carry no SOP Class UID of their own); kept so tools that key on it still work.
GENERIC_FILE_SOP_CLASS = "1.2.276.0.7230010.3.1.0.1"

# Specific Character Set -> XML encoding, for the per-response XML files (dcm2xml's table).
_XML_ENCODINGS = {
    "ISO_IR 6": "", "ISO_IR 100": "ISO-8859-1", "ISO_IR 101": "ISO-8859-2",
    "ISO_IR 109": "ISO-8859-3", "ISO_IR 110": "ISO-8859-4", "ISO_IR 144": "ISO-8859-5",
    "ISO_IR 127": "ISO-8859-6", "ISO_IR 126": "ISO-8859-7", "ISO_IR 138": "ISO-8859-8",
    "ISO_IR 148": "ISO-8859-9", "ISO_IR 203": "ISO-8859-15", "ISO_IR 192": "UTF-8",
    "GB18030": "GB18030", "GBK": "GBK", "ISO_IR 166": "TIS-620",
}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


class Extract(enum.Enum):
    """Which of the mutually exclusive ``-X`` modes is active."""

    NONE = "none"
    DICOM = "dicom"  # -X
    XML = "xml"  # -Xx
    XML_SINGLE = "xml-single"  # -Xs FILE


@dataclass
class Received:
    """One pending response: its identifier, the raw bytes and the transfer syntax they used."""

    number: int
    identifier: Dataset
    raw: bytes
    transfer_syntax: str


def write_dicom(path: Path, rsp: Received) -> None:
    """A Part 10 file holding the identifier exactly as received."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(GENERIC_FILE_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(rsp.transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta)
    path.write_bytes(out.getvalue() + rsp.raw)


def xml_prolog(dataset: Dataset | None) -> str:
    """``<?xml ...?>`` with the encoding that matches the dataset's Specific Character Set."""
    charset = _charset(dataset) if dataset is not None else "ISO_IR 192"
    encoding = _XML_ENCODINGS.get(charset, "")
    attr = f' encoding="{encoding}"' if encoding else ""
    return f'<?xml version="1.0"{attr}?>\n'


def _charset(dataset: Dataset) -> str:
    """The single Specific Character Set term; ISO 2022 (multi-valued) maps to none."""
    value = dataset.get("SpecificCharacterSet", "")
    return value.strip() if isinstance(value, str) else ""


def python_codec(dataset: Dataset | None) -> str:
    """The codec to write an XML file with (UTF-8 for ``-Xs``, which converts everything)."""
    if dataset is None:
        return "utf-8"
    encoding = _XML_ENCODINGS.get(_charset(dataset), "")
    return encoding.lower() or "ascii"


def write_xml_dataset(out: TextIO, rsp: Received) -> None:
    """One ``<data-set>`` element, as dcm2xml writes it."""
    name = transfer_syntax_name(rsp.transfer_syntax)
    out.write(f'<data-set xfer="{rsp.transfer_syntax}" name="{name}">\n')
    _xml_items(out, rsp.identifier, rsp.transfer_syntax)
    out.write("</data-set>\n")


def _xml_items(out: TextIO, dataset: Dataset, ts: str) -> None:
    for tag in sorted(dataset.keys()):
        vr = element_vr_of(dataset, tag)
        if vr == "SQ":
            _xml_sequence(out, dataset, Tag(tag), ts)
        else:
            _xml_element(out, dataset, Tag(tag), vr, ts)


def _xml_sequence(out: TextIO, dataset: Dataset, tag: BaseTag, ts: str) -> None:
    items = dataset[tag].value or []
    lengths = [item_length(item, ts) for item in items]
    out.write(f'<sequence tag="{tag.group:04x},{tag.element:04x}" vr="SQ" card="{len(items)}"'
              f' len="{sum(8 + n for n in lengths)}" name={quoteattr(tag_name(tag))}>\n')
    for item, length in zip(items, lengths, strict=True):
        out.write(f'<item card="{len(item)}" len="{length}">\n')
        _xml_items(out, item, ts)
        out.write("</item>\n")
    out.write("</sequence>\n")


def _xml_element(out: TextIO, dataset: Dataset, tag: BaseTag, vr: str, ts: str) -> None:
    data = value_bytes(dataset, tag, ts)
    head = f'<element tag="{tag.group:04x},{tag.element:04x}" vr="{vr}"'
    name = quoteattr(tag_name(tag))
    if vr in _BINARY_VRS:
        vm = 1 if data else 0
        out.write(f'{head} vm="{vm}" len="{len(data)}" name={name} binary="hidden">'
                  "</element>\n")
        return
    values = _xml_values(dataset, tag, vr, data)
    out.write(f'{head} vm="{len(values) if data else 0}" len="{len(data)}" name={name}>'
              f"{escape(chr(92).join(values), {chr(34): '&quot;', chr(39): '&apos;'})}"
              "</element>\n")


def _xml_values(dataset: Dataset, tag: BaseTag, vr: str, data: bytes) -> list[str]:
    """The element's values as decoded text without padding (DCMTK prints them normalised)."""
    if not data:
        return [""]
    element = dataset[tag]
    values = list(element.value) if element.VM > 1 else [element.value]
    if vr in {"FL", "FD"}:
        return [f"{v:.8g}" for v in values]
    if vr == "AT":
        return [f"({Tag(v).group:04x},{Tag(v).element:04x})" for v in values]
    return [str(v).rstrip("\0 ") for v in values]
