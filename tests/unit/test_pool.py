"""WorkerPool with real forked children running tiny worker bodies, and the spare-count plan."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from wlmd.config.settings import Settings
from wlmd.daemon import handoff
from wlmd.daemon.pool import (
    WORKER_BOOT_ERROR,
    ChildExit,
    ChildProcesses,
    Heartbeat,
    WorkerPool,
    private_memory,
    spawn_plan,
)
from wlmd.daemon.worker import start_heartbeat

SETTINGS = Settings(port=0, worker_max_uses=100)


def ready_then_wait(channel: socket.socket, heartbeat: Heartbeat, settings: Settings) -> int:
    """A well-behaved worker: beat, say ready, exit 0 on stop or EOF."""
    start_heartbeat(heartbeat, 0.2)
    handoff.send_message(channel, handoff.OP_READY)
    try:
        message = handoff.receive(channel)
    except handoff.ChannelClosed:
        return 0
    return 0 if message.op == handoff.OP_STOP else 1


def hungry(channel: socket.socket, heartbeat: Heartbeat, settings: Settings) -> int:
    """A worker with 16 MiB of private memory (the limit ignores pages shared with its parent)."""
    ballast = b"x" * (16 << 20)
    try:
        return ready_then_wait(channel, heartbeat, settings)
    finally:
        del ballast


def beats_unregistered(channel: socket.socket, heartbeat: Heartbeat, settings: Settings) -> int:
    """Start the heartbeat, then exit 0 on stop if the threading module counts no new thread
    (its bookkeeping would un-share the supervisor's pages: see ``start_heartbeat``)."""
    threads = threading.active_count()
    start_heartbeat(heartbeat, 0.2)
    handoff.send_message(channel, handoff.OP_READY)
    handoff.receive(channel)
    return 0 if threading.active_count() == threads else 4


INHERITED = [["made by the parent before every fork"]]  # a container: the collector tracks it


def inherited_is_frozen(channel: socket.socket, heartbeat: Heartbeat, settings: Settings) -> int:
    """Exit 0 if the collector still tracks what the worker inherited but never visits it."""
    visited = any(o is INHERITED for o in gc.get_objects())  # the permanent generation is not
    return 0 if gc.is_tracked(INHERITED) and not visited else 5


def cannot_boot(channel: socket.socket, heartbeat: Heartbeat, settings: Settings) -> int:
    return WORKER_BOOT_ERROR


def crashes(channel: socket.socket, heartbeat: Heartbeat, settings: Settings) -> int:
    raise RuntimeError("bug in worker")


@pytest.fixture
def make_pool() -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def make(main=ready_then_wait) -> WorkerPool:
        pool = WorkerPool(main, after_fork=lambda: None)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:  # never leave a child behind, whatever the test did
        pool.kill_all()
        wait_for_exits(pool, len(pool.slots))
        pool.close()


def wait_for_exits(pool: WorkerPool, count: int, timeout: float = 5.0) -> list[ChildExit]:
    exits: list[ChildExit] = []
    deadline = time.monotonic() + timeout
    while len(exits) < count and time.monotonic() < deadline:
        exits += pool.reap()
        time.sleep(0.01)
    return exits


def ready(slot) -> None:
    slot.channel.setblocking(True)
    slot.channel.settimeout(5)
    assert handoff.receive(slot.channel).op == handoff.OP_READY


def test_retired_worker_exits_cleanly_and_is_reaped(make_pool):
    pool = make_pool()
    slot = pool.spawn(SETTINGS, generation=0)
    ready(slot)
    pool.retire(slot)
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.slot, exit_.exit_code, exit_.signal) == (slot.pid, slot, 0, None)
    assert pool.slots == {}


def test_worker_sees_eof_when_the_supervisor_end_closes(make_pool):
    """The child must not keep a copy of the supervisor's end, or EOF would never come."""
    pool = make_pool()
    first, second = pool.spawn(SETTINGS, 0), pool.spawn(SETTINGS, 0)
    ready(first)
    ready(second)
    first.channel.close()
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.exit_code) == (first.pid, 0)
    assert second.pid in pool.slots


def test_boot_failure_and_crash_have_distinct_exit_codes(make_pool):
    pool = make_pool(cannot_boot)
    boot = pool.spawn(SETTINGS, 0)
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.exit_code) == (boot.pid, WORKER_BOOT_ERROR)

    pool = make_pool(crashes)
    crash = pool.spawn(SETTINGS, 0)
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.exit_code) == (crash.pid, 1)


def test_stopped_worker_goes_silent_and_is_killed(make_pool):
    pool = make_pool()
    stopped, healthy = pool.spawn(SETTINGS, 0), pool.spawn(SETTINGS, 0)
    ready(stopped)
    ready(healthy)
    os.kill(stopped.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while not stopped.killed and time.monotonic() < deadline:
        pool.murder_silent(timeout=0.6)
        time.sleep(0.05)
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.signal) == (stopped.pid, signal.SIGKILL)
    assert not healthy.killed
    assert healthy.heartbeat.silence() < 0.6


def test_heartbeat_beats_while_the_worker_waits_and_adds_no_threading_thread(make_pool):
    pool = make_pool(beats_unregistered)
    slot = pool.spawn(SETTINGS, 0)
    ready(slot)
    time.sleep(0.3)  # the main thread waits in receive meanwhile
    assert slot.heartbeat.silence() < 0.2
    pool.retire(slot)
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.exit_code) == (slot.pid, 0)


def test_worker_never_collects_what_it_inherited(make_pool):
    """A collection writes to each object it visits: inherited ones would stop being shared."""
    pool = make_pool(inherited_is_frozen)
    slot = pool.spawn(SETTINGS, 0)
    (exit_,) = wait_for_exits(pool, 1)
    assert (exit_.pid, exit_.exit_code) == (slot.pid, 0)
    assert any(o is INHERITED for o in gc.get_objects())  # the parent's own collector does


def test_recycling_limit_is_jittered_within_a_tenth(make_pool):
    pool = make_pool(cannot_boot)
    limits = {pool.spawn(SETTINGS, 0).max_uses for _ in range(6)}
    assert all(100 <= n <= 110 for n in limits)
    unlimited = pool.spawn(Settings(port=0, worker_max_uses=0), 0)
    assert unlimited.max_uses == 0
    wait_for_exits(pool, 7)


@pytest.mark.parametrize(
    ("idle", "busy", "waiting", "expected"),
    [
        (0, 0, 0, 2),  # start: min_spare
        (2, 0, 0, 0),  # within bounds
        (1, 3, 0, 1),  # refill to min_spare
        (0, 0, 3, 5),  # waiting connections need workers too
        (6, 0, 0, -2),  # above max_spare: retire the excess
        (0, 9, 0, 1),  # capped by max_associations (10)
        (1, 9, 0, 0),  # at the cap
    ],
)
def test_spawn_plan(idle, busy, waiting, expected):
    settings = Settings(port=0, min_spare_workers=2, max_spare_workers=4, max_associations=10)
    assert spawn_plan(settings, idle=idle, busy=busy, wanted_extra=waiting) == expected


def test_memory_limit_recycles_an_idle_worker_and_kills_a_runaway(make_pool):
    pool = make_pool(hungry)
    over, runaway = pool.spawn(SETTINGS, 0), pool.spawn(SETTINGS, 0)
    ready(over)
    ready(runaway)
    rss_mb = private_memory(over.pid) / 2**20  # what the limit applies to
    limit = int(rss_mb * 0.75)  # over the limit, under twice the limit
    pool.slots.pop(runaway.pid)
    pool.check_memory(limit)
    assert over.retiring and not over.killed
    pool.slots[runaway.pid] = runaway
    pool.slots.pop(over.pid)
    pool.check_memory(1)
    assert runaway.killed
    pool.slots[over.pid] = over
    exits = {e.pid: e for e in wait_for_exits(pool, 2)}
    assert (exits[over.pid].exit_code, exits[runaway.pid].signal) == (0, signal.SIGKILL)


def _collection_state(batch: list[int]) -> tuple[int, bool, int, int]:
    return os.getpid(), gc.isenabled(), gc.get_freeze_count(), sum(batch)


def test_preload_helpers_collect_their_own_garbage_only() -> None:
    """Each helper collects cyclic garbage though its parent holds collection off, and leaves
    what it inherited out of every collection (frozen); results come back in order."""
    gc.disable()
    try:
        found = ChildProcesses(2).map_batches(_collection_state, [[1, 2], [3], [4, 5, 6]])
    finally:
        gc.enable()
    assert [total for _, _, _, total in found] == [3, 3, 15]
    assert all(pid != os.getpid() and enabled and frozen > 0
               for pid, enabled, frozen, _ in found)


HELPERS_UNDER_SIGTERM = """
import signal, sys, time
from wlmd.daemon.pool import ChildProcesses

def sum_slowly(batch):
    time.sleep(0.01)
    return sum(batch)

signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "ignored" else
              lambda _signum, _frame: None)
for _ in range(20):  # the hang came at some ends of a pool, not at all
    assert ChildProcesses(2).map_batches(sum_slowly, [[1, 2]] * 10) == [3] * 10
"""


@pytest.mark.parametrize("disposition", ["ignored", "handled"])
def test_preload_helpers_end_though_their_parent_keeps_sigterm(disposition: str) -> None:
    """The pool ends its helpers with SIGTERM: inherited from a supervisor (which handles it)
    or a worker (which ignores it), that hung ``Pool.__exit__`` for ever, and with it a reload
    or the background load. Run in a process of its own, killed with its helpers if it hangs."""
    proc = subprocess.Popen([sys.executable, "-c", HELPERS_UNDER_SIGTERM, disposition],
                            start_new_session=True)
    try:
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
