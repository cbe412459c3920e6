"""Datasets built element by element, as pydicom leaves them after decoding (raw elements)."""

from __future__ import annotations

import io

from pydicom import Dataset, FileMetaDataset, dcmwrite
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import Tag


def raw(keyword: str, vr: str, value: bytes = b"") -> RawDataElement:
    """A raw element with explicit VR: its bytes stay as received until something converts it."""
    return RawDataElement(Tag(keyword), vr, len(value), value, 0, False, True)


def dataset(*elements: RawDataElement | DataElement) -> Dataset:
    ds = Dataset()
    for elem in elements:
        ds[elem.tag] = elem
    return ds


def sequence(keyword: str, *items: Dataset) -> DataElement:
    return DataElement(Tag(keyword), "SQ", Sequence(list(items)))


def file_bytes(ds: Dataset, transfer_syntax: str | None) -> bytes:
    """``ds`` as a file: with preamble and meta header in ``transfer_syntax``, or (None) bare."""
    buffer = io.BytesIO()
    if transfer_syntax is None:
        dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
        return buffer.getvalue()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
