"""The parsed worklist kept on disk between runs (``--index-file``), so that a restart is quick.

One SQLite file holds, per AE title and file name, the stat key of the version that was parsed
and the compact record made of it (compressed file bytes, sort key, index keys). At start-up
the store takes a saved record only if the file's stat key is still the same, so the directory
stays the source of truth: the index file saves parsing, never decides what is served. Anything
wrong with the index file (missing directory, corrupt, locked, written by another version or
for other options) costs a full parse, never a failed start.

The file holds patient data: it is created readable by its owner only.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import sqlite3
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from wlmd.worklist.compression import DICTIONARY_ID
from wlmd.worklist.index import Date, Filing, RecordKeys
from wlmd.worklist.records import Entry, Shelves, WorklistRecord
from wlmd.worklist.walker import Body

LOGGER = logging.getLogger(__name__)

# bump whenever the tables or what a row means change; a new compression dictionary changes it too
FORMAT = f"6-{DICTIONARY_ID}"
_RECORDS = """
    ae BLOB NOT NULL, name BLOB NOT NULL, stat BLOB NOT NULL,
    compressed BLOB,  -- the file's bytes (wlmd.worklist.compression); NULL: a rejected file
    start_date TEXT NOT NULL, start_time TEXT NOT NULL, add_references INTEGER NOT NULL,
    patient_ids BLOB, stations BLOB, modalities BLOB, dates TEXT,
    body INTEGER,  -- offset << 2 | implicit VR << 1 | little endian; NULL: no fast decoding
    matching BLOB  -- the matching-key values, packed (wlmd.worklist.compact)
"""
_TABLES = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records ({_RECORDS}, UNIQUE (ae, name));
"""
# a part holds each file once (one parse per start): no unique index to keep up, row by row
_PART_TABLES = f"CREATE TABLE records ({_RECORDS});"
# the order loads read records in; parts (``IndexPart``) go without it (a load from parts
# sorts), and a merge makes it anew (``IndexFile.merging``)
_IN_ORDER = ("CREATE INDEX IF NOT EXISTS records_in_order "
             "ON records (ae, start_date, start_time, name)")
_SCHEMA = _TABLES + _IN_ORDER + ";"
_INSERT = "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ATTACH_AT_ONCE = 8  # parts merged in one transaction (SQLite attaches up to 10 files)
PART_SUFFIX = ".part-"  # <index file>.part-<pid>: the rows one parsing process made
# how os.fsdecode decodes a file name, taken once: a load decodes one per row
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_COLUMNS = ("name, stat, compressed, start_date, start_time, add_references, "
            "patient_ids, stations, modalities, dates, body, matching")


class Filings:
    """What to file the records an index file held under, in response order, until the
    store's index has filed them (``WorklistStore.adopt``). Iterated: (name, index keys,
    packed matching keys), each made as it is taken.

    Columns: references to the names and to index-key values (which recur, one object each),
    and the packed matching keys side by side in one buffer. Not an object per record:
    100,000 small objects made while loading (the packed keys alone are 36 MB of them) would
    raise the supervisor's memory for good, as Python's allocator keeps every memory arena
    that the load's peak spread over; the buffer is one block of the C heap, given back
    whole.
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._patient_ids: list[tuple[bytes, ...]] = []
        self._stations: list[tuple[bytes, ...]] = []
        self._modalities: list[tuple[bytes, ...]] = []
        self._dates: list[tuple[Date, ...]] = []
        self._packed = bytearray()
        self._ends = array("L")  # where each record's packed keys end in ``_packed``

    def add(self, name: str, patient_ids: tuple[bytes, ...], stations: tuple[bytes, ...],
            modalities: tuple[bytes, ...], dates: tuple[Date, ...], packed: bytes) -> None:
        """Note what record ``name`` is filed under."""
        self._names.append(name)
        self._patient_ids.append(patient_ids)
        self._stations.append(stations)
        self._modalities.append(modalities)
        self._dates.append(dates)
        self._packed += packed
        self._ends.append(len(self._packed))

    def __iter__(self) -> Iterator[tuple[str, RecordKeys, bytes]]:
        packed = memoryview(self._packed)
        try:
            for name, patient_ids, stations, modalities, dates, (start, end) in zip(
                    self._names, self._patient_ids, self._stations, self._modalities,
                    self._dates, itertools.pairwise(itertools.chain((0,), self._ends)),
                    strict=True):
                yield (name, RecordKeys(patient_ids, stations, modalities, dates),
                       packed[start:end].tobytes())
        finally:
            packed.release()  # else the buffer cannot be dropped (or grown) while it lives


class Saved(dict[str, Entry]):
    """The entries an index file held for one AE, by file name, and what to file their
    records under (``filings``, which ``WorklistStore.adopt`` takes)."""

    filings: Filings

    def __init__(self) -> None:
        super().__init__()
        self.filings = Filings()


class IndexFile:
    """An open index file whose saved records fit ``signature`` (what they were parsed under)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._path = path

    @classmethod
    @contextmanager
    def opened(cls, path: Path, signature: Mapping[str, str]) -> Iterator[IndexFile | None]:
        """The index file at ``path``, emptied if it was saved under another signature.

        Yields None (and logs why) if it cannot be used; closed on leaving, so no connection
        is inherited by a forked worker.
        """
        connection = _connect(path, signature)
        if connection is None:
            yield None
            return
        with closing(connection):
            yield cls(connection, path)

    def load(self, ae: str) -> Saved:
        """The records saved for ``ae``, by file name ({} if it cannot be read), made as
        ``_read`` makes them."""
        try:
            return _read(self._db, ["records"], ae, in_order=True)
        except sqlite3.Error as error:
            LOGGER.warning("Cannot read index file (%s); parsing %s afresh", error, ae)
            return Saved()

    def count(self, ae: str) -> int:
        """How many files of ``ae`` have a row (0 if it cannot be read)."""
        try:
            with _reading(self._db):
                (count,), = self._db.execute("SELECT count(*) FROM records WHERE ae = ?",
                                             (os.fsencode(ae),))
        except sqlite3.Error:
            return 0
        return int(count)

    def save(self, ae: str, entries: Mapping[str, Entry], saved: Mapping[str, Entry],
             filing: Callable[[str], Filing]) -> None:
        """Bring the rows of ``ae`` from ``saved`` (as loaded) to ``entries``, whose records'
        index keys and packed matching keys the store's index gives
        (``WorklistStore.filing``).

        A rejected file is saved too (without a record), so that a restart neither parses
        nor logs it again until it changes.
        """
        ae_key = os.fsencode(ae)
        gone = [(ae_key, os.fsencode(name)) for name in saved if name not in entries]
        changed = [_row(ae_key, name, entry, filing) for name, entry in entries.items()
                   if (old := saved.get(name)) is None or old.key != entry.key]
        if not gone and not changed:
            return
        try:
            with _transaction(self._db):
                self._db.executemany("DELETE FROM records WHERE ae = ? AND name = ?", gone)
                self._db.executemany(_INSERT, changed)
        except sqlite3.Error as error:
            LOGGER.warning("Cannot update index file (%s); the next start parses more", error)


    def merge(self, parts: Sequence[Path]) -> None:
        """Take in the rows of each part (``IndexPart``) now, and delete it (``merging``)."""
        with self.merging(parts):
            pass

    @contextmanager
    def merging(self, parts: Sequence[Path]) -> Iterator[None]:
        """Take in the rows of each part while the block runs, then delete the parts.

        The copy runs inside SQLite, in a thread of its own with a connection of its own:
        SQLite does it without Python's lock, on another CPU, and syncs the disk, while the
        block makes records (of the same parts: ``load_parts``). Joined before the block's
        caller goes on, so no thread outlives it (the preload forks). One transaction for
        all parts (one sync; up to ``_ATTACH_AT_ONCE`` parts), in which the ordering index
        is dropped and made anew once the rows are in: that costs a third of keeping it up
        to date row by row. A part that cannot be read only costs parsing later; a crash
        leaves the index file as it was.
        """
        merger = threading.Thread(target=self._merge_parts, args=(list(parts),),
                                  name="wlmd-index-merge")
        merger.start()
        try:
            yield
        finally:
            merger.join()
            for part in parts:
                with suppress(OSError):
                    os.unlink(part)

    def _merge_parts(self, parts: list[Path]) -> None:
        try:
            db = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as error:
            LOGGER.warning("Cannot update index file (%s); the next start parses more", error)
            return
        with closing(db):
            for at in range(0, len(parts), _ATTACH_AT_ONCE):
                _merge_attached(db, parts[at:at + _ATTACH_AT_ONCE])


def _merge_attached(db: sqlite3.Connection, parts: list[Path]) -> None:
    """The rows of ``parts`` into ``db``'s records in one transaction (one sync), without
    those of a part that cannot be read."""
    attached = []
    try:
        for number, part in enumerate(parts):
            db.execute(f"ATTACH DATABASE ? AS part{number}", (os.fspath(part),))
            attached.append(f"part{number}")
        with _transaction(db):
            db.execute("DROP INDEX IF EXISTS records_in_order")
            for name in attached:
                db.execute("SAVEPOINT part")
                try:
                    db.execute(f"INSERT OR REPLACE INTO records SELECT * FROM {name}.records")
                except sqlite3.Error as error:
                    db.execute("ROLLBACK TO part")
                    LOGGER.warning("Cannot update index file (%s); the next start parses "
                                   "more", error)
                db.execute("RELEASE part")
            db.execute(_IN_ORDER)
    except sqlite3.Error as error:
        LOGGER.warning("Cannot update index file (%s); the next start parses more", error)
    finally:
        for name in attached:
            with suppress(sqlite3.Error):
                db.execute(f"DETACH DATABASE {name}")


def load_parts(ae: str, parts: Sequence[Path]) -> Saved:
    """The records of ``ae`` that ``parts`` (``IndexPart``) hold, by file name, made as
    ``IndexFile.load`` makes them ({} if some part cannot be read).

    A first start reads its records from here while the index file takes them in
    (``IndexFile.merging``): the load does not wait for the merge.
    """
    if not parts:
        return Saved()
    try:
        with closing(sqlite3.connect(parts[0], isolation_level=None)) as db:
            for number, part in enumerate(parts[1:], 1):
                db.execute(f"ATTACH DATABASE ? AS part{number}", (os.fspath(part),))
            return _read(db, ["main.records", *(f"part{number}.records"
                                                for number in range(1, len(parts)))], ae,
                         in_order=False)
    except sqlite3.Error as error:
        LOGGER.warning("Cannot read index file (%s); parsing %s afresh", error, ae)
        return Saved()


class IndexPart:
    """Rows saved by one parsing process into a file of its own, for ``IndexFile.merge``.

    One process's scratch file (``<index file>.part-<pid>``, private as the index file is):
    parsing processes never wait for each other's locks or for the disk (no journal, no
    sync: a part is thrown away unless merged, and only its merge must be crash-safe).
    """

    _opened: ClassVar[dict[tuple[int, Path], IndexPart]] = {}  # this process's part per index file

    def __init__(self, path: Path) -> None:
        self.path = path
        _create_private(path)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                               + _PART_TABLES)

    @classmethod
    def of_this_process(cls, index_path: Path) -> IndexPart:
        """This process's part of ``index_path``, created empty on first use."""
        key = (os.getpid(), index_path)
        if key not in cls._opened:
            part = index_path.with_name(f"{index_path.name}{PART_SUFFIX}{os.getpid()}")
            with suppress(FileNotFoundError):
                os.unlink(part)  # left by a process of an earlier run that had this pid
            cls._opened[key] = cls(part)
        return cls._opened[key]

    def save(self, ae: str, entries: Mapping[str, Entry]) -> None:
        """Add the rows of ``entries`` (one transaction)."""
        ae_key, filing = os.fsencode(ae), _own_filing(entries)
        with _transaction(self._db):
            self._db.executemany(_INSERT, [_row(ae_key, name, entry, filing)
                                           for name, entry in entries.items()])


def _own_filing(entries: Mapping[str, Entry]) -> Callable[[str], Filing]:
    """What freshly parsed entries still carry to be filed under (no index filed them yet)."""
    def filing(name: str) -> Filing:
        carried = entries[name].filing
        assert isinstance(carried, Filing), "a parsed record carries its keys"
        return carried
    return filing


def stale_parts(index_path: Path) -> list[Path]:
    """Parts of ``index_path`` left by a run that stopped before merging them."""
    pattern = f"{glob.escape(index_path.name)}{PART_SUFFIX}*"
    return sorted(index_path.parent.glob(pattern))


def _connect(path: Path, signature: Mapping[str, str]) -> sqlite3.Connection | None:
    """A connection to a usable index file at ``path``; a damaged one is started afresh."""
    for attempt in range(2):
        connection = None
        try:
            _create_private(path)
            connection = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            _prepare(connection, {**signature, "format": FORMAT})
            return connection
        except sqlite3.DatabaseError as error:
            if connection is not None:
                connection.close()
            if attempt or isinstance(error, sqlite3.OperationalError):  # locked, read-only…
                LOGGER.warning("Cannot use index file %s (%s); parsing every worklist file",
                               path, error)
                return None
            LOGGER.warning("Index file %s is damaged (%s); starting it afresh", path, error)
            os.truncate(path, 0)
        except OSError as error:
            LOGGER.warning("Cannot use index file %s (%s); parsing every worklist file",
                           path, error.strerror or error)
            return None
    return None


def _prepare(db: sqlite3.Connection, wanted: Mapping[str, str]) -> None:
    """Create the tables; drop every saved record if they were saved under another
    signature."""
    db.executescript(_SCHEMA)
    if dict(db.execute("SELECT key, value FROM meta")) != wanted:
        db.executescript("DROP TABLE records; DROP TABLE meta;" + _SCHEMA)
        with _transaction(db):
            db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(wanted.items()))


def _create_private(path: Path) -> None:
    """Create ``path`` readable and writable by its owner only, unless it exists."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


@contextmanager
def _reading(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: several SELECTs see the same rows."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _row(ae: bytes, name: str, entry: Entry, filing: Callable[[str], Filing]
         ) -> tuple[object, ...]:
    record = entry.record
    if record is None:
        return (ae, os.fsencode(name), entry.key, None, "", "", 0, None, None, None, None,
                None, None)
    keys, packed = filing(name)
    return (ae, os.fsencode(name), entry.key, record.compressed, record.date,
            record.time, int(record.add_references), _join(keys.patient_ids),
            _join(keys.stations), _join(keys.modalities),
            "\\".join(f"{y:04d}{m:02d}{d:02d}" for y, m, d in keys.dates) or None,
            None if record.body is None else
            record.body[0] << 2 | record.body[1] << 1 | record.body[2], packed)


def _read(db: sqlite3.Connection, tables: list[str], ae: str, *, in_order: bool
          ) -> Saved:
    """The records of ``ae`` that ``tables`` hold, by file name; ``in_order``: they have the
    ordering index (else SQLite sorts them).

    Made in response order, row by row, with one object for equal values (dates,
    stations…): the records of one day end up side by side in memory, and nothing is
    left behind to fragment it (see ``preload.compact``). What to file each record under
    waits in ``Saved.filings`` (which holds no object per record) until the store's index
    has filed it (``WorklistStore.adopt``).
    """
    ae_key = os.fsencode(ae)
    scanned = "" if in_order else " NOT INDEXED"
    with _reading(db):
        return _entries(db.execute(" UNION ALL ".join(
            f"SELECT {_COLUMNS} FROM {table}{scanned} WHERE ae = ?1 AND "
            "(compressed IS NULL OR matching IS NOT NULL)" for table in tables)
            + " ORDER BY start_date, start_time, name", (ae_key,)))


def _entries(rows: Iterable[tuple[Any, ...]]) -> Saved:
    """The entries ``rows`` (``_COLUMNS``) hold, by file name, made in one loop, and what to
    file their records under (``Saved.filings``).

    One object for equal values (days, times, stations, modalities, patient IDs, parsed
    once each): they recur across 100,000 records and cost a reference each instead of an
    object each. The records' bytes go on shelves, in response order.
    """
    shared: dict[Any, Any] = {}
    one = shared.setdefault  # called 200,000 times at 100,000 records: no wrapper
    # index-key columns as parsed, by column value
    patients_of: dict[bytes | None, tuple[bytes, ...]] = {}
    stations_of: dict[bytes | None, tuple[bytes, ...]] = {}
    modalities_of: dict[bytes | None, tuple[bytes, ...]] = {}
    dates_of: dict[str | None, tuple[Date, ...]] = {}
    bodies: dict[int, Body] = {}
    entries = Saved()
    filings = entries.filings
    shelves = Shelves()
    put = shelves.put
    for (name, stat, compressed, date, time, add_references, patient_ids, stations, modalities,
         dates, body, matching) in rows:
        name = name.decode(_FS_ENCODING, _FS_ERRORS)
        if name in entries:  # in two parts (never so far): the first, filed once
            continue
        if compressed is None:
            entries[name] = Entry(stat, None)
            continue
        patient_keys = patients_of.get(patient_ids)
        if patient_keys is None:
            patient_keys = patients_of[patient_ids] = _split(patient_ids)
        station_keys = stations_of.get(stations)
        if station_keys is None:
            station_keys = stations_of[stations] = _split(stations)
        modality_keys = modalities_of.get(modalities)
        if modality_keys is None:
            modality_keys = modalities_of[modalities] = _split(modalities)
        date_keys = dates_of.get(dates)
        if date_keys is None:
            date_keys = dates_of[dates] = _dates(dates)
        if body is not None:
            body = bodies.get(body) or bodies.setdefault(
                body, (body >> 2, bool(body & 2), bool(body & 1)))
        record = WorklistRecord(*put(compressed), one(date, date), one(time, time), name,
                                bool(add_references), body)
        entries[name] = Entry(stat, record)
        filings.add(name, patient_keys, station_keys, modality_keys, date_keys, matching)
    shelves.finish()
    return entries


def _join(values: tuple[bytes, ...]) -> bytes | None:
    """Values never hold a backslash (they were split on it); None keeps () apart from (b"",)."""
    return b"\\".join(values) if values else None


def _split(joined: bytes | None) -> tuple[bytes, ...]:
    return () if joined is None else tuple(joined.split(b"\\"))


def _dates(joined: str | None) -> tuple[Date, ...]:
    if joined is None:
        return ()
    return tuple((int(v[:4]), int(v[4:6]), int(v[6:])) for v in joined.split("\\"))
