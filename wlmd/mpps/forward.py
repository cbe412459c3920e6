"""Forwarding accepted N-CREATE/N-SET to other MPPS SCPs, as an IHE PPS manager does.

Each message is queued on disk before the modality hears success
(``<mpps_path>/.forward/<destination>/<time>-<pid>-<op>-<UID>.msg``, written crash-safely) and
removed only once the destination accepted it, so nothing is lost across restarts or while a
destination is down. Messages go out strictly in queue order, one destination at a time, with
exponential backoff after a failure. A message the destination refuses for good (a failure
status) moves to ``rejected/`` with an error line, so one bad message cannot stall the queue.

The agent runs as a thread in the serving processes (the workers, or the single process); an
exclusive lock on ``.forward/lockfile`` makes exactly one of them the forwarder at a time, and
when it exits another takes over. The supervisor never blocks on a destination.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread

from wlmd.mpps.policy import Destination
from wlmd.mpps.rules import is_uid
from wlmd.mpps.storage import MPPS_SOP_CLASS, encode_instance
from wlmd.worklist.writer import write_durably

LOGGER = logging.getLogger("wlmd.mpps.forward")
QUEUE_DIR = ".forward"
REJECTED = "rejected"
SUFFIX = ".msg"
OP_CREATE = "create"
OP_SET = "set"
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
IDLE_POLL = 0.5
NETWORK_TIMEOUT = 10.0
DUPLICATE_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
NO_LONGER_UPDATABLE = 0xA710


@dataclass(frozen=True)
class QueuedMessage:
    """One queued N-CREATE or N-SET for one destination."""

    path: Path
    destination_key: str
    op: str
    sop_instance_uid: str
    queued_at: float

    @classmethod
    def from_path(cls, path: Path) -> QueuedMessage | None:
        parts = path.name[: -len(SUFFIX)].split("-", 3)
        if len(parts) != 4 or not parts[0].isdigit() or parts[2] not in (OP_CREATE, OP_SET):
            return None
        if not is_uid(parts[3]):
            return None
        return cls(path, path.parent.name, parts[2], parts[3], int(parts[0]) / 1e9)


class ForwardQueue:
    """The on-disk queues, one directory per destination."""

    def __init__(self, mpps_root: Path) -> None:
        self.root = Path(mpps_root) / QUEUE_DIR

    def enqueue(self, destination: Destination, op: str, sop_instance_uid: str,
                dataset: Dataset) -> Path:
        """Queue one message durably; the name keeps messages in arrival order."""
        directory = self.root / destination.key
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{op}-{sop_instance_uid}{SUFFIX}"
        return write_durably(directory, name, encode_instance(dataset, sop_instance_uid))

    def pending(self, destination_key: str) -> list[QueuedMessage]:
        """The destination's queued messages, oldest first."""
        directory = self.root / destination_key
        if not directory.is_dir():
            return []
        found = (QueuedMessage.from_path(p) for p in sorted(directory.glob("*" + SUFFIX)))
        return [m for m in found if m is not None]

    def listing(self) -> Iterator[QueuedMessage]:
        """Every queued message of every destination (``wlmctl mpps queue``)."""
        if not self.root.is_dir():
            return
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            yield from self.pending(directory.name)

    def reject(self, message: QueuedMessage) -> None:
        """Set a message the destination refused aside, durably, out of the queue."""
        rejected = message.path.parent / REJECTED
        rejected.mkdir(mode=0o700, exist_ok=True)
        write_durably(rejected, message.path.name, message.path.read_bytes())
        message.path.unlink()


class DestinationDown(Exception):
    """No association, or no response: try again later."""


Sender = Callable[[Destination, str, str, Dataset], tuple[int, int | None]]


def send_with_pynetdicom(destination: Destination, op: str, sop_instance_uid: str,
                         dataset: Dataset) -> tuple[int, int | None]:
    """Send one message in its own association; (status, error ID) or DestinationDown."""
    from pynetdicom import AE  # imported here: only the forwarder needs pynetdicom

    ae = AE(ae_title=destination.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT
    ae.add_requested_context(MPPS_SOP_CLASS)
    tls_args = None
    if destination.tls:
        import ssl

        context = ssl.create_default_context(
            cafile=str(destination.tls_ca_file) if destination.tls_ca_file else None)
        tls_args = (context, destination.host)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         tls_args=tls_args)
    if not assoc.is_established:
        raise DestinationDown("association not established")
    try:
        if op == OP_CREATE:
            status, _ = assoc.send_n_create(dataset, MPPS_SOP_CLASS, sop_instance_uid)
        else:
            status, _ = assoc.send_n_set(dataset, MPPS_SOP_CLASS, sop_instance_uid)
    finally:
        assoc.release()
    if "Status" not in status:
        raise DestinationDown("no response")
    error_id = status.get("ErrorID")
    return int(status.Status), int(error_id) if error_id is not None else None


class Forwarder:
    """Sends every queue's messages in order; ``run_once`` is one pass over the queues."""

    def __init__(self, queue: ForwardQueue, destinations: tuple[Destination, ...],
                 sender: Sender = send_with_pynetdicom) -> None:
        self.queue = queue
        self.destinations = destinations
        self.sender = sender
        self.failures: dict[str, int] = {}
        self.next_try: dict[str, float] = {}

    def run_once(self) -> None:
        for destination in self.destinations:
            if time.monotonic() >= self.next_try.get(destination.key, 0.0):
                self._drain(destination)

    def _drain(self, destination: Destination) -> None:
        for message in self.queue.pending(destination.key):
            try:
                dataset = dcmread(message.path, force=True)
                for tag in (0x00080016, 0x00080018):  # the UIDs travel in the command
                    if tag in dataset:
                        del dataset[tag]
                status, error_id = self.sender(destination, message.op,
                                               message.sop_instance_uid, dataset)
            except FileNotFoundError:
                continue
            except Exception as exc:  # connection refused, timeout, abort, TLS failure
                failures = self.failures.get(destination.key, 0) + 1
                self.failures[destination.key] = failures
                delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
                self.next_try[destination.key] = time.monotonic() + delay
                LOGGER.warning("MPPS forward to %s failed (%s), retry in %.1f s",
                               destination.key, exc or type(exc).__name__, delay)
                return
            self.failures.pop(destination.key, None)
            if _delivered(message.op, status, error_id):
                message.path.unlink()
                LOGGER.debug("MPPS %s %s forwarded to %s", message.op,
                             message.sop_instance_uid, destination.key)
            else:
                LOGGER.error("MPPS %s %s refused by %s with status 0x%04x; set aside in %s",
                             message.op, message.sop_instance_uid, destination.key, status,
                             REJECTED)
                self.queue.reject(message)


def _delivered(op: str, status: int, error_id: int | None) -> bool:
    """Success, or proof that an earlier attempt got through (a resend after a crash)."""
    if status == 0 or (status & 0xF000) == 0xB000:
        return True
    if op == OP_CREATE and status == DUPLICATE_INSTANCE:
        return True
    return op == OP_SET and status == PROCESSING_FAILURE and error_id == NO_LONGER_UPDATABLE


_RUNNING: tuple[int, ForwardAgent] | None = None  # (pid, agent) of this process's thread


class ForwardAgent:
    """The background thread of one process: forwarder (when it holds the lock) and timer."""

    def __init__(self, forwarder: Forwarder, timers: Callable[[], None]) -> None:
        self.forwarder = forwarder
        self.timers = timers
        self._lock_fd: int | None = None

    def start(self) -> None:
        """Start the thread in this process; a later agent (after a reload) hands its queues
        and timers to the thread already running, as one process may run only one forwarder
        (fcntl locks do not exclude threads of one process)."""
        global _RUNNING
        if _RUNNING is not None and _RUNNING[0] == os.getpid():
            running = _RUNNING[1]
            running.forwarder, running.timers = self.forwarder, self.timers
            return
        _RUNNING = (os.getpid(), self)
        self._lock_fd = None  # a descriptor inherited from the parent is not our lock
        threading.Thread(target=self._run, name="mpps-forwarder", daemon=True).start()

    def _run(self) -> None:
        while True:
            if self._holds_lock():
                try:
                    self.timers()
                except Exception:  # a bad delayed action must not stop forwarding
                    LOGGER.exception("MPPS delayed worklist actions failed")
                try:
                    self.forwarder.run_once()
                except Exception:  # never let the thread die: log and keep going
                    LOGGER.exception("MPPS forwarder pass failed")
            time.sleep(IDLE_POLL)

    def _holds_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        root = self.forwarder.queue.root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(root / "lockfile", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            LOGGER.error("MPPS forwarder cannot open its lock: %s", exc)
            return False
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                LOGGER.error("MPPS forwarder cannot lock: %s", exc)
            return False
        self._lock_fd = fd
        return True
