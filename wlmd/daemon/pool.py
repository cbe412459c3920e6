"""The worker table: spawn, reap, recycle and watch pre-forked workers. The only caller of fork.

The supervisor decides *when* (signals, accepted connections); this module knows *how*: each
worker has a SEQPACKET channel and a heartbeat file (gunicorn's WorkerTmp: an anonymous file
whose mtime the worker keeps touching), and dies with an exit status the supervisor can read.
Before any worker exists, the preload's helper processes are forked here too
(``ChildProcesses``): a process pool that parses (on a first start, into the index file). (The
one fork elsewhere is ``--daemon``'s detaching, which python-daemon does before anything runs.)
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import logging
import multiprocessing
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import psutil

from wlmd.config.settings import Settings
from wlmd.daemon import handoff

LOGGER = logging.getLogger(__name__)

WORKER_BOOT_ERROR = 3  # a worker exits with this when it cannot build the application
MAX_REAP_PER_PASS = 1024  # bound on one waitpid(WNOHANG) loop
# What the supervisor handles (through its wakeup fd); a preload helper restores their defaults
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGCHLD)

Task = TypeVar("Task")
Result = TypeVar("Result")


def fork(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child that then exits with its result; the child's pid here.

    The child never returns into the caller, whatever ``body`` raises.
    """
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = body()
    except BaseException:  # never let a child fall back into the supervisor's loop
        LOGGER.exception("child %d failed", os.getpid())
    finally:
        os._exit(code)


class ChildProcesses:
    """The preload's forked helpers (``wlmd.worklist.preload.ChildProcesses``)."""

    def __init__(self, jobs: int | None = None) -> None:
        """``jobs`` processes parse at once; by default one per CPU this process may use."""
        self.jobs = jobs if jobs is not None else len(os.sched_getaffinity(0))

    def map_batches(self, work: Callable[[list[Task]], Result],
                    batches: list[list[Task]]) -> list[Result]:
        """``work`` of each batch in a pool of up to ``jobs`` forked processes, results in
        order."""
        processes = max(1, min(self.jobs, len(batches)))
        with multiprocessing.get_context("fork").Pool(processes,
                                                      initializer=_helper_started) as pool:
            return list(pool.imap(work, batches))


def _helper_started() -> None:
    """In a forked helper: the default signal dispositions, and collection of its own garbage.

    The pool ends its helpers with SIGTERM, which the supervisor (and a worker or service
    child) handles or ignores: inherited, that left ``Pool.__exit__`` waiting for ever. The
    wakeup fd would send the helper's signals to the supervisor's loop. Then: collect the
    cyclic garbage the parsers make (the caller may hold collection off), but only the
    helper's own objects. What it inherited (modules, and on a restart the records loaded so
    far) is frozen out of every collection instead of scanned again by each full one (3 % of
    a first start's parsing).
    """
    signal.set_wakeup_fd(-1)
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    gc.freeze()
    gc.enable()


class SlotState(enum.Enum):
    """Where a worker is in its life, as the supervisor sees it."""

    BOOTING = "booting"  # forked, has not said "ready" yet
    IDLE = "idle"  # waiting for a connection
    BUSY = "busy"  # serving one association


class Heartbeat:
    """An anonymous file whose mtime the worker sets to CLOCK_MONOTONIC: no disk, no wakeups."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("wlmd-heartbeat", os.MFD_CLOEXEC)
        self.beat()

    def beat(self) -> None:
        """Record "alive now"."""
        now = time.monotonic_ns()
        os.utime(self.fd, ns=(now, now))

    def silence(self) -> float:
        """Seconds since the last beat."""
        return (time.monotonic_ns() - os.fstat(self.fd).st_mtime_ns) / 1e9

    def close(self) -> None:
        """Release the file (each side of the fork closes its own copy)."""
        os.close(self.fd)


@dataclass(eq=False)
class WorkerSlot:
    """One worker as the supervisor tracks it."""

    pid: int
    channel: socket.socket  # the supervisor's end
    heartbeat: Heartbeat
    generation: int
    max_uses: int  # 0 = unlimited; jittered so that workers do not all recycle together
    state: SlotState = SlotState.BOOTING
    busy_since: float | None = None
    served: int = 0
    peer: tuple[str, int] | None = None
    retiring: bool = False  # told to stop: it exits once free, and gets no more connections
    retire_when_free: bool = False  # over the memory limit while busy
    killed: bool = False  # SIGKILL sent; waiting to be reaped
    started: float = field(default_factory=time.monotonic)
    freed: float = 0.0  # when it last finished an association (0: it has served none)

    def close(self) -> None:
        """Close the supervisor's end of the channel and its copy of the heartbeat."""
        self.channel.close()
        self.heartbeat.close()

    def describe(self) -> str:
        """pid and peer, for log lines about this worker."""
        peer = f" serving {self.peer[0]}:{self.peer[1]}" if self.peer else ""
        return f"worker {self.pid}{peer}"


@dataclass(frozen=True)
class ChildExit:
    """A reaped child: its slot (None for a child that is not a worker) and how it ended."""

    pid: int
    slot: WorkerSlot | None
    exit_code: int | None  # None when killed by a signal
    signal: int | None

    def describe(self) -> str:
        """"exit 3" or "signal 9"."""
        return f"signal {self.signal}" if self.signal is not None else f"exit {self.exit_code}"


# What a forked worker runs: (its channel end, its heartbeat, the settings) -> exit status.
WorkerMain = Callable[[socket.socket, Heartbeat, Settings], int]


class WorkerPool:
    """The table of workers, and every fork, kill and waitpid."""

    def __init__(self, worker_main: WorkerMain, after_fork: Callable[[], None]) -> None:
        """``after_fork`` runs first in every child: it closes what the supervisor owns."""
        self._worker_main = worker_main
        self._after_fork = after_fork
        self.slots: dict[int, WorkerSlot] = {}

    def __iter__(self) -> Iterator[WorkerSlot]:
        return iter(list(self.slots.values()))

    def busy_count(self) -> int:
        """Workers holding an association: what the association limit counts."""
        return sum(1 for s in self.slots.values() if s.state is SlotState.BUSY)

    def spares(self, generation: int) -> list[WorkerSlot]:
        """Idle or booting workers that may still be handed a connection, warmest first."""
        return sorted((s for s in self.slots.values()
                       if s.state is not SlotState.BUSY and s.generation == generation
                       and not s.retiring and not s.killed), key=_warmth, reverse=True)

    def idle_slot(self, generation: int) -> WorkerSlot | None:
        """An idle worker of the current generation: the one freed last (see ``_warmth``).

        Asked for every accepted connection: one pass, no sorting.
        """
        return max((s for s in self.slots.values()
                    if s.state is SlotState.IDLE and s.generation == generation
                    and not s.retiring and not s.killed), key=_warmth, default=None)

    def spawn(self, settings: Settings, generation: int) -> WorkerSlot:
        """Fork one worker running ``worker_main`` with ``settings``."""
        parent_end, child_end = handoff.channel_pair()
        heartbeat = Heartbeat()

        def worker() -> int:
            # Whatever the worker inherited is never collected here: a collection writes to
            # every object it visits, un-sharing their pages from the supervisor's.
            gc.freeze()
            parent_end.close()  # first close what belongs to the supervisor
            self.close()
            self._after_fork()
            return self._worker_main(child_end, heartbeat, settings)

        pid = fork(worker)
        child_end.close()
        parent_end.setblocking(False)  # the supervisor never waits on a worker
        jitter = random.randint(0, settings.worker_max_uses // 10)
        slot = WorkerSlot(pid=pid, channel=parent_end, heartbeat=heartbeat,
                          generation=generation,
                          max_uses=settings.worker_max_uses + jitter
                          if settings.worker_max_uses > 0 else 0)
        self.slots[pid] = slot
        LOGGER.debug("spawned worker %d (generation %d)", pid, generation)
        return slot

    def fork_service(self, body: Callable[[], int]) -> int:
        """Fork a child that is not a worker (a service); ``reap`` reports it with no slot."""

        def service() -> int:
            self.close()  # first close what belongs to the supervisor
            self._after_fork()
            return body()

        return fork(service)

    def reap(self) -> list[ChildExit]:
        """Collect every exited child now (SIGCHLD has no count: loop until none is left).

        A reaped worker leaves the table; the caller closes its slot (after unregistering it).
        """
        exits: list[ChildExit] = []
        for _ in range(MAX_REAP_PER_PASS):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            slot = self.slots.pop(pid, None)
            exits.append(ChildExit(
                pid=pid, slot=slot,
                exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            ))
        return exits

    def kill(self, slot: WorkerSlot, reason: str) -> None:
        """SIGKILL one worker now (a stopped process ignores anything gentler); reaped later."""
        if slot.killed:
            return
        LOGGER.error("killing %s: %s", slot.describe(), reason)
        slot.killed = True
        _signal(slot.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """SIGKILL every worker."""
        for slot in self:
            slot.killed = True
            _signal(slot.pid, signal.SIGKILL)

    def retire(self, slot: WorkerSlot) -> None:
        """Ask a worker to exit once it is free (at once if idle)."""
        if slot.retiring or slot.killed:
            return
        slot.retiring = True
        with contextlib.suppress(OSError):  # already gone: the reaper will see it
            handoff.send_message(slot.channel, handoff.OP_STOP)

    def murder_silent(self, timeout: float) -> None:
        """Kill workers whose heartbeat has been silent for ``timeout`` seconds."""
        for slot in self:
            if not slot.killed and slot.heartbeat.silence() > timeout:
                self.kill(slot, f"no heartbeat for {timeout:g}s")

    def check_memory(self, limit_mb: int) -> None:
        """Recycle workers above ``limit_mb`` of RSS; kill one above twice the limit."""
        limit = limit_mb * 1024 * 1024
        for slot in self:
            if slot.killed or resident_memory(slot.pid) <= limit:
                continue  # its private part is smaller still: no walk through its mappings
            rss = private_memory(slot.pid)
            if rss <= limit:
                continue
            if rss > 2 * limit:
                self.kill(slot, f"RSS {rss >> 20} MiB > 2 x {limit_mb} MiB")
            elif slot.state is SlotState.BUSY:
                if not slot.retire_when_free:
                    LOGGER.warning("%s: RSS %d MiB > %d MiB, recycling it after its association",
                                   slot.describe(), rss >> 20, limit_mb)
                slot.retire_when_free = True
            elif not slot.retiring:
                LOGGER.warning("%s: RSS %d MiB > %d MiB, recycling it",
                               slot.describe(), rss >> 20, limit_mb)
                self.retire(slot)

    def close(self) -> None:
        """Close the supervisor's ends of every channel and heartbeat."""
        for slot in self.slots.values():
            slot.close()
        self.slots.clear()


def spawn_plan(settings: Settings, idle: int, busy: int, wanted_extra: int) -> int:
    """How many workers to start (>0) or retire (<0) to keep the spare count in bounds.

    ``idle`` counts idle and booting workers of the current generation, ``busy`` every worker
    holding an association, ``wanted_extra`` connections waiting for a worker. The total never
    exceeds ``max_associations``: a worker beyond that could never be handed a connection.
    """
    room = max(0, settings.max_associations - busy - idle)
    if idle < settings.min_spare_workers + wanted_extra:
        return min(settings.min_spare_workers + wanted_extra - idle, room)
    if idle > max(settings.max_spare_workers, settings.min_spare_workers) + wanted_extra:
        return max(settings.max_spare_workers, settings.min_spare_workers) + wanted_extra - idle
    return 0


def _warmth(slot: WorkerSlot) -> tuple[float, float]:
    """Workers freed last are warmest, then those never used, oldest first.

    Handing each connection to the worker freed last keeps the work on as few workers as the
    load needs: their caches stay warm, the others stay small and are the first the pool
    gives back, and a change to the worklist is caught up by fewer workers (each one re-reads
    what changed since it last served: with MPPS, every status mark).
    """
    return slot.freed, -slot.started


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def resident_memory(pid: int) -> int:
    """The worker's resident memory, shared pages included (cheap: no page walk); 0 if gone."""
    try:
        rss: int = psutil.Process(pid).memory_info().rss
        return rss
    except psutil.Error:
        return 0


def private_memory(pid: int) -> int:
    """The worker's own resident memory: pages it shares with the supervisor do not count.

    Workers inherit the preloaded worklist copy-on-write, so their RSS includes the whole
    worklist; only the private part (``smaps_rollup``) grows with what one worker does.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            fields = dict(line.split(b":", 1) for line in rollup if b":" in line)
        return sum(int(fields[key].split()[0]) << 10
                   for key in (b"Private_Clean", b"Private_Dirty"))
    except (OSError, KeyError, ValueError):
        return resident_memory(pid)


def release_free_memory() -> None:
    """Give the heap's free pages back to the kernel (glibc's ``malloc_trim``; elsewhere a no-op).

    After the preload (parser and SQLite temporaries), and in a worker gone quiet after an
    association (its temporaries: decompressed files, PDUs, response lists): pages freed but
    kept by malloc would otherwise stay counted, in the supervisor's share of every worker or
    in the worker's own memory.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
