"""The intake journal: every received message is on disk before it is applied.

One JSON line per event, appended and ``fsync``-ed: ``received`` (the raw message, base64, with
its sequence number, sender and duplicate key) before the message is applied, and ``done`` (the
acknowledgement code) after. After a crash, a ``received`` line without its ``done`` is applied
again at start; a resent message whose key already has an ``AA`` is acknowledged without being
applied twice. ``done`` lines are not fsync-ed on their own: the next ``received`` line's fsync
flushes them, so a crash can lose only a suffix of them, and applying that suffix again, in
order, ends in the same worklist (a resend of an accepted message is still recognised, as its
first ``done`` came before). The files hold patient data: owner-only, in an owner-only
directory; the live file is rotated at a size limit and a fixed number of old files is kept.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wlmd.config.settings import Settings

FILE_NAME = "journal.log"
KEEP_ROTATED = 8
REMEMBERED_KEYS = 100_000  # accepted message keys kept for duplicate detection
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def journal_directory(settings: Settings) -> Path:
    """``--hl7-journal``, else ``hl7-journal`` beside the worklist directory, not in it (the
    store never sees the journal)."""
    return settings.hl7_journal or settings.data_files_path.resolve().parent / "hl7-journal"


@dataclass(frozen=True)
class Received:
    """A message as the journal holds it."""

    seq: int
    raw: bytes
    peer: str
    key: str  # "MSH-3|MSH-4|MSH-10", "" for a message that could not be parsed


class Journal:
    """Append-only, fsync-ed, rotated; one process writes it (the HL7 child)."""

    def __init__(self, directory: Path, max_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        os.chmod(directory, DIRECTORY_MODE)
        self.path = directory / FILE_NAME
        self._accepted: OrderedDict[str, str] = OrderedDict()
        self._pending: dict[int, Received] = {}
        self._seq = 0
        for path in reversed(self.files()):
            self._load(path)
        self._fd = self._open()

    def files(self) -> list[Path]:
        """The live file first, then the rotated ones, newest first."""
        candidates = [self.path] + [self.path.with_name(f"{FILE_NAME}.{n}")
                                    for n in range(1, KEEP_ROTATED + 1)]
        return [path for path in candidates if path.exists()]

    def accepted(self, key: str) -> bool:
        """True if a message with this key was applied and acknowledged AA."""
        return bool(key) and key in self._accepted

    def pending(self) -> list[Received]:
        """Messages received but never finished (the process died while applying them)."""
        return [self._pending[seq] for seq in sorted(self._pending)]

    def received(self, raw: bytes, peer: str, key: str) -> Received:
        """Record a message before it is applied; durable when this returns."""
        self._seq += 1
        record = Received(self._seq, raw, peer, key)
        self._append({"seq": record.seq, "event": "received", "at": _now(), "peer": peer,
                      "key": key, "message": base64.b64encode(raw).decode("ascii")})
        self._pending[record.seq] = record
        return record

    def done(self, record: Received, ack: str, detail: str = "") -> None:
        """Record the outcome (the acknowledgement code) of a received message."""
        self._append({"seq": record.seq, "event": "done", "at": _now(), "ack": ack,
                      "detail": detail}, sync=False)
        self._pending.pop(record.seq, None)
        if ack in ("AA", "CA"):
            self._remember(record.key)
        if not self._pending and os.fstat(self._fd).st_size >= self.max_bytes:
            self._rotate()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
            os.close(self._fd)

    def _append(self, record: dict[str, object], *, sync: bool = True) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        if sync:
            os.fsync(self._fd)

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        return fd

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        for number in range(KEEP_ROTATED, 0, -1):
            source = self.path if number == 1 else self.path.with_name(f"{FILE_NAME}.{number - 1}")
            if source.exists():
                os.replace(source, self.path.with_name(f"{FILE_NAME}.{number}"))
        self._fd = self._open()
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _remember(self, key: str) -> None:
        if not key:
            return
        self._accepted[key] = ""
        self._accepted.move_to_end(key)
        if len(self._accepted) > REMEMBERED_KEYS:
            self._accepted.popitem(last=False)

    def _load(self, path: Path) -> None:
        """Rebuild the sequence, the accepted keys and the unfinished messages from a file."""
        for record in read_records(path):
            seq = record.get("seq")
            if not isinstance(seq, int):
                continue
            self._seq = max(self._seq, seq)
            if record.get("event") == "received":
                self._pending[seq] = _received(record)
            elif record.get("event") == "done":
                finished = self._pending.pop(seq, None)
                if finished is not None and record.get("ack") in ("AA", "CA"):
                    self._remember(finished.key)


def read_records(path: Path) -> Iterator[dict[str, object]]:
    """The JSON records of one journal file; a torn last line (crash mid-append) is skipped."""
    with open(path, "rb") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def received_in(directory: Path, first: int, last: int) -> list[Received]:
    """The received messages with sequence numbers in [first, last], oldest first."""
    found: dict[int, Received] = {}
    paths = [directory / FILE_NAME, *sorted(directory.glob(f"{FILE_NAME}.*"))]
    for path in paths:
        if not path.exists():
            continue
        for record in read_records(path):
            seq = record.get("seq")
            if (record.get("event") == "received" and isinstance(seq, int)
                    and first <= seq <= last):
                found[seq] = _received(record)
    return [found[seq] for seq in sorted(found)]


def _received(record: dict[str, object]) -> Received:
    return Received(int(str(record["seq"])), base64.b64decode(str(record.get("message", ""))),
                    str(record.get("peer", "")), str(record.get("key", "")))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
