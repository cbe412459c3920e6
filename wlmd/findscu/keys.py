"""The ``-k`` override keys: tags, dictionary names and DCMTK's sequence path notation.

``-k '(0040,0100)[0].Modality=CT'`` walks into item 0 of the Scheduled Procedure Step
Sequence (creating the sequence and items as needed) and sets Modality there. A key without
``=`` sends the attribute with zero length. Errors carry DCMTK's wording because scripts and
people compare the two clients' messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from wlmd.dicom.dump import element_vr

_TAG = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)")
_OLD_TAG = re.compile(r"([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ITEM = re.compile(r"\[(\d+)\]")
_NUMERIC_VRS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int,
                "FL": float, "FD": float, "DS": None, "IS": None}


class BadKeyPath(ValueError):
    """A ``-k`` argument that cannot be parsed; ``str()`` is DCMTK's reason text."""


@dataclass(frozen=True)
class Step:
    """One path component: a tag and, for sequences, the item index that follows it."""

    tag: BaseTag
    item: int | None = None


@dataclass(frozen=True)
class OverrideKey:
    """A parsed ``-k``: the path to the attribute and its value (``None``: zero length)."""

    text: str
    steps: tuple[Step, ...]
    value: str | None


def parse_key(text: str) -> OverrideKey:
    """Parse one ``-k`` argument; raises :class:`BadKeyPath` with DCMTK's reason."""
    path, sep, value = text.partition("=")
    steps: list[Step] = []
    rest = path
    while True:
        tag, rest = _parse_tag(rest)
        is_sequence = element_vr(tag) == "SQ"
        if not rest:
            steps.append(Step(tag))
            break
        if not is_sequence:
            raise BadKeyPath("Invalid Path: Non-sequence tag found with rest path following")
        match = _ITEM.match(rest)
        if match is None:
            raise BadKeyPath(f"Unable to parse item number at beginning of path: {rest}")
        steps.append(Step(tag, int(match.group(1))))
        rest = rest[match.end():]
        if not rest:
            break
        if not rest.startswith("."):
            raise BadKeyPath(f"Unable to parse tag/dictionary name at beginning of path: {rest}")
        rest = rest[1:]
    return OverrideKey(text, tuple(steps), value if sep else None)


def _parse_tag(path: str) -> tuple[BaseTag, str]:
    """The tag at the start of ``path`` and what follows it."""
    if path.startswith("("):
        match = _TAG.match(path)
        if match is None:
            raise BadKeyPath(f"Unable to parse tag at beginning of path: {path}")
        return Tag(int(match.group(1), 16), int(match.group(2), 16)), path[match.end():]
    match = _OLD_TAG.match(path)
    if match is not None:
        return Tag(int(match.group(1), 16), int(match.group(2), 16)), path[match.end():]
    match = _NAME.match(path)
    tag = tag_for_keyword(match.group(0)) if match else None
    if match is None or tag is None:
        raise BadKeyPath(f"Unable to parse tag/dictionary name at beginning of path: {path}")
    return Tag(tag), path[match.end():]


def apply_key(dataset: Dataset, key: OverrideKey) -> None:
    """Insert or replace the attribute ``key`` names, creating sequences and items on the way."""
    current = dataset
    for step in key.steps:
        if step.item is None:
            _put(current, step.tag, key.value)
            return
        current = _item(current, step.tag, step.item)


def _item(dataset: Dataset, tag: BaseTag, index: int) -> Dataset:
    """Item ``index`` of sequence ``tag``, created (with any items before it) when absent."""
    if tag not in dataset or dataset[tag].VR != "SQ" or dataset[tag].value is None:
        dataset[tag] = DataElement(tag, "SQ", Sequence())
    items = dataset[tag].value
    while len(items) <= index:
        items.append(Dataset())
    item: Dataset = items[index]
    return item


def _put(dataset: Dataset, tag: BaseTag, value: str | None) -> None:
    """Set a leaf attribute from its command line text, converting numbers for binary VRs."""
    vr = element_vr(tag)
    if vr == "SQ":
        if tag not in dataset:
            dataset[tag] = DataElement(tag, "SQ", Sequence())
        return
    if not value:
        dataset[tag] = DataElement(tag, vr, None if vr in _NUMERIC_VRS else "")
        return
    convert = _NUMERIC_VRS.get(vr)
    parts = value.split("\\")
    if convert is not None:
        try:
            numbers = [convert(part) for part in parts]
        except ValueError:
            raise BadKeyPath(f"Invalid value for {vr} element: {value}") from None
        dataset[tag] = DataElement(tag, vr, numbers if len(numbers) > 1 else numbers[0])
    elif vr in {"OB", "OW", "UN"}:
        dataset[tag] = DataElement(tag, vr, value.encode("latin-1", "replace"))
    else:
        dataset[tag] = DataElement(tag, vr, value)
