"""The worklist store: one directory of ``*.wl`` files per called AE title under ``-dfp``.

The directory stays the source of truth (COMPAT §1): every query refreshes the AE first, so a
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
import contextvars
import errno
import fcntl
import io
import logging
import os
import stat
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, config, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from wlmd.worklist.completeness import (
    SPS,
    dictionary_vr,
    is_complete,
    raw_value,
    sequence_of,
)
from wlmd.worklist.index import Prefilter, WorklistIndex
from wlmd.worklist.inotify import Inotify

LOGGER = logging.getLogger("wlmd.store")
# The worklist file (path and stat key) whose reading is being logged, if any.
FILE_VERSION: contextvars.ContextVar[str] = contextvars.ContextVar("FILE_VERSION", default="")

LOCKFILE = "lockfile"
WORKLIST_SUFFIX = ".wl"
MAX_AE_LENGTH = 16
DEFAULT_LOCK_WAIT = 10.0  # seconds to wait for a writer when there is no snapshot to serve
DEFAULT_MAX_FILE_BYTES = 16 << 20  # a worklist file is a few KiB; anything this big is junk
LOCK_POLL_INTERVAL = 0.05
UNDEFINED_LENGTH = 0xFFFFFFFF
RESORT_FRACTION = 8  # more changes than 1/8 of the records: sort again instead of bisecting
SPS_START_DATE, SPS_START_TIME = Tag(0x00400002), Tag(0x00400003)

# The error texts DCMTK's loadFile gives for the same conditions, so logs read alike.
END_OF_STREAM = "End of stream"
PREMATURE_END = "I/O suspension or premature end of stream"

StatKey = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


class DataSourceError(Exception):
    """The ``-dfp`` root is missing or unreadable ("Cannot connect to data source.")."""


class LockfileError(Exception):
    """``<AE>/lockfile`` cannot be opened or read-locked; the C-FIND fails with 0xA700."""


class _Unreadable(Exception):
    """One worklist file cannot be used; the message is the reason DCMTK-style logs give."""


class _Unstable(Exception):
    """The file changed while it was being read."""


@dataclass(frozen=True, eq=False)
class WorklistRecord:
    """One served worklist file: the dataset as loaded (shared between queries: do not modify).

    Elements keep pydicom's raw form until something converts them, so
    ``dataset.get_item(tag).value`` gives the file's bytes, padding included. A record is
    replaced by a new object whenever its file changes, and compares by identity, so caches
    can key on it.
    """

    path: Path
    dataset: Dataset
    sort_key: tuple[str, str, str]  # SPS start date, SPS start time, file name


@dataclass(slots=True)
class _Entry:
    """What one directory entry gave the last time its stat key changed."""

    key: StatKey
    record: WorklistRecord | None  # None: rejected, and already logged for this key


@dataclass
class _AeCache:
    """Per called AE: the entries by file name and the last consistent snapshot.

    ``snapshot`` is kept in ``sort_key`` order (``order`` holds the keys, for bisection) and
    ``index`` files the same records; both change only in ``_apply``.
    """

    entries: dict[str, _Entry] = field(default_factory=dict)
    snapshot: list[WorklistRecord] | None = None
    order: list[tuple[str, str, str]] = field(default_factory=list)
    index: WorklistIndex = field(default_factory=WorklistIndex)
    links: set[str] = field(default_factory=set)  # symbolic links: re-checked every refresh
    retry: set[str] = field(default_factory=set)  # names whose last check was inconclusive
    pending: list[tuple[WorklistRecord | None, WorklistRecord | None]] = field(
        default_factory=list)  # (old, new) served records changed by the running refresh
    lock_warned: bool = False  # a "writer holds the lock" warning was logged this episode
    scan_warned: bool = False  # a "cannot list the directory" warning was logged this episode


def is_safe_ae(ae: str) -> bool:
    """True if ``ae`` can name a directory right under ``-dfp`` and nothing else.

    wlmd departs from wlmscpfs 3.6.7 here (which accepts ``../x``): 1–16 characters, no
    ``/``, no ``..``, not ``.``, no NUL or other control characters.
    """
    return (
        0 < len(ae) <= MAX_AE_LENGTH
        and "/" not in ae
        and ".." not in ae
        and ae != "."
        and all(0x20 <= ord(ch) != 0x7F for ch in ae)
    )


def is_worklist_name(name: str) -> bool:
    """DCMTK ``OFpath::extension() == ".wl"``: the last dot, and not a leading dot."""
    dot = name.rfind(".")
    return dot > 0 and name[dot:] == WORKLIST_SUFFIX


class WorklistStore:
    """The ``-dfp`` worklist database, kept in step with the directory by stat-based refresh."""

    def __init__(self, root: Path, *, file_reject: bool, lock_wait: float = DEFAULT_LOCK_WAIT,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self._root = root
        self._root_text = str(root)  # paths in log lines keep the -dfp spelling, like DCMTK's
        self._file_reject = file_reject
        self._lock_wait = lock_wait
        self._max_file_bytes = max_file_bytes
        self._caches: dict[str, _AeCache] = {}
        self._inotify = Inotify()
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

    def load_all(self) -> None:
        """Refresh every called AE directory now, so forked workers inherit the parsed records."""
        try:
            names = sorted(os.listdir(self._root))
        except OSError:
            return
        for ae in names:
            if self.knows_called_ae(ae):
                try:
                    _compact(self._refreshed(ae))
                except LockfileError as error:
                    LOGGER.warning("Not preloaded: %s", error)

    def query(self, ae: str, prefilter: Prefilter | None) -> list[WorklistRecord]:
        """The records of ``ae`` that can match ``prefilter``, in ``sort_key`` order.

        A superset of the matches (None: every record served), refreshed under the read lock;
        costs in proportion to the candidates, not the worklist, when the prefilter narrows.
        Raises LockfileError when the lockfile cannot be opened, or when a writer holds it
        longer than ``lock_wait`` before any snapshot of this AE exists.
        """
        cache = self._refreshed(ae)
        snapshot = cache.snapshot or []
        if prefilter is None:
            return list(snapshot)
        names = cache.index.candidates(prefilter)
        if len(names) * RESORT_FRACTION > len(snapshot):
            return [record for record in snapshot if record.sort_key[2] in names]
        found = [cache.entries[name].record for name in names]
        return sorted((r for r in found if r is not None), key=lambda r: r.sort_key)

    def _refreshed(self, ae: str) -> _AeCache:
        """The cache of ``ae`` brought in step with its directory under the read lock."""
        ae_dir = self._ae_dir(ae)
        if ae_dir is None:
            raise LockfileError(_open_failure(os.path.join(self._root_text, ae, LOCKFILE),
                                              errno.ENOENT))
        lock_path = os.path.join(ae_dir, LOCKFILE)
        fd = _open_lockfile(lock_path)
        try:
            cache = self._caches.setdefault(ae, _AeCache())
            if self._lock(fd, lock_path, cache):
                self._refresh(cache, ae_dir)
        finally:
            os.close(fd)  # closing the descriptor releases the fcntl lock
        return cache

    def _ae_dir(self, ae: str) -> str | None:
        """``<dfp>/<ae>`` if it is a safe name for a directory that resolves inside ``-dfp``."""
        if not is_safe_ae(ae):
            return None
        path = os.path.join(self._root_text, ae)
        if not os.path.isdir(path) or not _inside(os.path.realpath(path), self._real_root()):
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
        names = None if cache.snapshot is None else self._inotify.changes(ae_dir)
        if names is None:
            self._scan(cache, ae_dir)
        else:
            real_root = self._real_root()
            names |= cache.links | cache.retry
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
        for name, is_link in names.items():
            self._update(cache, ae_dir, name, is_link, real_root)

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
        for old, new in pending:
            if old is not None:
                cache.index.remove(old.sort_key[2])
            if new is not None:
                cache.index.add(new.sort_key[2], new.dataset)
        snapshot = cache.snapshot
        if snapshot is None or len(pending) * RESORT_FRACTION > len(snapshot):
            cache.snapshot = sorted(
                (e.record for e in cache.entries.values() if e.record is not None),
                key=lambda record: record.sort_key,
            )
            cache.order = [record.sort_key for record in cache.snapshot]
            return
        for old, new in pending:
            if old is not None:
                at = _position(cache.order, old.sort_key)
                del snapshot[at], cache.order[at]
            if new is not None:
                at = bisect.bisect_left(cache.order, new.sort_key)
                cache.order.insert(at, new.sort_key)
                snapshot.insert(at, new)

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
            cache.pending.append((old.record, None))

    def _update(self, cache: _AeCache, ae_dir: str, name: str, is_link: bool,
                real_root: str) -> None:
        """Re-read ``name`` if its stat key changed, noting a changed record in ``pending``."""
        path = os.path.join(ae_dir, name)
        old = cache.entries.get(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not is_link:  # removed since the listing: the next refresh drops it
                cache.retry.add(name)
                return
            st = os.lstat(path)  # a dangling link: judge (and log) it by the link itself
        except OSError:
            cache.retry.add(name)
            return
        key = _stat_key(st)
        if old is not None and old.key == key:
            return
        entry = self._load(path, name, st, is_link, real_root)
        if entry is None:  # changed while being read: keep what we had, retry next time
            cache.retry.add(name)
            return
        cache.entries[name] = entry
        old_record = None if old is None else old.record
        if entry.record is not None or old_record is not None:
            cache.pending.append((old_record, entry.record))

    def _load(self, path: str, name: str, st: os.stat_result, is_link: bool,
              real_root: str) -> _Entry | None:
        """Read, parse and check one file; log why it is left out, once for this version.

        While it runs, FILE_VERSION names the file and version, so that the supervisor can log
        once what several pre-forked workers each find about the same file.
        """
        token = FILE_VERSION.set(f"{path} {_stat_key(st)}")
        try:
            return self._load_version(path, name, st, is_link, real_root)
        finally:
            FILE_VERSION.reset(token)

    def _load_version(self, path: str, name: str, st: os.stat_result, is_link: bool,
                      real_root: str) -> _Entry | None:
        key = _stat_key(st)
        try:
            target = self._target(path, st, is_link, real_root)
            data, key = _read_stable(target, self._max_file_bytes)
        except _Unreadable as error:
            LOGGER.warning('Could not read worklist file "%s", file will be ignored: %s',
                           path, error)
            return _Entry(key, None)
        except _Unstable:
            return None
        self.parse_count += 1
        try:
            dataset = parse_worklist_bytes(data)
        except _Unreadable as error:
            LOGGER.warning('Could not read worklist file "%s", file will be ignored: %s',
                           path, error)
            return _Entry(key, None)
        # keys(), not iter(dataset): iterating a Dataset converts every raw element
        if not any(tag.group > 0x0002 for tag in dataset.keys()):  # noqa: SIM118
            LOGGER.warning('Worklist file "%s" is empty, file will be ignored', path)
            return _Entry(key, None)
        if self._file_reject:
            LOGGER.info('Checking whether worklist file "%s" is complete', path)
            if not is_complete(dataset):
                LOGGER.warning('Worklist file "%s" is incomplete, file will be ignored', path)
                return _Entry(key, None)
        return _Entry(key, WorklistRecord(Path(path), dataset, _sort_key(dataset, name)))

    def _target(self, path: str, st: os.stat_result, is_link: bool, real_root: str) -> str:
        """The file to open for ``path``, refusing what wlmd must not read."""
        if is_link:
            if stat.S_ISLNK(st.st_mode):
                raise _Unreadable(os.strerror(errno.ENOENT))
            real = os.path.realpath(path)
            if not _inside(real, real_root):
                raise _Unreadable(f"symbolic link leads outside {self._root_text}")
            path = real
        if stat.S_ISDIR(st.st_mode):
            raise _Unreadable(os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise _Unreadable("not a regular file")
        if st.st_size > self._max_file_bytes:
            raise _Unreadable(f"file too large ({st.st_size} bytes, limit "
                              f"{self._max_file_bytes})")
        return path


def parse_worklist_bytes(data: bytes) -> Dataset:
    """Parse a worklist file's bytes like DCMTK's ``loadFile``: meta header optional.

    pydicom tolerates truncation silently, so reads are watched: a file that ends inside an
    element, or a value shorter than its length field, is refused as DCMTK refuses it.
    """
    if not data:
        raise _Unreadable(END_OF_STREAM)
    buffer = _WatchedBuffer(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd values; they are served
            dataset = dcmread(buffer, force=True)
            truncated = buffer.truncated or _has_short_value(dataset.file_meta) \
                or _has_short_value(dataset)
    except Exception as error:  # pydicom raises many types on malformed input
        raise _Unreadable(f"{type(error).__name__}: {error}") from error
    if truncated:
        raise _Unreadable(PREMATURE_END)
    # Records live long (100,000 of them in every worker): keep the parsed elements only, not
    # the file's bytes nor its meta header (a sixth of a record; nothing serves it).
    dataset.buffer = None
    dataset.file_meta = None
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


def _read_stable(path: str, limit: int) -> tuple[bytes, StatKey]:
    """The bytes of ``path`` and the stat key they belong to; _Unstable if it changed meanwhile.

    Opened without following links (a link was already resolved and checked) and without
    blocking, so a FIFO swapped in cannot hang the server.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as error:
        raise _Unstable from error
    except OSError as error:
        raise _Unreadable(error.strerror or str(error)) from error
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise _Unstable
        if before.st_size > limit:
            raise _Unreadable(f"file too large ({before.st_size} bytes, limit {limit})")
        chunks = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    except OSError as error:
        raise _Unreadable(error.strerror or str(error)) from error
    finally:
        os.close(fd)
    if _stat_key(before) != _stat_key(after) or remaining <= 0:
        raise _Unstable
    return b"".join(chunks), _stat_key(after)


def _list_worklist_files(ae_dir: str) -> dict[str, bool]:
    """The ``*.wl`` names in ``ae_dir`` (no recursion), each with "is a symbolic link"."""
    with os.scandir(ae_dir) as entries:
        return {e.name: e.is_symlink() for e in entries if is_worklist_name(e.name)}


def _open_lockfile(lock_path: str) -> int:
    """Open the lockfile read-write as DCMTK does (``fcntl`` read locks need no more)."""
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        raise LockfileError(_open_failure(lock_path, error.errno)) from error


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


def _compact(cache: _AeCache) -> None:
    """Re-create what a full scan touches (names, entries, stat keys) side by side in memory.

    Parsed one by one, each file's entry sits on the same memory pages as its dataset; a
    forked worker's first (full) scan then writes a reference count on every one of those
    pages and un-shares the whole worklist. Fresh copies, allocated together, keep the
    scan's writes on a few pages of their own.
    """
    cache.entries = {
        name.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape"):
            _Entry((*entry.key,), entry.record)
        for name, entry in cache.entries.items()
    }


def _position(order: list[tuple[str, str, str]], key: tuple[str, str, str]) -> int:
    """Where ``key`` sits in the sorted ``order`` (sort keys are unique: they end in the name)."""
    at = bisect.bisect_left(order, key)
    assert order[at] == key
    return at


def _stat_key(st: os.stat_result) -> StatKey:
    """What identifies one version of a file without reading it."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _inside(real_path: str, real_root: str) -> bool:
    """True if the resolved ``real_path`` lies below the resolved ``real_root``."""
    return real_path.startswith(real_root.rstrip(os.sep) + os.sep)


def _sort_key(dataset: Dataset, name: str) -> tuple[str, str, str]:
    """wlmd's stable response order: SPS start date, SPS start time, then file name."""
    steps = sequence_of(dataset, SPS)
    step = steps[0] if steps else Dataset()
    return (_text(step, SPS_START_DATE), _text(step, SPS_START_TIME), name)


def _text(dataset: Dataset, tag: Tag) -> str:
    """A short string value as plain text without padding, "" if absent."""
    return (raw_value(dataset, tag) or b"").decode("latin-1").strip(" \0")
