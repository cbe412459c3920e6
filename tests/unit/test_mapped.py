"""The preloaded records' immutable bytes in a shared file mapping (``mapped.py``): the same
bytes and search results as in the heap, a file that is owner-only and nameless, the mapping
and its descriptor gone with its last reader, and the heap kept when the file cannot be
made."""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
import stat
from pathlib import Path

import pytest

from tests.support.datasets import dataset, raw
from tests.support.worklists import AE, add
from wlmd.daemon.pool import ChildProcesses
from wlmd.worklist import mapped, records
from wlmd.worklist.index import PackedKeys, prefilter_of
from wlmd.worklist.mapped import map_out
from wlmd.worklist.preload import preload
from wlmd.worklist.query import PreparedQuery
from wlmd.worklist.records import Shelf, Shelves
from wlmd.worklist.store import WorklistStore

SEARCHES = (b"A", b"AB", b"<1>", b"<1", b"7>A", b">", b"ZZ")


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shelves of 4 records and chunks of 3, so that a few records seal several of each."""
    monkeypatch.setattr(records, "SHELF_RECORDS", 4)
    monkeypatch.setattr(PackedKeys, "CHUNK", 3)


def filled() -> tuple[PackedKeys, list[tuple[Shelf, int]], dict[int, bytes]]:
    """Packed keys and shelves of 10 records (3 sealed chunks and 2 sealed shelves each)."""
    keys, shelves = PackedKeys(), Shelves()
    kept = {number: b"<%d>" % number + (b"AB" if number % 2 else b"A") for number in range(10)}
    places = []
    for number, value in kept.items():
        keys.add(number, value)
        places.append(shelves.put(value * 3))
    shelves.finish()
    return keys, places, kept


def mappings(directory: Path) -> list[str]:
    """This process's mappings of files in ``directory``."""
    with open("/proc/self/maps") as maps:
        return [line for line in maps if f" {directory}/" in line]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def passing(keys: PackedKeys, search: bytes) -> set[int]:
    return keys.passing((re.compile(re.escape(search)),))


@pytest.mark.usefixtures("small")
def test_mapped_stores_read_and_search_as_in_the_heap_and_go_with_their_last_reader(
        tmp_path: Path) -> None:
    heap_keys, heap_places, kept = filled()
    keys, places, _ = filled()
    shelves = list(dict.fromkeys(shelf for shelf, _ in places))
    descriptors = open_descriptors()

    moved = map_out([keys, *shelves], tmp_path)

    sealed = [shelf for shelf in shelves if len(shelf.ends) == records.SHELF_RECORDS]
    # 9 records' keys in 3 chunks (the tenth waits), 8 records' bytes on 2 full shelves
    assert moved == sum(len(kept[n]) for n in range(9)) + sum(3 * len(kept[n]) for n in range(8))
    assert len(sealed) == 2 and all(isinstance(shelf.data, memoryview) for shelf in sealed)
    assert isinstance(shelves[-1].data, bytearray)  # not full: stays in the heap
    assert not keys.sealed() and not any(shelf.sealed() for shelf in shelves)
    assert [shelf.get(slot) for shelf, slot in places] == \
        [shelf.get(slot) for shelf, slot in heap_places] == [v * 3 for v in kept.values()]
    assert {n: keys.get(n) for n in kept} == {n: heap_keys.get(n) for n in kept} == kept
    for search in SEARCHES:
        assert passing(keys, search) == passing(heap_keys, search) == \
            {number for number, value in kept.items() if search in value}
    both = (re.compile(b"A"), re.compile(b"<1"))
    assert keys.passing(both) == heap_keys.passing(both) == {1}
    assert open_descriptors() == descriptors + 1  # the mapping's own, none other left open
    (line,) = mappings(tmp_path)
    assert line.split()[1] == "r--s" and line.rstrip().endswith("(deleted)")
    assert os.listdir(tmp_path) == []

    assert map_out([keys, *shelves], tmp_path) == 0  # nothing left to move: no second file
    del shelves, places, sealed
    gc.collect()
    assert len(mappings(tmp_path)) == 1  # the packed keys still read from it
    for number in range(5):  # more than half dead: rebuilt in the heap
        keys.remove(number)
    assert len(keys.sealed()) == 2  # the 4 live sealed records, in new chunks of the heap
    assert mappings(tmp_path) == [] and open_descriptors() == descriptors
    assert {n: keys.get(n) for n in range(5, 10)} == {n: kept[n] for n in range(5, 10)}
    assert passing(keys, b"AB") == {5, 7, 9}


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "refused"])
def test_the_file_is_owner_only_and_has_no_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmpfile: bool) -> None:
    if not tmpfile:
        real_open = os.open

        def no_tmpfile(path: str, flags: int, mode: int = 0o777) -> int:
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
            return real_open(path, flags, mode)
        monkeypatch.setattr(mapped.os, "open", no_tmpfile)
    os.umask(old := os.umask(0))  # the file is private whatever the umask
    try:
        fd = mapped._unnamed_file(tmp_path)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.readlink(f"/proc/self/fd/{fd}").endswith(" (deleted)")
        assert os.listdir(tmp_path) == []
    finally:
        os.close(fd)


@pytest.mark.usefixtures("small")
@pytest.mark.parametrize(("call", "code"), [("open", errno.EROFS), ("open", errno.EPERM),
                                            ("write", errno.ENOSPC), ("mmap", errno.ENODEV)])
def test_a_file_that_cannot_be_made_leaves_the_bytes_in_the_heap_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        call: str, code: int) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))
    target = mapped.mmap if call == "mmap" else mapped.os
    monkeypatch.setattr(target, call, refuse)
    keys, places, kept = filled()
    shelves = list(dict.fromkeys(shelf for shelf, _ in places))
    descriptors = open_descriptors()
    with caplog.at_level(logging.WARNING, "wlmd.worklist.mapped"):
        assert map_out([keys, *shelves], tmp_path) == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"Cannot map the preloaded worklist from a file in {tmp_path} ({os.strerror(code)}); "
        "keeping it in memory"]
    assert len(keys.sealed()) == 3 and sum(len(shelf.sealed()) for shelf in shelves) == 2
    assert {n: keys.get(n) for n in kept} == kept
    assert [shelf.get(slot) for shelf, slot in places] == [v * 3 for v in kept.values()]
    assert open_descriptors() == descriptors and mappings(tmp_path) == []
    assert os.listdir(tmp_path) == []


def name_query(store: WorklistStore, fragment: bytes) -> list[str]:
    """Names of the records a wildcard AccessionNumber query gets from the store (screened)."""
    query = PreparedQuery(dataset(raw("AccessionNumber", "SH", b"*" + fragment + b"*")),
                          unsupported_removed=False)
    prefilter = prefilter_of(query)
    assert prefilter is not None and prefilter.screens  # searched in the packed keys
    return [record.name for record in store.query(AE, prefilter)
            if fragment.decode() in str(record.dataset.AccessionNumber)]


@pytest.mark.usefixtures("small")
def test_a_preload_with_an_index_file_serves_the_same_from_the_mapping(
        root: Path, tmp_path: Path) -> None:
    for number in range(11):
        add(root, f"{number:02d}.wl", accession=f"A{number}", date=f"202401{number + 1:02d}")
    index = tmp_path / "cache" / "index.sqlite"
    index.parent.mkdir()
    in_heap = WorklistStore(root, file_reject=True)
    preload(in_heap, ChildProcesses(1))
    for start in ("first", "restart"):
        store = WorklistStore(root, file_reject=True)
        preload(store, ChildProcesses(1), index)
        served = store.served(AE)
        assert sum(isinstance(record.shelf, Shelf) and isinstance(record.shelf.data, memoryview)
                   for record in served) == 8, start  # two full shelves of four
        assert [(r.name, r.data) for r in served] == \
            [(r.name, r.data) for r in in_heap.served(AE)], start
        assert len(mappings(index.parent)) == 1, start
        for fragment in (b"1", b"A", b"7", b"Z"):
            assert name_query(store, fragment) == name_query(in_heap, fragment), start
    del store, served
    gc.collect()
    assert mappings(index.parent) == []  # the last store's mapping went with it
