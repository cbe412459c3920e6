"""The preload: every called AE's worklist loaded before workers are forked, so they share it.

Workers inherit the records copy-on-write, so the preload also lays them out to stay shared:
records made from the index file come compact and in response order; records parsed here are
compacted afterwards (``compact``). Two steps run in other processes, which the process model
provides (``ChildProcesses``, implemented by ``wlmd.daemon.pool``, where every fork happens):
a full scan's parsing on every CPU, and a first start's parsing, which those processes save
into the index file themselves.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from wlmd.worklist.mapped import map_out
from wlmd.worklist.persist import IndexFile, IndexPart, Saved, load_parts, stale_parts
from wlmd.worklist.records import (
    Entry,
    FileLoader,
    Shelves,
    StatKey,
    WorklistRecord,
    shared_record,
)
from wlmd.worklist.store import (
    RESORT_FRACTION,
    ListedFile,
    LockfileError,
    WorklistStore,
    batched,
    load_changed,
)

LOGGER = logging.getLogger(__name__)

Task = TypeVar("Task")
Result = TypeVar("Result")


class ChildProcesses(Protocol):
    """Work run in forked processes, for the preload."""

    @property
    def jobs(self) -> int:
        """How many processes ``map_batches`` may use."""

    def map_batches(self, work: Callable[[list[Task]], Result],
                    batches: list[list[Task]]) -> list[Result]:
        """``work`` of each batch in up to ``jobs`` forked processes, results in order."""


class InThisProcess:
    """``ChildProcesses`` without children: for a load in a thread, where nothing may fork."""

    jobs = 1

    def map_batches(self, work: Callable[[list[Task]], Result],
                    batches: list[list[Task]]) -> list[Result]:
        """``work`` of each batch here, one after another."""
        return [work(batch) for batch in batches]


def preload(store: WorklistStore, children: ChildProcesses, index_path: Path | None = None
            ) -> None:
    """Refresh every called AE directory of ``store`` now, so forked workers inherit it.

    Parses in ``children.jobs`` processes (forked here, so call this before any thread
    starts). With ``index_path``, a file whose stat key is the one saved there is taken from
    the index file instead of parsed, and the index file is brought up to date; the records'
    immutable bytes then move into a file mapping in its directory (``mapped.py``).
    """
    with _opened(store, children, index_path) as (names, index):
        for ae in names:
            started, first_count = time.monotonic(), store.parse_count
            saved = Saved() if index is None else index.load(ae)
            if index is not None and index_path and _mostly_unsaved(store, ae, len(saved)):
                saved = _parse_and_adopt(store, children, index, index_path, ae, saved)
            else:
                store.adopt(ae, saved)
            parsed = store.parse_count
            try:
                entries = store.refreshed_entries(ae)
            except LockfileError as error:
                LOGGER.warning("Not preloaded: %s", error)
                continue
            LOGGER.info("Loaded %d worklist records of %s in %.1f s (%d files parsed)",
                        len(store.served(ae)), ae, time.monotonic() - started,
                        store.parse_count - first_count)
            if index is not None:
                index.save(ae, entries, saved, store.filing(ae))
            if (store.parse_count - parsed) * RESORT_FRACTION > len(entries):
                compact(store, ae)  # records made from the index file are compact already
    if index_path is not None:
        _map_out(store, names, index_path.parent)


@contextlib.contextmanager
def _opened(store: WorklistStore, children: ChildProcesses, index_path: Path | None
            ) -> Iterator[tuple[list[str], IndexFile | None]]:
    """The called AEs to load (none if ``-dfp`` cannot be listed) and the index file at
    ``index_path``, open, while full scans parse through ``children``."""
    try:
        names = store.called_aes()
    except OSError:
        names = []
    with (store.parsing_with(children.map_batches if children.jobs > 1 else None),
          store.open_index_file(index_path) as index):
        yield names, index


def _map_out(store: WorklistStore, names: list[str], directory: Path) -> None:
    """Move the preloaded records' immutable bytes out of the heap, into a file mapping that
    the workers share as page cache (``mapped.py``)."""
    started = time.monotonic()
    size = map_out(itertools.chain.from_iterable(store.sealed_stores(ae) for ae in names),
                   directory)
    if size:
        LOGGER.info("Mapped %.1f MB of worklist records from an unnamed file in %s in %.2f s",
                    size / 2**20, directory, time.monotonic() - started)


def parse_into_index_file(store: WorklistStore, children: ChildProcesses, index_path: Path
                          ) -> None:
    """A first start's parsing alone, for a load from the index file that follows: each
    called AE whose files the index file mostly lacks is parsed into it in ``children``'s
    processes, and nothing is kept here.

    Run in a child of a supervisor that serves meanwhile (``BackgroundLoad``), so that the
    supervisor only loads rows, as a restart does.
    """
    with _opened(store, children, index_path) as (names, index):
        if index is None:
            return
        for ae in names:
            if not _mostly_unsaved(store, ae, index.count(ae)):
                continue
            started, first_count = time.monotonic(), store.parse_count
            saved = index.load(ae)
            parts = _parse_into_parts(store, children, index_path, ae, saved)
            index.merge(parts or [])
            LOGGER.info("Parsed %d worklist files of %s into the index file in %.1f s",
                        store.parse_count - first_count, ae, time.monotonic() - started)


def _mostly_unsaved(store: WorklistStore, ae: str, saved: int) -> bool:
    """True if the index file lacks more than an eighth of ``ae``'s files (``saved`` rows)."""
    if not saved:
        return True  # a first start: not worth listing 100,000 files to count them
    count = store.file_count(ae)
    return count is not None and (count - saved) * RESORT_FRACTION > count


def _parse_and_adopt(store: WorklistStore, children: ChildProcesses, index: IndexFile,
                     index_path: Path, ae: str, saved: Saved) -> Saved:
    """Parse ``ae``'s files that ``saved`` lacks in ``children``'s processes, each of which
    saves its rows into a part of the index file of its own; adopt the records of all of
    ``ae``'s files, and merge the parts into the index file. What was adopted, by name.

    The records are made from the rows, compact and in response order. Parsed records never
    pass through this process (nothing is pickled back but a count and a path), and what
    parsing leaves behind -- freed memory scattered among the records, about as much as the
    records themselves, which every worker would share and count -- goes away with the
    children. On a first start (nothing saved) the records are made straight from the parts
    while the index file takes them in, in a thread that SQLite runs on another CPU
    (``IndexFile.merging``): the merge runs beside the load instead of before it (the index
    file only matters at the next start). A file that changed while it was read, or rows
    that could not be saved or read, are missing: the caller's refresh parses them.
    """
    parts = _parse_into_parts(store, children, index_path, ae, saved)
    if parts is None:
        store.adopt(ae, saved)
        return saved  # the caller meets it too, and says so
    if saved:  # records of other files are saved too: all are made from the index file, in order
        index.merge(parts)
        saved = index.load(ae)
        store.adopt(ae, saved)
        return saved
    with index.merging(parts):
        saved = load_parts(ae, parts)
        store.adopt(ae, saved)
    return saved


def _parse_into_parts(store: WorklistStore, children: ChildProcesses, index_path: Path,
                      ae: str, saved: Saved) -> list[Path] | None:
    """Parse ``ae``'s files that ``saved`` lacks in ``children``'s processes, each saving its
    rows into a part of the index file of its own; the parts (None: the lockfile failed)."""
    for stale in stale_parts(index_path):
        with contextlib.suppress(OSError):
            os.unlink(stale)
    save = functools.partial(_parse_and_save, store.loader, ae, index_path)
    try:
        with store.changed_files(ae, saved) as listed:
            batches = batched(listed)
            results = children.map_batches(save, batches) if batches else []
    except LockfileError:
        return None
    store.parse_count += sum(count for count, _ in results)
    return sorted({part for _, part in results if part is not None})


def _parse_and_save(loader: FileLoader, ae: str, index_path: Path, listed: list[ListedFile]
                    ) -> tuple[int, Path | None]:
    """Load one batch of ``ae``'s changed files into this process's part of the index file:
    how many files were parsed, and the part (None if it could not be saved)."""
    loaded = [(item[1], found) for item in listed
              if (found := load_changed(loader, item)) is not None]
    entries = {name: entry for name, (entry, _) in loaded if entry is not None}
    parsed = sum(parsed for _, (_, parsed) in loaded)
    try:
        part = IndexPart.of_this_process(index_path)
        part.save(ae, entries)
    except (sqlite3.Error, OSError) as error:
        LOGGER.warning("Cannot update index file (%s); the next start parses more", error)
        return parsed, None
    return parsed, part.path


def compact(store: WorklistStore, ae: str) -> None:
    """Re-create the small objects that refreshes and queries touch, side by side in memory.

    A forked worker shares the supervisor's records until it writes to a memory page, and
    Python writes (a reference count) to every object it merely uses. Made one file at a
    time, a record's name, entry and sort key sit among unrelated objects, and a query's
    candidates (records of one day, mostly) are spread over the whole heap. Re-created here
    in response order, the candidates of one day share a few pages, and a full scan's writes
    (names, entries, stat keys) stay on pages of their own. The index is renumbered in the
    same order (``WorklistStore.install``).
    """
    old_entries = store.entries(ae)
    entries: dict[str, Entry] = {}
    snapshot: list[WorklistRecord] = []
    shared: dict[Any, Any] = {}  # one object for equal values: dates, times, bodies
    shelves = Shelves()
    for old in store.served(ae):
        name = _copy(old.name)
        record = shared_record(old.compressed, (*old.sort_key[:2], name), old.add_references,
                               old.body, shared, shelves)
        entries[name] = Entry(_copy_key(old_entries[name].key), record)
        snapshot.append(record)
    shelves.finish()
    for name, entry in old_entries.items():  # rejected files: no record
        if entry.record is None:
            entries[_copy(name)] = Entry(_copy_key(entry.key), None)
    store.install(ae, entries, snapshot)


def _copy_key(key: StatKey) -> StatKey:
    """A new object equal to ``key``."""
    return bytes(bytearray(key))


def _copy(text: str) -> str:
    """A new string equal to ``text`` (surrogate escapes of undecodable names kept)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
