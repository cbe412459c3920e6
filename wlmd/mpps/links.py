"""Which worklist files may belong to an MPPS, without every worker parsing every change.

Asking the worker's in-memory worklist (the store) refreshes it, and a refresh parses every
file changed since this worker last looked: with N workers each status mark was parsed N times,
and that was most of the time of the MPPS benchmark. Instead each worker keeps the records the
store gave it at its first lookup of an AE, and its own inotify watch on the AE directory says
which names changed since; only those files are read, and only their Study Instance UID and
Accession Number are picked from the bytes (``entryfile``), never a full parse. The caller
checks every candidate against the file on disk under the writer's rules, so a candidate may
be wrong but a linked entry is never missed. Without inotify (a shared file system,
``--refresh stat``) or after lost events the store is asked again, as every query does.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wlmd.config.settings import RefreshMode
from wlmd.mpps.entryfile import NotRaw, link_values
from wlmd.worklist.inotify import Inotify
from wlmd.worklist.store import is_worklist_name

LOGGER = logging.getLogger("wlmd.mpps")
MAX_FILE_BYTES = 16 << 20  # as the store: a worklist file this big is junk


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
class _View:
    """One AE as this worker knows it: the store's records, then the names changed since."""

    records: Sequence[NamedBytes]
    # name -> (Study Instance UID, Accession Number); the bytes when they could not be walked;
    # None when the file is gone.
    changed: dict[str, tuple[str, str] | bytes | None] = field(default_factory=dict)


class LinkCandidates:
    """Candidate entry names per AE, kept current by inotify; one per worker process."""

    def __init__(self, entries: EntrySource | None,
                 refresh: RefreshMode = RefreshMode.AUTO) -> None:
        self.entries = entries
        self._inotify = Inotify(refresh)
        self._views: dict[str, _View] = {}

    def names(self, ae: str, directory: Path, wanted: list[Wanted]) -> list[str] | None:
        """Names of the entries that may hold one of ``wanted``; None: read every entry."""
        if self.entries is None:
            return None
        changed = self._inotify.changes(str(directory))
        view = self._views.get(ae)
        if view is None or changed is None:
            try:  # after the watch is armed: the records are at least as new as the watch
                view = self._views[ae] = _View(self.entries.query(ae, None))
            except Exception as exc:  # a store problem must not stop the MPPS: read the disk
                LOGGER.debug("in-memory worklist of %s unavailable: %s", ae, exc)
                self._views.pop(ae, None)
                return None
        else:
            for name in changed:
                if is_worklist_name(name):
                    view.changed[name] = _summary(directory / name)
        return _matching(view, wanted)


def _matching(view: _View, wanted: list[Wanted]) -> list[str]:
    needles = [needle for want in wanted for needle in want.needles()]
    changed = view.changed
    found = [record.name for record in view.records if record.name not in changed
             and any(needle in record.data for needle in needles)]
    for name, summary in changed.items():
        if summary is None:
            continue
        if isinstance(summary, bytes):
            if any(needle in summary for needle in needles):
                found.append(name)
        elif any(summary[0] == want.study_uid if want.study_uid else summary[1] == want.accession
                 for want in wanted):
            found.append(name)
    return found


def _summary(path: Path) -> tuple[str, str] | bytes | None:
    """What a changed file tells a link lookup; None when it is gone or unreadable."""
    data = None
    with contextlib.suppress(OSError), path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if data is None or len(data) > MAX_FILE_BYTES:
        return None
    try:
        values = link_values(data)
    except NotRaw:
        return data
    return values.study_uid, values.accession
