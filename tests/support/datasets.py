"""Datasets built element by element, as pydicom leaves them after decoding (raw elements)."""

from __future__ import annotations

from pydicom import Dataset
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
