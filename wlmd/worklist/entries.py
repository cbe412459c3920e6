"""A new worklist entry made ready to write: filled in, encoded, checked.

``wlmctl add`` and the HTTP entry API take entries from people and programs; both fill in what
a user may leave out (Specific Character Set when a value needs it, Study Instance UID,
Requested Procedure ID, SPS ID, empty type-2 attributes), encode the entry exactly as it will
be stored, read it back as wlmd will, and refuse it when wlmd would skip it or a modality could
not read it (``wlmd.worklist.lint``), or when its SPS ID is already used by another entry.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import generate_uid

from wlmd.worklist import keys
from wlmd.worklist.completeness import raw_value, sequence_of
from wlmd.worklist.lint import (
    SPS_TYPE2,
    TOP_TYPE2,
    Problem,
    Severity,
    check_dataset,
    duplicates,
    read_entry,
)
from wlmd.worklist.query import STRING_VRS, element_vr
from wlmd.worklist.records import Unreadable, parse_worklist_file
from wlmd.worklist.store import is_worklist_name
from wlmd.worklist.writer import encode_entry, safe_file_name

STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
REQUESTED_PROCEDURE_ID = Tag(0x0040, 0x1001)
ACCESSION_NUMBER = Tag(0x0008, 0x0050)
UTF8 = "ISO_IR 192"


class EntryRefused(ValueError):
    """The entry cannot be written; ``problems`` says why, one line each (no patient data
    beyond the attribute names and the entry's file name)."""

    def __init__(self, problems: list[str], name: str | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.name = name  # the entry's file name, when the problems are the entry's own


@dataclass
class PreparedEntry:
    """An entry ready for the writer: its file name, its bytes and what was done to it."""

    name: str
    data: bytes
    dataset: Dataset
    filled: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def prepare_entry(dataset: Dataset, name: str | None = None) -> PreparedEntry:
    """Fill in, encode and check one entry; raises EntryRefused with the findings."""
    filled = fill_in(dataset)
    data, parsed = canonical(dataset)
    name = name or default_file_name(parsed)
    if not is_worklist_name(name) or "/" in name or name.startswith("."):
        raise EntryRefused([f"not a worklist file name: {name!r} (it must end in .wl)"])
    problems = check_dataset(parsed)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        raise EntryRefused([f"{p.attribute}: {p.reason}" for p in errors], name)
    return PreparedEntry(name, data, parsed, filled, problems)


def default_file_name(dataset: Dataset) -> str:
    """``<accession>_<SPS ID>.wl``, made safe; both are filled in or required before this."""
    steps = sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE) or [Dataset()]
    return safe_file_name(_text(dataset, ACCESSION_NUMBER), _text(steps[0], keys.SPS_ID))


def refuse_duplicates(directory: Path, entries: Iterable[PreparedEntry],
                      replacing: bool = False) -> None:
    """Refuse SPS IDs (or study UIDs of other procedures) that other entries already use.

    An entry being replaced (same file name) does not count against its successor.
    """
    new_entries = list(entries)
    names = [entry.name for entry in new_entries]
    if len(set(names)) != len(names):
        raise EntryRefused(["two of the entries would have the same file name"])
    existing: dict[Path, Dataset] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if is_worklist_name(path.name) and path.name not in names:
                try:
                    existing[path] = read_entry(path)
                except Unreadable:
                    continue
    new = {directory / entry.name: entry.dataset for entry in new_entries}
    clashes = [f for f in duplicates({**existing, **new}) if f.path in new]
    if clashes:
        raise EntryRefused([f"{f.path.name}: {f.attribute}: {f.reason}" for f in clashes])


def fill_in(dataset: Dataset) -> list[str]:
    """Add what the user may omit; returns the keywords filled (for the user to see)."""
    filled = []
    if keys.SPECIFIC_CHARACTER_SET not in dataset and _needs_unicode(dataset):
        dataset.SpecificCharacterSet = UTF8
        filled.append("SpecificCharacterSet")
    if not _present(dataset, STUDY_INSTANCE_UID):
        dataset.StudyInstanceUID = generate_uid()
        filled.append("StudyInstanceUID")
    if not _present(dataset, REQUESTED_PROCEDURE_ID):
        dataset.RequestedProcedureID = _new_id("R")
        filled.append("RequestedProcedureID")
    for step in sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE) or ():
        if not _present(step, keys.SPS_ID):
            step.ScheduledProcedureStepID = _new_id("S")
            filled.append("ScheduledProcedureStepID")
        filled += _empty_type2(step, SPS_TYPE2)
    filled += _empty_type2(dataset, TOP_TYPE2)
    return filled


def _present(dataset: Dataset, tag: BaseTag) -> bool:
    return bool((raw_value(dataset, tag) or b"").strip(b" \0"))


def _new_id(prefix: str) -> str:
    """A fresh SH value (16 characters), unique enough never to collide in one worklist."""
    return prefix + secrets.token_hex(7).upper() + "0"


def _empty_type2(dataset: Dataset, tags: tuple[BaseTag, ...]) -> list[str]:
    """Type-2 attributes added empty: modalities that insist on them see them."""
    added = []
    for tag in tags:
        if dataset.get_item(tag) is None:
            element = DataElement(tag, "SQ", Sequence()) if tag in (
                keys.REFERENCED_STUDY_SEQUENCE, keys.REFERENCED_PATIENT_SEQUENCE) else \
                DataElement(tag, dictionary_VR(tag), "")
            dataset.add(element)
            added.append(str(element.keyword))
    return added


def _needs_unicode(dataset: Dataset) -> bool:
    """True if any text value is beyond ASCII (so the entry must declare a character set)."""
    for tag in dataset.keys():  # noqa: SIM118 (keys() keeps elements raw)
        element = dataset.get_item(tag)
        vr = element_vr(element)
        if vr == "SQ":
            if any(_needs_unicode(item) for item in dataset[tag].value or ()):
                return True
        elif vr in STRING_VRS and _non_ascii(element):
            return True
    return False


def _non_ascii(element: DataElement | RawDataElement) -> bool:
    if isinstance(element, RawDataElement):
        return any(byte >= 0x80 for byte in element.value or b"")
    return any(ord(ch) > 0x7F for ch in _as_text(element.value))


def _as_text(value: object) -> str:
    if value is None or isinstance(value, bytes):
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "__iter__"):
        return "\\".join(str(v) for v in value)
    return str(value)


def canonical(dataset: Dataset) -> tuple[bytes, Dataset]:
    """The ``.wl`` bytes of an entry and the dataset wlmd will read back from them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = encode_entry(dataset)
            parsed, _body = parse_worklist_file(data)
        except (Unreadable, ValueError, TypeError, OverflowError, NotImplementedError) as error:
            raise EntryRefused([f"the entry cannot be encoded: {error}"]) from None
    lossy = [str(w.message) for w in caught if "encode" in str(w.message).lower()]
    if lossy:
        raise EntryRefused([f"the declared SpecificCharacterSet cannot encode every value "
                            f"({lossy[0]})"])
    return data, parsed


def _text(dataset: Dataset, tag: BaseTag) -> str:
    element = dataset.get(tag)
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \0")
