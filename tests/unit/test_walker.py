"""The quick first-start parser gives exactly what pydicom's reading gives, or stands aside.

Each file is loaded twice, with the walker and with pydicom only: the record (bytes, sort key,
index keys, packed matching keys, where the dataset starts) and every log line must be the
same, for well-formed files and for truncated and damaged copies of them.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.support.datasets import file_bytes
from tests.support.worklists import worklist_dataset
from wlmd.dicom.rawfile import NotRaw, RawLevel, RawSequence
from wlmd.worklist import compact, completeness, index, records, walker
from wlmd.worklist.walker import walk

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "worklists").rglob("*.wl"))
MUTANTS_PER_FILE = 12


def mutants(data: bytes, seed: int) -> Iterator[bytes]:
    """Truncated copies, copies with one byte changed, and one with junk appended."""
    rnd = random.Random(seed)
    for _ in range(MUTANTS_PER_FILE // 2):
        yield data[:rnd.randrange(1, len(data))]
        at = rnd.randrange(len(data))
        changed = rnd.choice([0, 0xFF, data[at] ^ 1, data[at] ^ 0x80])
        yield data[:at] + bytes([changed]) + data[at + 1:]
    yield data + bytes(rnd.randrange(1, 9))


def load(path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
         walker: bool) -> tuple[object, ...]:
    """What loading ``path`` gives and logs, with or without the walker."""
    caplog.clear()
    with monkeypatch.context() as patch:
        if not walker:
            patch.setattr(records, "walk", lambda data: None)
        loader = records.FileLoader(str(path.parent), file_reject=True, max_file_bytes=1 << 20)
        entry, parsed = loader.load(str(path), path.name, os.stat(path), False,
                                    os.path.realpath(path.parent))
    assert entry is not None
    record = entry.record
    found = None if record is None else (record.data, record.sort_key,
                                         record.add_references, record.body, entry.filing)
    return found, parsed, [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def test_the_walker_reads_the_common_layouts_and_leaves_the_rest_to_pydicom() -> None:
    entry = worklist_dataset("A1")
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        data = file_bytes(worklist_dataset("A1"), syntax)
        walked = walk(data)
        assert walked is not None
        dataset, (offset, implicit, little) = walked
        body = records.parse_worklist_file(data)[1]
        assert body is not None and offset == body[0]
        assert (implicit, little) == (syntax == ImplicitVRLittleEndian, True)
        assert dataset[Tag(0x00100020)].value.rstrip(b" ") == entry.PatientID.encode()
        step = dataset[Tag(0x00400100)].value[0]
        assert step[Tag(0x00080060)].value.rstrip(b" ") == \
            entry.ScheduledProcedureStepSequence[0].Modality.encode()
    assert walk(file_bytes(worklist_dataset("A1"), ExplicitVRBigEndian)) is None
    assert walk(file_bytes(worklist_dataset("A1"), None)) is None  # no meta header
    whole = file_bytes(worklist_dataset("A1"), ExplicitVRLittleEndian)
    assert walk(whole[:-1]) is None  # truncated: pydicom words the refusal
    assert all(walk(path.read_bytes()) is not None for path in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES[::3], ids=lambda path: path.name)
def test_walked_and_pydicom_loads_agree_on_files_and_their_damaged_copies(
        path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    latin1 = worklist_dataset("A2")
    latin1.PatientName = "ÄRZTIN^ÉVA"
    implicit = file_bytes(latin1, ImplicitVRLittleEndian)
    data = path.read_bytes()
    copies = [data, *mutants(data, seed=len(data)), implicit, *mutants(implicit, seed=len(data))]
    for number, copy in enumerate(copies):
        target = tmp_path / f"{number:03d}.wl"
        target.write_bytes(copy)
        with_walker = load(target, caplog, monkeypatch, walker=True)
        assert with_walker == load(target, caplog, monkeypatch, walker=False), number


def _shape(found: object) -> object:
    """Everything a walk gave, as plain values: levels, tag objects, elements, sequences."""
    if isinstance(found, dict):
        return type(found), [(int(tag), type(tag), _shape(value)) for tag, value in found.items()]
    if isinstance(found, tuple | list):
        return type(found), [_shape(value) for value in found]
    return type(found), found


def test_the_quick_reader_gives_what_the_element_reader_gives_or_stands_aside(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The explicit VR little endian reader is ``ElementReader`` unrolled: on every example
    and damaged copy, ``walk`` gives the same levels with it as without it."""
    explicit = [path.read_bytes() for path in EXAMPLES[::2]]
    explicit.append(file_bytes(worklist_dataset("A1"), ExplicitVRLittleEndian))
    taken = 0
    for data in explicit:
        for copy in (data, *mutants(data, seed=len(data))):
            quick = walk(copy)
            with monkeypatch.context() as patch:
                patch.setattr(walker, "_walk_explicit", _stand_aside)
                general = walk(copy)
            assert _shape(quick) == _shape(general)
            taken += copy is data and quick is not None
    assert taken == len(explicit)  # every undamaged one read by the quick reader


def _stand_aside(data: bytes) -> tuple[RawLevel, walker.Body]:
    raise NotRaw("the general reader only")


def _levels(level: Dataset | RawLevel) -> Iterator[Dataset | RawLevel]:
    """``level`` and every item of its sequences, depth first (elements left raw)."""
    yield level
    for tag in list(level.keys()):
        element = level.get_item(tag)
        items = element.value if isinstance(element, RawSequence) else level[tag].value
        if isinstance(items, list | PydicomSequence):
            for item in items:
                yield from _levels(item)


@pytest.mark.parametrize("path", EXAMPLES[::4], ids=lambda path: path.name)
def test_walked_levels_hold_the_raw_elements_pydicom_reads(path: Path) -> None:
    """What the checks, keys and packing read of a level: every element pydicom's reader
    gives raw, with the same tag, VR, length and value, found by every form of tag; the
    sequences with the same items."""
    data = path.read_bytes()
    walked = walk(data)
    assert walked is not None
    read = records.parse_worklist_file(data)[0]
    levels = list(zip(_levels(walked[0]), _levels(read), strict=True))
    assert len(levels) > 1  # the sequences' items too
    for ours, theirs in levels:
        assert isinstance(ours, RawLevel)
        assert list(ours.keys()) == list(theirs.keys())
        for tag in [*ours.keys(), Tag(0x00101000), Tag(0x7FE00010)]:  # present, absent
            element, read_element = ours.get_item(tag), theirs.get_item(tag)
            if isinstance(element, RawSequence):
                assert theirs[tag].VR == "SQ"
                assert len(element.value) == len(theirs[tag].value)
            elif element is None:
                assert read_element is None
            elif isinstance(read_element, RawDataElement):
                assert tuple(element)[:4] == tuple(read_element)[:4], tag
            else:  # converted by pydicom already (the load tests compare what it gives)
                assert isinstance(element, RawDataElement) and read_element.tag == tag
                assert theirs.get_item(int(tag)) is read_element


def test_a_sequence_under_a_tag_the_dictionary_gives_another_vr_is_left_to_pydicom() -> None:
    entry = worklist_dataset("A1")
    entry.add_new(Tag(0x00100010), "SQ", [Dataset()])  # PatientName as a sequence
    assert walk(file_bytes(entry, ExplicitVRLittleEndian)) is None


def test_what_the_first_start_reads_of_a_walked_level_is_found_by_identity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks, keys, packing and sort key look elements up with the very tag objects the
    walker keys them with: no ``BaseTag.__eq__`` (a Python call per lookup) on the way."""
    entry = worklist_dataset("A1")
    entry.ReferencedStudySequence = entry.ReferencedPatientSequence = []  # nothing to add
    walked = walk(file_bytes(entry, ExplicitVRLittleEndian))
    assert walked is not None
    level = walked[0]
    compared: list[object] = []
    original = BaseTag.__eq__

    def counted(tag: BaseTag, other: object) -> bool:
        compared.append(other)
        return original(tag, other)

    monkeypatch.setattr(BaseTag, "__eq__", counted)
    monkeypatch.setattr(BaseTag, "__hash__", int.__hash__)  # setting __eq__ would drop it
    assert completeness.is_complete(level)
    index.record_keys(level)
    compact.pack(level)
    records.sort_key_of(level, "A1.wl")
    assert compared == []
