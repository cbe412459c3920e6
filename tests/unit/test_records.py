"""A compact record decodes to exactly what its file parses to, whatever the file's layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tests.support.datasets import file_bytes
from tests.support.worklists import worklist_dataset
from wlmd.worklist.completeness import add_missing_references
from wlmd.worklist.records import (
    SHELF_RECORDS,
    FileLoader,
    Shelves,
    Unreadable,
    parse_worklist_file,
    read_stable,
    stat_key,
)


def elements(ds: Dataset) -> list[tuple[object, ...]]:
    """Every element, nested items included, as (tag, VR, value) with values converted."""
    found: list[tuple[object, ...]] = []
    for element in ds:
        if element.VR == "SQ":
            found.append((element.tag, "SQ", [elements(item) for item in element.value]))
        else:
            found.append((element.tag, element.VR, str(element.value)))
    return found


@pytest.mark.parametrize(("transfer_syntax", "fast"), [
    (ExplicitVRLittleEndian, True),
    (ImplicitVRLittleEndian, True),
    (ExplicitVRBigEndian, True),
    (DeflatedExplicitVRLittleEndian, False),  # compressed: decoded as a whole file
    (None, False),  # no preamble, no meta header
])
def test_a_record_decodes_to_what_its_file_parses_to(tmp_path: Path, transfer_syntax: str | None,
                                                     fast: bool) -> None:
    path = tmp_path / "entry.wl"
    path.write_bytes(file_bytes(worklist_dataset("A1"), transfer_syntax))
    loader = FileLoader(str(tmp_path), file_reject=True, max_file_bytes=1 << 20)
    entry, parsed = loader.load(str(path), path.name, os.stat(path), False, str(tmp_path))
    assert parsed and entry is not None and entry.record is not None
    record = entry.record
    assert (record.body is not None) is fast
    expected, _ = parse_worklist_file(path.read_bytes())
    decoded = record.dataset
    assert decoded.get_item(0x00100020).value == expected.get_item(0x00100020).value  # raw
    add_missing_references(expected)  # as the file-reject check did when the file was loaded
    assert elements(decoded) == elements(expected)
    assert decoded.original_encoding == expected.original_encoding


def test_a_record_keeps_its_file_compressed_and_gives_back_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "entry.wl"
    path.write_bytes(file_bytes(worklist_dataset("A1"), ExplicitVRLittleEndian))
    loader = FileLoader(str(tmp_path), file_reject=True, max_file_bytes=1 << 20)
    entry, _ = loader.load(str(path), path.name, os.stat(path), False, str(tmp_path))
    assert entry is not None and entry.record is not None
    assert entry.record.data == path.read_bytes()
    assert len(entry.record.compressed) * 2 < len(path.read_bytes())


def test_shelves_give_back_the_bytes_of_every_slot_across_shelves() -> None:
    shelves = Shelves()
    blobs = [bytes([number % 251]) * (number % 7) for number in range(2 * SHELF_RECORDS + 3)]
    placed = [shelves.put(blob) for blob in blobs]  # empty ones too
    shelves.finish()
    assert [shelf.get(slot) for shelf, slot in placed] == blobs
    shelves_used = list({id(shelf): shelf for shelf, _ in placed}.values())
    assert len(shelves_used) == 3
    # full shelves keep no room for growth; the one being filled does
    assert [type(shelf.data) for shelf in shelves_used] == [bytes, bytes, bytearray]


@pytest.mark.parametrize("size", [0, 1, 1066, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20])
def test_a_stable_read_gives_every_byte_and_the_version_it_read(tmp_path: Path,
                                                                size: int) -> None:
    """Read in chunks of 1 MiB; a read that ends at the file's size is taken as its end."""
    path = tmp_path / "a.wl"
    path.write_bytes(os.urandom(size))
    data, key = read_stable(str(path), 4 << 20)
    assert data == path.read_bytes()
    assert key == stat_key(os.stat(path))
    if size:
        with pytest.raises(Unreadable, match="file too large"):
            read_stable(str(path), size - 1)
