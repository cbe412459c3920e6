"""One worklist file: read it safely, parse and check it once, keep it compact.

A served record keeps the file's bytes (compressed, ``compression.py``, on a ``Shelf`` shared
with other records) and its sort key; the index (``index.py``) keeps its packed matching-key
values (``compact.py``), the only copy of them, and derives its index keys from them. Nothing
keeps the parsed dataset: a pydicom dataset costs about sixteen times the file it came from,
and 100,000 of them would not fit the memory a worklist server may take. Matching reads the
packed values; the dataset is decoded again only to build an answer (``WorklistRecord.dataset``);
the response cache (``cache.py``) keeps what a repeated query would decode again.

Everything that can go wrong with one file (unreadable, truncated, not DICOM, incomplete, a
symbolic link leading out of ``-dfp``) is logged once per version of that file, and the file
is left out.
"""

from __future__ import annotations

import contextvars
import errno
import io
import itertools
import logging
import os
import stat
import struct
import warnings
from array import array
from dataclasses import dataclass
from typing import Any, Literal

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from wlmd.worklist.compact import pack
from wlmd.worklist.completeness import (
    SPS,
    Level,
    add_missing_references,
    dictionary_vr,
    is_complete,
    raw_value,
    sequence_of,
)
from wlmd.worklist.compression import compressed, decompressed
from wlmd.worklist.index import Filing, record_keys
from wlmd.worklist.keys import SPS_START_DATE, SPS_START_TIME
from wlmd.worklist.walker import Body, walk

LOGGER = logging.getLogger(__name__)
# The worklist file (path and stat key) whose reading is being logged, if any.
FILE_VERSION: contextvars.ContextVar[str] = contextvars.ContextVar("FILE_VERSION", default="")

UNDEFINED_LENGTH = 0xFFFFFFFF
# The error texts DCMTK's loadFile gives for the same conditions, so logs read alike.
END_OF_STREAM = "End of stream"
PREMATURE_END = "I/O suspension or premature end of stream"

# st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns, packed: one object, not six, per file
StatKey = bytes
_STAT_KEY = struct.Struct("<QQQqq")
SortKey = tuple[str, str, str]  # SPS start date, SPS start time, file name
PREAMBLE = 128
LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"))  # explicit VRs with a 4-byte length


class Unreadable(Exception):
    """One worklist file cannot be used; the message is the reason DCMTK-style logs give."""


class Unstable(Exception):
    """The file changed while it was being read."""


SHELF_RECORDS = 256  # records per shelf: a slot number is a cached small int, not an object


class Shelf:
    """The compressed bytes of up to ``SHELF_RECORDS`` records, side by side in one buffer.

    An answer reads its record's bytes, and reading a bytes object of its own writes its
    reference count, which un-shares from the supervisor the memory page it sits on: some
    3.5 MB in every busy worker at 100,000 entries (a query's candidates are spread over a
    day's records). A shelf is one object for 256 records, and saves each a bytes header.
    A full shelf is sealed (``bytes``), and the preload may move it into a shared file mapping
    (``mapped.py``; then ``data`` views the mapping).
    """

    __slots__ = ("data", "ends")

    def __init__(self) -> None:
        self.data: bytes | bytearray | memoryview = bytearray()
        self.ends = array("L")  # where the bytes of each slot end

    def get(self, slot: int) -> bytes:
        """The bytes put in ``slot``."""
        ends = self.ends
        return bytes(self.data[ends[slot - 1] if slot else 0:ends[slot]])

    def sealed(self) -> list[bytes]:
        """The shelf's bytes if it is full and still in the heap (``mapped.Sealed``)."""
        return [self.data] if isinstance(self.data, bytes) else []

    def moved(self, views: list[memoryview]) -> None:
        """Read the shelf's bytes from the one view of them given (``mapped.Sealed``)."""
        (self.data,) = views


class Shelves:
    """Puts records' compressed bytes on shelves, filling one shelf after the other.

    A shelf's bytes are joined once it is full (or at ``finish``), not grown record by
    record: a first start puts 100,000 records.
    """

    def __init__(self) -> None:
        self._shelf: Shelf | None = None
        self._waiting: list[bytes] = []  # the bytes put on ``_shelf``, not joined yet

    def put(self, data: bytes) -> tuple[Shelf, int]:
        """The shelf and slot ``data`` is kept in (readable once full, or after ``finish``)."""
        waiting = self._waiting
        if len(waiting) == SHELF_RECORDS or self._shelf is None:
            self.finish()
            self._shelf = Shelf()
        waiting.append(data)
        return self._shelf, len(waiting) - 1

    def finish(self) -> None:
        """Join the bytes waiting for their shelf: a full shelf is sealed (``bytes``), the
        last one is left open (``bytearray``)."""
        shelf, waiting = self._shelf, self._waiting
        if shelf is None or not waiting:
            return
        joined = b"".join(waiting)
        shelf.data = joined if len(waiting) == SHELF_RECORDS else bytearray(joined)
        shelf.ends = array("L", itertools.accumulate(map(len, waiting)))
        waiting.clear()


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class WorklistRecord:
    """One served worklist file, as compact as it can be kept.

    A record is replaced by a new object whenever its file changes, and compares by identity,
    so caches can key on it (weakly).
    """

    shelf: Shelf | bytes  # the file as read, compressed: on a shared shelf, or on its own
    slot: int  # where on the shelf (0 for bytes of its own)
    date: str  # the first SPS start date and time, as written ("" if absent)
    time: str
    name: str  # the file's name in its AE directory
    add_references: bool  # the file-reject check added (0008,1110)/(0008,1120) if missing
    body: Body | None  # where the dataset starts and how it is encoded; None: read the file

    @property
    def sort_key(self) -> SortKey:
        """The record's place in responses, a tuple made anew (a tuple per record kept would
        cost 6 MB at 100,000 records, and a worker sorting candidates would write to them)."""
        return self.date, self.time, self.name

    @property
    def compressed(self) -> bytes:
        """The file's bytes as read, compressed (``data`` decompresses them)."""
        shelf = self.shelf
        return shelf if isinstance(shelf, bytes) else shelf.get(self.slot)

    @property
    def data(self) -> bytes:
        """The file's bytes as read, decompressed anew on every call."""
        return decompressed(self.compressed)

    @property
    def dataset(self) -> Dataset:
        """The file's dataset, decoded anew on every call (callers keep it while they need it).

        Elements keep pydicom's raw form until something converts them, so
        ``dataset.get_item(tag).value`` gives the file's bytes, padding included.
        """
        dataset = _decode(self.data, self.body)
        if self.add_references:
            add_missing_references(dataset)
        return dataset


def shared_record(compressed_data: bytes, sort_key: SortKey, add_references: bool,
                  body: Body | None, shared: dict[Any, Any], shelves: Shelves
                  ) -> WorklistRecord:
    """A record whose date, time and body are the equal objects already in ``shared``, and
    whose bytes go on ``shelves`` (readable once the caller has called ``finish``).

    The same few values (days, times) recur across 100,000 records: kept once, they cost a
    reference each instead of an object each.
    """
    one = shared.setdefault  # called 300,000 times at 100,000 records: no wrapper
    date, time, name = sort_key
    return WorklistRecord(*shelves.put(compressed_data), one(date, date), one(time, time), name,
                          add_references, one(body, body))


@dataclass(slots=True)
class Entry:
    """What one directory entry gave the last time its stat key changed."""

    key: StatKey
    record: WorklistRecord | None  # None: rejected, and already logged for this key
    # What a parsed file's record is filed under in the store's index, until it is (None
    # then): the index keeps the only copy of the packed matching keys
    # (``store.Candidates.match_view``) and derives the index keys from them again when it
    # needs them (``index.keys_of``). Records from an index file have theirs in
    # ``persist.Filings``.
    filing: Filing | None = None


@dataclass(frozen=True)
class FileLoader:
    """Reads, parses and checks worklist files; small and picklable, so loads can run in a pool.

    ``root_text`` is ``-dfp`` as spelled on the command line (log lines use it, as DCMTK's do).
    """

    root_text: str
    file_reject: bool
    max_file_bytes: int

    def load(self, path: str, name: str, st: os.stat_result, is_link: bool,
             real_root: str) -> tuple[Entry | None, bool]:
        """The entry for one version of a file, and whether it was parsed.

        The entry is None if the file changed while it was being read (try again later).
        While it runs, FILE_VERSION names the file and version, so that the supervisor can log
        once what several pre-forked workers each find about the same file.
        """
        key = stat_key(st)
        token = FILE_VERSION.set(f"{path} {key.hex()}")
        try:
            return self._load_version(path, name, st, key, is_link, real_root)
        finally:
            FILE_VERSION.reset(token)

    def load_many(self, tasks: list[tuple[str, str, os.stat_result, bool, str]]
                  ) -> list[tuple[Entry | None, bool]]:
        """``load`` for each task in turn (one batch of a parallel load)."""
        return [self.load(*task) for task in tasks]

    def _load_version(self, path: str, name: str, st: os.stat_result, key: StatKey,
                      is_link: bool, real_root: str) -> tuple[Entry | None, bool]:
        try:
            target = self._target(path, st, is_link, real_root)
            data, key = read_stable(target, self.max_file_bytes)
        except Unreadable as error:
            LOGGER.warning('Could not read worklist file "%s", file will be ignored: %s',
                           path, error)
            return Entry(key, None), False
        except Unstable:
            return None, False
        try:
            dataset, body = walk(data) or parse_worklist_file(data)
        except Unreadable as error:
            LOGGER.warning('Could not read worklist file "%s", file will be ignored: %s',
                           path, error)
            return Entry(key, None), True
        # keys(), not iter(dataset): iterating a Dataset converts every raw element
        if not any(tag >> 16 > 0x0002 for tag in dataset.keys()):  # noqa: SIM118
            LOGGER.warning('Worklist file "%s" is empty, file will be ignored', path)
            return Entry(key, None), True
        if self.file_reject:
            LOGGER.info('Checking whether worklist file "%s" is complete', path)
            if not is_complete(dataset):
                LOGGER.warning('Worklist file "%s" is incomplete, file will be ignored', path)
                return Entry(key, None), True
        record = WorklistRecord(compressed(data), 0, *sort_key_of(dataset, name),
                                self.file_reject, body)
        return Entry(key, record, Filing(record_keys(dataset), pack(dataset))), True

    def _target(self, path: str, st: os.stat_result, is_link: bool, real_root: str) -> str:
        """The file to open for ``path``, refusing what wlmd must not read."""
        if is_link:
            if stat.S_ISLNK(st.st_mode):
                raise Unreadable(os.strerror(errno.ENOENT))
            real = os.path.realpath(path)
            if not inside(real, real_root):
                raise Unreadable(f"symbolic link leads outside {self.root_text}")
            path = real
        if stat.S_ISDIR(st.st_mode):
            raise Unreadable(os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if st.st_size > self.max_file_bytes:
            raise Unreadable(f"file too large ({st.st_size} bytes, limit "
                             f"{self.max_file_bytes})")
        return path


def parse_worklist_file(data: bytes) -> tuple[Dataset, Body | None]:
    """Parse a worklist file's bytes like DCMTK's ``loadFile``: meta header optional.

    pydicom tolerates truncation silently, so reads are watched: a file that ends inside an
    element, or a value shorter than its length field, is refused as DCMTK refuses it. Also
    gives where the dataset starts, for decoding it again (``_body_of``).
    """
    if not data:
        raise Unreadable(END_OF_STREAM)
    buffer = _WatchedBuffer(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd values; they are served
            dataset = dcmread(buffer, force=True)
            truncated = buffer.truncated or _has_short_value(dataset.file_meta) \
                or _has_short_value(dataset)
    except Exception as error:  # pydicom raises many types on malformed input
        raise Unreadable(f"{type(error).__name__}: {error}") from error
    if truncated:
        raise Unreadable(PREMATURE_END)
    body = _body_of(data, dataset)
    return _without_file_parts(dataset), body


def _body_of(data: bytes, dataset: Dataset) -> Body | None:
    """Where the dataset that pydicom read from ``data`` starts, and its encoding.

    Decoding from there skips the preamble and meta header, half of the work. Only for the
    common layout (preamble, "DICM", a meta header of explicit VR little endian elements, an
    uncompressed dataset), and only if the element found there is the one pydicom read
    first; anything else (None) is decoded as a whole file again.
    """
    meta = dataset.file_meta
    if data[PREAMBLE:PREAMBLE + 4] != b"DICM" or meta is None or not len(dataset) \
            or meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return None
    offset = PREAMBLE + 4
    while offset + 8 <= len(data) and data[offset:offset + 2] == b"\x02\x00":
        if data[offset + 4:offset + 6] in LONG_VRS:
            offset += 12 + int.from_bytes(data[offset + 8:offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6:offset + 8], "little")
    implicit, little = dataset.original_encoding
    if implicit is None or little is None or offset + 4 > len(data):
        return None
    first = next(iter(dataset.keys()))
    order: Literal["little", "big"] = "little" if little else "big"
    found = (int.from_bytes(data[offset:offset + 2], order),
             int.from_bytes(data[offset + 2:offset + 4], order))
    if found != (first.group, first.element):
        return None
    return offset, implicit, little


def _decode(data: bytes, body: Body | None) -> Dataset:
    """Parse bytes that ``parse_worklist_file`` already accepted, without watching again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if body is None:
            return _without_file_parts(dcmread(io.BytesIO(data), force=True))
        offset, implicit, little = body
        return read_dataset(io.BytesIO(data[offset:]), implicit, little)


def _without_file_parts(dataset: Dataset) -> Dataset:
    """The parsed elements only: not the file's bytes, preamble or meta header (nothing serves
    them)."""
    dataset.buffer = None
    del dataset.file_meta
    dataset.preamble = None
    return dataset


class _WatchedBuffer(io.BytesIO):
    """Remembers reads that came back short, except those pydicom rewinds (look-aheads).

    A read of 8 bytes that finds nothing is pydicom asking for the next element header at the
    end of the data, which is how a complete file ends.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._short_reads: list[int] = []

    @property
    def truncated(self) -> bool:
        """True if some read the parser relied on came back short."""
        return bool(self._short_reads)

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        data = super().read(size)
        if size is not None and size > 0 and len(data) < size and (data or size != 8):
            self._short_reads.append(start)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        self._short_reads = [start for start in self._short_reads if start < position]
        return position


def _has_short_value(dataset: Dataset) -> bool:
    """True if a raw element anywhere holds fewer bytes than its length field announced."""
    for tag in list(dataset.keys()):
        element = dataset.get_item(tag)
        if isinstance(element, RawDataElement):
            if element.length != UNDEFINED_LENGTH and len(element.value or b"") != element.length:
                return True
            if (element.VR or dictionary_vr(tag)) != "SQ":
                continue
        items = sequence_of(dataset, tag)
        if items is not None and any(_has_short_value(item) for item in items):
            return True
    return False


def read_stable(path: str, limit: int) -> tuple[bytes, StatKey]:
    """The bytes of ``path`` and the stat key they belong to; Unstable if it changed meanwhile.

    Opened without following links (a link was already resolved and checked) and without
    blocking, so a FIFO swapped in cannot hang the server.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as error:
        raise Unstable from error
    except OSError as error:
        raise Unreadable(error.strerror or str(error)) from error
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise Unstable
        if before.st_size > limit:
            raise Unreadable(f"file too large ({before.st_size} bytes, limit {limit})")
        chunks = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, asked := min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
            if len(chunk) < asked and limit + 1 - remaining == before.st_size:
                break  # the end as the file's size says: no read to find it (the check follows)
        after = os.fstat(fd)
    except OSError as error:
        raise Unreadable(error.strerror or str(error)) from error
    finally:
        os.close(fd)
    key = stat_key(after)
    if stat_key(before) != key or remaining <= 0:
        raise Unstable
    return b"".join(chunks), key


def stat_key(st: os.stat_result) -> StatKey:
    """What identifies one version of a file without reading it."""
    return _STAT_KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def inside(real_path: str, real_root: str) -> bool:
    """True if the resolved ``real_path`` lies below the resolved ``real_root``."""
    return real_path.startswith(real_root.rstrip(os.sep) + os.sep)


def sort_key_of(dataset: Level, name: str) -> SortKey:
    """wlmd's stable response order: SPS start date, SPS start time, then file name."""
    steps = sequence_of(dataset, SPS)
    step: Level = steps[0] if steps else Dataset()
    return (_text(step, SPS_START_DATE), _text(step, SPS_START_TIME), name)


def _text(dataset: Level, tag: int) -> str:
    """A short string value as plain text without padding, "" if absent."""
    return (raw_value(dataset, tag) or b"").decode("latin-1").strip(" \0")
