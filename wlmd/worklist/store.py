"""The worklist store: one directory of ``*.wl`` files per called AE title under ``-dfp``.

The directory stays the source of truth (docs/compat.md §12.8): every query refreshes the AE, so a
file that was added, changed or removed is seen by the very next C-FIND. Unlike wlmscpfs, files
whose ``stat`` did not change are not parsed again. Where inotify works, a refresh re-stats only
the names the kernel reported since the last one (plus every symbolic link, whose target can
change elsewhere); otherwise, and whenever events may have been lost, it costs one ``scandir``
and one ``stat`` per file. Either way only changed files are parsed. The refresh runs under the
shared ``fcntl`` read lock on ``<AE>/lockfile``, the convention DCMTK's writers rely on.

The served records are kept sorted and indexed (``index.py``) as files come and go, so a
selective query looks at its candidates only.

Everything that can go wrong with one file (unreadable, truncated, not DICOM, incomplete, a
symbolic link leading out of ``-dfp``) is logged once per version of that file and the file is
left out; the rest of the directory is still served. The store never writes, moves or deletes
a worklist file.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom import config

import wlmd
from wlmd.config.settings import RefreshMode
from wlmd.worklist.compact import MatchView
from wlmd.worklist.index import Filing, Prefilter, WorklistIndex
from wlmd.worklist.inotify import Inotify, handover_for_fork
from wlmd.worklist.mapped import Sealed
from wlmd.worklist.persist import Filings, IndexFile, Saved
from wlmd.worklist.records import (
    Entry,
    FileLoader,
    Shelf,
    SortKey,
    StatKey,
    WorklistRecord,
    inside,
    stat_key,
)
from wlmd.worklist.scan import Screens, in_order, screened_records

LOGGER = logging.getLogger(__name__)

LOCKFILE = "lockfile"
WORKLIST_SUFFIX = ".wl"
MAX_AE_LENGTH = 16
DEFAULT_LOCK_WAIT = 10.0  # seconds to wait for a writer when there is no snapshot to serve
DEFAULT_MAX_FILE_BYTES = 16 << 20  # a worklist file is a few KiB; anything this big is junk
LOCK_POLL_INTERVAL = 0.05
RESORT_FRACTION = 8  # more changes than 1/8 of the records: sort again instead of bisecting
PARALLEL_MIN_FILES = 2000  # fewer files to parse than this: a process pool is not worth it
PARALLEL_BATCH = 500  # files per task handed to a pool process

LoadTask = tuple[str, str, os.stat_result, bool, str]  # FileLoader.load's arguments
# A listed file to load unless unchanged: path, name, is a symbolic link, -dfp resolved, and
# the stat key saved for it (None: none saved). Small to pickle: no stat result in it.
ListedFile = tuple[str, str, bool, str, StatKey | None]
Task = TypeVar("Task")
Loaded = tuple[Entry | None, bool]  # what FileLoader.load gives: the entry, and "parsed"
# Runs FileLoader.load_many on each batch of tasks (in other processes); results in order.
BatchMap = Callable[[Callable[[list[LoadTask]], list[Loaded]], list[list[LoadTask]]],
                    list[list[Loaded]]]


class DataSourceError(Exception):
    """The ``-dfp`` root is missing or unreadable ("Cannot connect to data source.")."""


class LockfileError(Exception):
    """``<AE>/lockfile`` cannot be opened or read-locked; the C-FIND fails with 0xA700."""


@dataclass
class _AeCache:
    """Per called AE: the entries by file name and the last consistent snapshot.

    ``snapshot`` is kept in ``sort_key`` order and ``index`` files the same records; both
    change only in ``_apply``. A query works with the index's record numbers (``Candidates``):
    ``records`` finds a record by its number, ``order`` holds the snapshot's numbers, and
    ``rank`` each number's place in it (made before a fork, dropped by any change).
    """

    entries: dict[str, Entry] = field(default_factory=dict)
    snapshot: list[WorklistRecord] | None = None
    index: WorklistIndex = field(default_factory=WorklistIndex)
    records: list[WorklistRecord | None] = field(default_factory=list)
    order: array[int] = field(default_factory=lambda: array("I"))
    rank: array[int] | None = None
    links: set[str] = field(default_factory=set)  # symbolic links: re-checked every refresh
    retry: set[str] = field(default_factory=set)  # names whose last check was inconclusive
    # (old, new, what to file the new one under): served records changed by the running
    # refresh
    pending: list[tuple[WorklistRecord | None, WorklistRecord | None, Filing | None]] = field(
        default_factory=list)
    stale: bool = False  # the last refresh found the lockfile write-locked: snapshot served
    lock_warned: bool = False  # a "writer holds the lock" warning was logged this episode
    scan_warned: bool = False  # a "cannot list the directory" warning was logged this episode
    # The listing the first start's parsing took with the watch armed (name -> is a symbolic
    # link): the first refresh then asks the watch what changed since, instead of a full scan.
    listed: dict[str, bool] | None = None


def is_safe_ae(ae: str) -> bool:
    """True if ``ae`` can name a directory right under ``-dfp`` and nothing else.

    wlmd departs from wlmscpfs 3.6.7 here (which accepts ``../x``): 1–16 characters, no
    ``/``, no ``\\`` (the DICOM value separator, never part of an AE title), no ``..``, not
    ``.``, no NUL or other control characters.
    """
    return (
        0 < len(ae) <= MAX_AE_LENGTH
        and "/" not in ae
        and "\\" not in ae
        and ".." not in ae
        and ae != "."
        and all(0x20 <= ord(ch) != 0x7F for ch in ae)
    )


def is_worklist_name(name: str) -> bool:
    """DCMTK ``OFpath::extension() == ".wl"``: the last dot, and not a leading dot."""
    return len(name) > len(WORKLIST_SUFFIX) and name.endswith(WORKLIST_SUFFIX)


@dataclass(frozen=True)
class Candidates:
    """The records one query looks at, in ``sort_key`` order, as their index numbers.

    Valid until the next refresh of their AE. Reading numbers and serials writes to no
    record, entry or name, which a forked worker shares with its supervisor until it writes
    to their memory pages; only what a query must read (a record's keys to match, its bytes
    to answer) touches a record.
    """

    numbers: Sequence[int]
    serials: array[int]  # by number: unique in this process per record version (cache key)
    _records: list[WorklistRecord | None]
    _index: WorklistIndex

    def __len__(self) -> int:
        return len(self.numbers)

    def record(self, number: int) -> WorklistRecord:
        """The record of ``number``."""
        return _filed_record(self._records, number)

    def match_view(self, number: int) -> MatchView:
        """What the matcher reads of the record of ``number``."""
        return MatchView.of(self._index.packed_at(number))

    def records(self) -> list[WorklistRecord]:
        """The candidate records themselves, in order."""
        return [self.record(number) for number in self.numbers]


class WorklistStore:
    """The ``-dfp`` worklist database, kept in step with the directory by stat-based refresh."""

    def __init__(self, root: Path, *, file_reject: bool, lock_wait: float = DEFAULT_LOCK_WAIT,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 refresh: RefreshMode = RefreshMode.AUTO) -> None:
        self._root = root
        self._root_text = str(root)  # paths in log lines keep the -dfp spelling, like DCMTK's
        self._loader = FileLoader(self._root_text, file_reject, max_file_bytes)
        self._lock_wait = lock_wait
        self._caches: dict[str, _AeCache] = {}
        self._inotify = Inotify(refresh)
        self._batch_map: BatchMap | None = None  # parses a full scan's files elsewhere
        self.parse_count = 0  # files parsed so far: proves that unchanged files are not re-read
        # Worklist files carry whatever their writers put in; odd values must not raise when
        # matching or response building later converts them.
        config.settings.reading_validation_mode = config.IGNORE

    def check_root(self) -> None:
        """Raise DataSourceError unless ``-dfp`` is a readable directory (checked at startup)."""
        if not (os.path.isdir(self._root) and os.access(self._root, os.R_OK | os.X_OK)):
            raise DataSourceError(f"cannot read the worklist directory {self._root_text}")

    def knows_called_ae(self, ae: str) -> bool:
        """True if ``ae`` is safe and ``<dfp>/<ae>`` is a directory inside ``-dfp``."""
        return self._ae_dir(ae) is not None

    def called_aes(self) -> list[str]:
        """The called AE titles served: safe names of directories under ``-dfp``, sorted.

        Raises OSError when ``-dfp`` cannot be listed.
        """
        return sorted(ae for ae in os.listdir(self._root) if self.knows_called_ae(ae))

    def file_count(self, ae: str) -> int | None:
        """How many worklist files ``ae``'s directory lists now (None: it cannot be listed)."""
        ae_dir = self._ae_dir(ae)
        try:
            return len(_list_worklist_files(ae_dir)) if ae_dir else 0
        except OSError:
            return None

    @contextlib.contextmanager
    def parsing_with(self, batch_map: BatchMap | None) -> Iterator[None]:
        """Let full scans of many files parse in batches through ``batch_map`` for a while
        (in other processes: the preload's); None parses here, one file after another."""
        self._batch_map = batch_map
        try:
            yield
        finally:
            self._batch_map = None

    @property
    def loader(self) -> FileLoader:
        """How this store reads, parses and checks one file (picklable, for other processes)."""
        return self._loader

    def open_index_file(self, path: Path | None
                        ) -> contextlib.AbstractContextManager[IndexFile | None]:
        """The index file at ``path``, for records parsed the way this store parses."""
        if path is None:
            return contextlib.nullcontext()
        loader = self._loader
        return IndexFile.opened(path, {
            "root": os.path.realpath(self._root), "file_reject": str(loader.file_reject),
            "max_file_bytes": str(loader.max_file_bytes), "wlmd": wlmd.__version__,
            "pydicom": pydicom.__version__,
        })

    @contextlib.contextmanager
    def changed_files(self, ae: str, saved: dict[str, Entry]) -> Iterator[list[ListedFile]]:
        """``ae``'s files, each with its stat key in ``saved``, for ``load_changed``.

        Listed under the shared read lock, which is held until the caller is done loading
        them (elsewhere: the lock covers the processes it forks meanwhile, which stat the
        files themselves); LockfileError as for ``query``. A directory that cannot be listed
        gives no file: the refresh that follows says so.
        """
        with self._lockfile(ae) as (ae_dir, fd, lock_path):
            cache = self._caches.setdefault(ae, _AeCache())
            self._lock(fd, lock_path, cache)
            first = cache.snapshot is None
            if first:
                self._inotify.changes(ae_dir)  # arm the watch before listing: nothing slips by
            try:
                names = _list_worklist_files(ae_dir)
            except OSError:
                names = {}
            if first and names:
                cache.listed = names
            real_root = self._real_root()
            yield [(f"{ae_dir}/{name}", name, is_link, real_root,
                    None if (old := saved.get(name)) is None else old.key)
                   for name, is_link in names.items()]

    @contextlib.contextmanager
    def _lockfile(self, ae: str) -> Iterator[tuple[str, int, str]]:
        """``ae``'s directory and its lockfile, open (descriptor, path) until the block ends.

        Raises LockfileError when the directory or its lockfile cannot be opened.
        """
        ae_dir = self._ae_dir(ae)
        if ae_dir is None:
            raise LockfileError(_open_failure(os.path.join(self._root_text, ae, LOCKFILE),
                                              errno.ENOENT))
        lock_path = os.path.join(ae_dir, LOCKFILE)
        fd = _open_lockfile(lock_path)
        try:
            yield ae_dir, fd, lock_path
        finally:
            os.close(fd)  # closing the descriptor releases the fcntl lock

    def adopt(self, ae: str, saved: Saved) -> None:
        """Start ``ae``'s cache from records saved by an earlier run (checked by the refresh)."""
        if not saved:
            return
        cache = self._caches.setdefault(ae, _AeCache())
        cache.entries = dict(saved)
        cache.index.add_all(saved.filings)
        saved.filings = Filings()  # the index keeps them now

    def refreshed_entries(self, ae: str) -> dict[str, Entry]:
        """``ae``'s entries by file name, brought in step with its directory (LockfileError
        as for ``query``)."""
        return self._refreshed(ae).entries

    def entries(self, ae: str) -> dict[str, Entry]:
        """``ae``'s entries by file name as they are, rejected files included."""
        return self._caches[ae].entries if ae in self._caches else {}

    def served(self, ae: str) -> list[WorklistRecord]:
        """``ae``'s records as last refreshed, in ``sort_key`` order (the list itself)."""
        cache = self._caches.get(ae)
        if cache is None or cache.snapshot is None:
            return []
        return cache.snapshot

    def filing(self, ae: str) -> Callable[[str], Filing]:
        """What ``ae``'s records are filed under, by name, as last refreshed (the index keys
        derived anew: for the few records an index file save finds changed)."""
        return self._caches[ae].index.filing

    def sealed_stores(self, ae: str) -> list[Sealed]:
        """What keeps ``ae``'s immutable buffers: the index's packed keys, then the records'
        shelves in response order (for ``mapped.map_out``)."""
        cache = self._caches.get(ae)
        if cache is None:
            return []
        shelves = dict.fromkeys(record.shelf for record in cache.snapshot or ()
                                if isinstance(record.shelf, Shelf))
        return [cache.index.packed_keys, *shelves]

    def install(self, ae: str, entries: dict[str, Entry], snapshot: list[WorklistRecord]
                ) -> None:
        """Serve a copy of ``ae``'s entries and sorted records (made by compaction), and
        renumber its index in their order."""
        cache = self._caches[ae]
        cache.index = cache.index.renumbered([record.name for record in snapshot])
        cache.entries, cache.snapshot = entries, snapshot
        _renumber(cache)

    @contextlib.contextmanager
    def forking(self) -> Iterator[None]:
        """Around the fork of one worker: it inherits records brought up to date just now.

        It also inherits an inotify queue armed just before that, so that its first query
        needs no full scan (a ``stat`` per file, and a write to every entry's memory page,
        which un-shares them all).
        """
        # An AE without a snapshot (its lockfile failed at start) is left to the child, which
        # scans it on its first query: here a write lock on it could hold the supervisor up.
        aes = {ae_dir: ae for ae, cache in self._caches.items()
               if cache.snapshot is not None and (ae_dir := self._ae_dir(ae))}

        def bring_up_to_date(ae_dir: str) -> bool:  # False: the child must look itself
            try:
                cache = self._refreshed(aes[ae_dir])
            except LockfileError:
                return False
            _rank(cache)  # made here, it is shared with the child
            return cache is not None and not cache.stale and not cache.scan_warned

        with handover_for_fork(list(aes), self._inotify.refresh, bring_up_to_date) as handover:
            own, self._inotify = self._inotify, handover
            try:
                yield
            finally:
                self._inotify = own

    def query(self, ae: str, prefilter: Prefilter | None) -> list[WorklistRecord]:
        """The records of ``ae`` that can match ``prefilter``, in ``sort_key`` order
        (``candidates``' records)."""
        return self.candidates(ae, prefilter).records()

    def candidates(self, ae: str, prefilter: Prefilter | None) -> Candidates:
        """The records of ``ae`` that can match ``prefilter``, in ``sort_key`` order.

        A superset of the matches (None: every record served), refreshed under the read lock;
        costs in proportion to the candidates, not the worklist, when the prefilter narrows.
        Raises LockfileError when the lockfile cannot be opened, or when a writer holds it
        longer than ``lock_wait`` before any snapshot of this AE exists.
        """
        cache = self._refreshed(ae)
        order = cache.order
        numbers: Sequence[int]
        if prefilter is None:
            numbers = array("I", order)
        else:
            found = cache.index.candidate_numbers(prefilter)
            if len(found) * RESORT_FRACTION > len(order):
                numbers = [number for number in order if number in found]
            elif cache.rank is not None:
                numbers = sorted(found, key=cache.rank.__getitem__)
            else:  # changed since the last fork: not worth ranking every record again
                records = cache.records
                numbers = sorted(found, key=lambda number: _sort_key(_filed_record(records,
                                                                                   number)))
        return Candidates(numbers, cache.index.serials(), cache.records, cache.index)

    def scanned(self, ae: str, screens: Screens) -> Candidates:
        """``ae``'s records read afresh from its files, those that pass every one of
        ``screens`` only (``scan.py``: while the worklist is being loaded elsewhere), in
        ``sort_key`` order.

        Read under the shared read lock, as a refresh is; keeps nothing (the next query reads
        the directory again), so it suits a worker that lives only until the load is done.
        LockfileError as for ``candidates`` when there is no snapshot.
        """
        with self._lockfile(ae) as (ae_dir, fd, lock_path):
            self._lock(fd, lock_path, _AeCache())  # a cache without a snapshot: wait, or fail
            real_root = self._real_root()

            def load(name: str, is_link: bool) -> Entry | None:
                listed = (f"{ae_dir}/{name}", name, is_link, real_root, None)
                for _ in range(2):  # once more if it changed while it was read
                    loaded = load_changed(self._loader, listed)
                    if loaded is None:  # gone since the listing
                        return None
                    if loaded[0] is not None:
                        return loaded[0]
                return None

            try:
                records, index = screened_records(ae_dir, load, screens)
            except OSError as error:
                LOGGER.warning("Cannot list worklist directory %s (%s)", ae_dir,
                               error.strerror)
                records, index = [], WorklistIndex()
        filed: list[WorklistRecord | None] = list(records)
        return Candidates(in_order(records), index.serials(), filed, index)

    def _refreshed(self, ae: str) -> _AeCache:
        """The cache of ``ae`` brought in step with its directory under the read lock."""
        with self._lockfile(ae) as (ae_dir, fd, lock_path):
            cache = self._caches.setdefault(ae, _AeCache())
            cache.stale = not self._lock(fd, lock_path, cache)
            if not cache.stale:
                self._refresh(cache, ae_dir)
        return cache

    def _ae_dir(self, ae: str) -> str | None:
        """``<dfp>/<ae>`` if it is a safe name for a directory that resolves inside ``-dfp``."""
        if not is_safe_ae(ae):
            return None
        path = os.path.join(self._root_text, ae)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):  # asked per association: one syscall
                return path  # a directory, not a link, right under -dfp: inside it
        except OSError:
            return None
        if not os.path.isdir(path) or not inside(os.path.realpath(path), self._real_root()):
            return None
        return path

    def _real_root(self) -> str:
        """``-dfp`` with every symbolic link resolved, re-read so a moved root is noticed."""
        return os.path.realpath(self._root)

    def _lock(self, fd: int, lock_path: str, cache: _AeCache) -> bool:
        """Take the shared read lock: True once held, False to serve the snapshot instead."""
        if _try_read_lock(fd, lock_path):
            cache.lock_warned = False
            return True
        if cache.snapshot is not None:
            if not cache.lock_warned:
                LOGGER.warning("Worklist lockfile %s is write-locked by another process; "
                               "answering from the last consistent snapshot", lock_path)
                cache.lock_warned = True
            return False
        deadline = time.monotonic() + self._lock_wait
        while time.monotonic() < deadline:
            time.sleep(LOCK_POLL_INTERVAL)
            if _try_read_lock(fd, lock_path):
                return True
        raise LockfileError(f"WlmDataSourceFileSystem::SetReadlock: Cannot set read lock on "
                            f"file {lock_path} (write-locked for more than {self._lock_wait:g} s)")

    def _refresh(self, cache: _AeCache, ae_dir: str) -> None:
        """Bring ``cache`` in step with the directory, then apply the changes to the snapshot."""
        listed, cache.listed = cache.listed, None
        first = cache.snapshot is None and listed is None
        names = None if first else self._inotify.changes(ae_dir)
        if names is not None and listed is not None:
            names = self._since_listing(cache, listed, names)
        if names is None:
            self._scan(cache, ae_dir)
        elif names := {n for n in names | cache.links | cache.retry if is_worklist_name(n)}:
            real_root = self._real_root()  # not for the lockfile that every query opens
            cache.retry = set()
            for name in names:
                self._recheck(cache, ae_dir, name, real_root)
        self._apply(cache)

    def _scan(self, cache: _AeCache, ae_dir: str) -> None:
        """The full refresh: list the directory, stat every file, parse the changed ones."""
        if cache.snapshot is None:
            self._inotify.changes(ae_dir)  # arm the watch before listing: nothing slips by
        try:
            names = _list_worklist_files(ae_dir)
        except OSError as error:
            if not cache.scan_warned:
                LOGGER.warning("Cannot list worklist directory %s (%s); answering from the "
                               "last consistent snapshot", ae_dir, error.strerror)
                cache.scan_warned = True
            self._inotify.invalidate(ae_dir)
            cache.snapshot = cache.snapshot or []
            return
        cache.scan_warned = False
        if not names:
            LOGGER.info("<no files found>")
        self._forget_removed(cache, names)
        cache.links = {name for name, is_link in names.items() if is_link}
        cache.retry = set()
        real_root = self._real_root()
        tasks = [task for name, is_link in names.items()
                 if (task := self._load_task(cache, ae_dir, name, is_link, real_root))]
        for task, (entry, parsed) in zip(tasks, self._load_each(tasks), strict=True):
            self._settle(cache, task[1], entry, parsed)

    def _since_listing(self, cache: _AeCache, listed: dict[str, bool], changed: set[str]
                       ) -> set[str] | None:
        """After ``adopt``, what the first refresh looks at: the names the watch reports
        ``changed`` since the listing, and the listed files that gave no entry. Drops entries
        of files that were not listed and notes the symbolic links. None: so many listed
        files gave no entry (rows that could not be saved) that a full scan, which parses in
        the pool, costs less."""
        entries = cache.entries
        missing = {name for name in listed if name not in entries}
        if len(missing) >= PARALLEL_MIN_FILES:
            return None
        self._forget_removed(cache, listed)
        cache.links = {name for name, is_link in listed.items() if is_link}
        return changed | missing

    def _load_each(self, tasks: list[LoadTask]) -> Iterator[Loaded]:
        """``FileLoader.load`` of every task, in order; in batches elsewhere when that pays."""
        loader = self._loader
        if self._batch_map is None or len(tasks) < PARALLEL_MIN_FILES:
            return (loader.load(*task) for task in tasks)
        return iter([result for batch in self._batch_map(loader.load_many, batched(tasks))
                     for result in batch])

    def _recheck(self, cache: _AeCache, ae_dir: str, name: str, real_root: str) -> None:
        """Look at one name the kernel reported: gone, or new or changed, or still the same."""
        if not is_worklist_name(name):
            return
        try:
            st = os.lstat(os.path.join(ae_dir, name))
        except FileNotFoundError:
            self._forget(cache, name)
            return
        except OSError:
            cache.retry.add(name)
            return
        is_link = stat.S_ISLNK(st.st_mode)
        if is_link:
            cache.links.add(name)
        else:
            cache.links.discard(name)
        self._update(cache, ae_dir, name, is_link, real_root)

    def _apply(self, cache: _AeCache) -> None:
        """Carry the refresh's record changes into the sorted snapshot and the index."""
        pending, cache.pending = cache.pending, []
        if not pending and cache.snapshot is not None:
            return
        index, records = cache.index, cache.records
        for old, new, filing in pending:
            if old is not None:
                number = index.number(old.name)
                if number < len(records):  # else adopted, and not numbered here yet
                    records[number] = None
                index.remove(old.name)
            if new is not None:
                assert filing is not None  # a loaded record comes with its keys
                number = index.add(new.name, *filing)
                records.extend([None] * (number + 1 - len(records)))
                records[number] = new
        cache.rank = None
        snapshot = cache.snapshot
        if snapshot is None or len(pending) * RESORT_FRACTION > len(snapshot):
            cache.snapshot = sorted(
                (e.record for e in cache.entries.values() if e.record is not None),
                key=_sort_key,
            )
            _renumber(cache)
            return
        order = cache.order
        for old, new, _ in pending:
            if old is not None:
                at = _position(snapshot, old)
                del snapshot[at]
                del order[at]
            if new is not None:
                at = bisect.bisect_left(snapshot, new.sort_key, key=_sort_key)
                snapshot.insert(at, new)
                order.insert(at, index.number(new.name))

    def _forget_removed(self, cache: _AeCache, names: dict[str, bool]) -> None:
        """Drop entries whose file is gone.

        Looks the listed names up before iterating the entries: iterating writes a reference
        count on every stored name, which in a forked worker un-shares their memory pages.
        """
        entries = cache.entries
        if len(names) == len(entries) and all(name in entries for name in names):
            return
        for name in [name for name in entries if name not in names]:
            self._forget(cache, name)

    @staticmethod
    def _forget(cache: _AeCache, name: str) -> None:
        """Drop the entry of a file that is gone, and its record from the snapshot."""
        cache.links.discard(name)
        old = cache.entries.pop(name, None)
        if old is not None and old.record is not None:
            cache.pending.append((old.record, None, None))

    def _update(self, cache: _AeCache, ae_dir: str, name: str, is_link: bool,
                real_root: str) -> None:
        """Re-read ``name`` if its stat key changed, noting a changed record in ``pending``."""
        task = self._load_task(cache, ae_dir, name, is_link, real_root)
        if task is not None:
            self._settle(cache, name, *self._loader.load(*task))

    @staticmethod
    def _load_task(cache: _AeCache, ae_dir: str, name: str, is_link: bool,
                   real_root: str) -> LoadTask | None:
        """What to load for ``name``; None if its stat key is unchanged or it cannot be
        stat'ed now (then it is retried at the next refresh)."""
        path = f"{ae_dir}/{name}"  # os.path.join's result for a listed name, a tenth the cost
        st = _stat_to_load(path, is_link)
        if st is None:
            cache.retry.add(name)
            return None
        old = cache.entries.get(name)
        if old is not None and old.key == stat_key(st):
            return None
        return path, name, st, is_link, real_root

    def _settle(self, cache: _AeCache, name: str, entry: Entry | None, parsed: bool) -> None:
        """Keep what loading ``name`` gave, noting a changed record in ``pending``."""
        self.parse_count += parsed
        if entry is None:  # changed while being read: keep what we had, retry next time
            cache.retry.add(name)
            return
        old = cache.entries.get(name)
        cache.entries[name] = entry
        old_record = None if old is None else old.record
        if entry.record is not None or old_record is not None:
            cache.pending.append((old_record, entry.record, entry.filing))
        entry.filing = None  # the index keeps them once _apply has filed the record


def _renumber(cache: _AeCache) -> None:
    """Make ``records`` and ``order`` anew from the snapshot and the index's numbers."""
    index, snapshot = cache.index, cache.snapshot or []
    records: list[WorklistRecord | None] = [None] * len(index.serials())
    order = array("I")
    for record in snapshot:
        number = index.number(record.name)
        records[number] = record
        order.append(number)
    cache.records, cache.order, cache.rank = records, order, None


def _rank(cache: _AeCache) -> None:
    """Make ``rank``, by record number its place in the snapshot, unless it is current.

    Made before each fork: a forked worker sorts a query's candidates by it without reading
    a record (a sort key reads each one's date, time and name, and writes to the memory
    pages the worker shares). After a change, a worker sorts by the records' keys instead
    of ranking 100,000 records again.
    """
    if cache.rank is None:
        rank = array("I", [0]) * len(cache.records)
        for place, number in enumerate(cache.order):
            rank[number] = place
        cache.rank = rank


def _filed_record(records: list[WorklistRecord | None], number: int) -> WorklistRecord:
    """The record of ``number``, one the index files (so it has one)."""
    record = records[number]
    assert record is not None
    return record


def batched(tasks: list[Task]) -> list[list[Task]]:
    """``tasks`` in batches of ``PARALLEL_BATCH``, one per pool process task."""
    return [tasks[at:at + PARALLEL_BATCH] for at in range(0, len(tasks), PARALLEL_BATCH)]


def load_changed(loader: FileLoader, listed: ListedFile) -> Loaded | None:
    """``loader.load`` of one file ``changed_files`` listed, unless its stat key is still
    the saved one; None then, or if it cannot be stat'ed now (the refresh looks again)."""
    path, name, is_link, real_root, saved_key = listed
    st = _stat_to_load(path, is_link)
    if st is None or (saved_key is not None and stat_key(st) == saved_key):
        return None
    return loader.load(path, name, st, is_link, real_root)


def _stat_to_load(path: str, is_link: bool) -> os.stat_result | None:
    """The stat result to load a listed file by: a dangling link is judged (and logged) by
    the link itself; None if the file is gone or cannot be stat'ed now."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if not is_link:  # removed since the listing: the next refresh drops it
            return None
        with contextlib.suppress(OSError):
            return os.lstat(path)
    except OSError:
        pass
    return None


def _list_worklist_files(ae_dir: str) -> dict[str, bool]:
    """The ``*.wl`` names in ``ae_dir`` (no recursion), each with "is a symbolic link"."""
    with os.scandir(ae_dir) as entries:
        return {e.name: e.is_symlink() for e in entries if is_worklist_name(e.name)}


def _open_lockfile(lock_path: str) -> int:
    """Open the lockfile read-write as DCMTK does (``fcntl`` read locks need no more)."""
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        raise LockfileError(_open_failure(lock_path, error.errno or errno.EIO)) from error


def _open_failure(lock_path: str, code: int) -> str:
    """DCMTK's ERROR text for a lockfile that cannot be opened."""
    return (f"WlmDataSourceFileSystem::SetReadlock: Cannot open file {lock_path} "
            f"(return code: {os.strerror(code)})")


def _try_read_lock(fd: int, lock_path: str) -> bool:
    """One non-blocking ``F_SETLK`` ``F_RDLCK`` on the whole file; False if a writer holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise LockfileError(f"WlmDataSourceFileSystem::SetReadlock: Cannot set read lock on "
                            f"file {lock_path} (return code: {error.strerror})") from error
    return True


def _sort_key(record: WorklistRecord) -> SortKey:
    """The order of responses (records keep no sort key tuple: see ``WorklistRecord``)."""
    return record.sort_key


def _position(snapshot: list[WorklistRecord], record: WorklistRecord) -> int:
    """Where ``record`` sits in the sorted ``snapshot`` (sort keys are unique: they end in the
    name)."""
    at = bisect.bisect_left(snapshot, record.sort_key, key=_sort_key)
    assert snapshot[at].sort_key == record.sort_key
    return at
