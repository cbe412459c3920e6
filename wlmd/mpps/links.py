"""Which worklist files may belong to an MPPS, without parsing the worklist on every step.

Asking the worker's in-memory worklist (the store) refreshes it, and a refresh parses every file
changed since this worker last looked: with N workers each status mark was parsed N times, which
was most of the time of the MPPS benchmark, and matching the MPPS against every record cost time
in proportion to the worklist. Instead each worker keeps, per AE directory, an index from Study
Instance UID and Accession Number to file names, found in the files' bytes by a search for the
encoded elements (never a parse) and kept current by its own inotify watch: a step costs the
names changed since the last one. A changed name is read again and its old values replaced, a
name that is gone is dropped, so the index stays the size of the directory and is rebuilt only
after lost events (an index that only grew had to be rebuilt from the whole directory after
every thousand changes: half the files each worker read in the MPPS benchmark). A worker the
pool forks inherits the supervisor's index with a queue armed before it was brought up to date
(``forking``), so it never reads the whole directory on its first step. The values are
a superset of the real elements (``element_values``) and the caller checks every candidate
against the file on disk: a candidate may be wrong, a linked entry is never missed.

Where inotify cannot be trusted (a shared file system, ``--refresh stat``) the store is asked,
refreshed as for every query, and each of its records is searched for the encoded element.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wlmd.config.settings import RefreshMode
from wlmd.worklist.inotify import Inotify, handover_for_fork
from wlmd.worklist.store import is_worklist_name

LOGGER = logging.getLogger("wlmd.mpps")
MAX_FILE_BYTES = 16 << 20  # as the store: a worklist file this big is junk
STUDY_TAG, ACCESSION_TAG = b"\x20\x00\x0d\x00", b"\x08\x00\x50\x00"
MAX_VALUE = 64  # longer than any UI (64) or SH (16) value: not the element looked for


class NamedBytes(Protocol):
    """A worklist record as the store keeps it: its file name and bytes."""

    @property
    def name(self) -> str: ...

    @property
    def data(self) -> bytes: ...


class EntrySource(Protocol):
    """The in-memory worklist of a worker: the records of one AE, refreshed from disk."""

    def query(self, ae: str, prefilter: None) -> Sequence[NamedBytes]: ...


@dataclass(frozen=True)
class Wanted:
    """What an MPPS link names: a Study Instance UID, else an Accession Number."""

    study_uid: str
    accession: str

    def key(self) -> tuple[bytes, bytes]:
        """(tag, value) as ``element_values`` gives them."""
        if self.study_uid:
            return STUDY_TAG, self.study_uid.encode("latin-1", "replace")
        return ACCESSION_TAG, self.accession.encode("latin-1", "replace")

    def needles(self) -> tuple[bytes, bytes]:
        """The element as a file holds it, in explicit and implicit VR little endian: a whole
        element match, not a substring of some value."""
        tag, vr, value, pad = ((b"\x20\x00\x0d\x00", b"UI", self.study_uid, b"\0")
                               if self.study_uid
                               else (b"\x08\x00\x50\x00", b"SH", self.accession, b" "))
        raw = value.encode("latin-1", "replace")
        raw += pad * (len(raw) % 2)
        return (tag + vr + struct.pack("<H", len(raw)) + raw,
                tag + struct.pack("<L", len(raw)) + raw)


@dataclass
class _Index:
    """One AE directory: file names by (tag, value) of their Study UID and Accession Number."""

    names: dict[tuple[bytes, bytes], set[str]] = field(default_factory=dict)
    values: dict[str, set[tuple[bytes, bytes]]] = field(default_factory=dict)

    def put(self, name: str, data: bytes | None) -> None:
        """``name`` as it is now: its values from ``data``, or gone (None)."""
        for key in self.values.pop(name, set()):
            holders = self.names[key]
            holders.discard(name)
            if not holders:
                del self.names[key]
        if data is None:
            return
        found = self.values[name] = element_values(data)
        for key in found:
            self.names.setdefault(key, set()).add(name)

    def lookup(self, wanted: list[Wanted]) -> list[str]:
        found: set[str] = set()
        for want in wanted:
            found |= self.names.get(want.key(), set())
        return sorted(found)


def element_values(data: bytes) -> set[tuple[bytes, bytes]]:
    """(tag, value) of every place in ``data`` that reads as a Study Instance UID or Accession
    Number element, in explicit or implicit VR little endian.

    A superset of the file's real elements (the same bytes inside some other value count too),
    found without parsing; a lookup of ``Wanted.key()`` in it cannot miss the real one.
    """
    found = set()
    for tag, vr in ((STUDY_TAG, b"UI"), (ACCESSION_TAG, b"SH")):
        pos = data.find(tag)
        while pos >= 0:
            if data[pos + 4:pos + 6] == vr:
                length = int.from_bytes(data[pos + 6:pos + 8], "little")
            else:
                length = int.from_bytes(data[pos + 4:pos + 8], "little")
            if length <= MAX_VALUE:
                found.add((tag, data[pos + 8:pos + 8 + length].rstrip(b" \0")))
            pos = data.find(tag, pos + 1)
    return found


class LinkCandidates:
    """Candidate entry names per AE directory; one per worker process."""

    def __init__(self, entries: EntrySource | None,
                 refresh: RefreshMode = RefreshMode.AUTO) -> None:
        self.entries = entries
        self._inotify = Inotify(refresh)
        self._indexes: dict[str, _Index] = {}

    def names(self, ae: str, directory: Path, wanted: list[Wanted]) -> list[str] | None:
        """Names of the entries that may hold one of ``wanted``; None: read every entry."""
        index = self._current(str(directory))
        if index is None:  # not watched: the store
            return self._from_store(ae, wanted)
        return index.lookup(wanted)

    def _current(self, path: str) -> _Index | None:
        """The index of ``path`` brought up to date; None when the directory is not watched."""
        changed = self._inotify.changes(path)
        index = self._indexes.get(path)
        if index is not None and changed is not None:
            for name in changed:
                if is_worklist_name(name):
                    index.put(name, _read(f"{path}/{name}"))
            return index
        if changed is None and self._inotify.changes(path) is None:
            self._indexes.pop(path, None)
            return None
        index = self._indexes[path] = _build(path)  # after the watch is armed
        return index

    @contextlib.contextmanager
    def forking(self, directories: Iterable[Path]) -> Iterator[None]:
        """Around the fork of one worker: it inherits each directory's index, brought up to
        date now, and an inotify queue armed just before that, so that its first step reads
        the entries changed since, not every entry (a worker the pool forks under load would
        otherwise read the whole worklist in its first MPPS step)."""
        paths = [str(directory) for directory in directories]
        with handover_for_fork(paths, self._inotify.refresh,
                               lambda path: self._current(path) is not None) as handover:
            own, self._inotify = self._inotify, handover
            try:
                yield
            finally:
                self._inotify = own

    def _from_store(self, ae: str, wanted: list[Wanted]) -> list[str] | None:
        if self.entries is None:
            return None
        try:
            records = self.entries.query(ae, None)
        except Exception as exc:  # a store problem must not stop the MPPS: read the disk
            LOGGER.debug("in-memory worklist of %s unavailable: %s", ae, exc)
            return None
        needles = [needle for want in wanted for needle in want.needles()]
        return [r.name for r in records if any(needle in r.data for needle in needles)]


def _build(directory: str) -> _Index:
    index = _Index()
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if is_worklist_name(entry.name) and (data := _read(entry.path)) is not None:
                index.put(entry.name, data)
    return index


def _read(path: str) -> bytes | None:
    """The file's bytes; None when it is gone, unreadable or too big to be an entry."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        return os.read(fd, size + 1) if size <= MAX_FILE_BYTES else None
    except OSError:
        return None
    finally:
        os.close(fd)
