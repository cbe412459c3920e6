"""Service children bookkeeping: start, respawn with back-off, recycle on reload, stop."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from wlmd.config.settings import Settings
from wlmd.daemon.services import RESPAWN_DELAYS, Service, ServiceChildren


class Recorder:
    """A service that records its configurations; never actually served here."""

    name = "test"
    reads_worklist = False
    processes = 1
    niceness = 0

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.configured: list[Settings] = []
        self.refuse = False

    def configure(self, settings: Settings) -> None:
        if self.refuse:
            raise ValueError("bad mapping")
        self.configured.append(settings)

    def serve(self, stop: threading.Event) -> None:
        stop.wait()


class FakeFork:
    """Hands out PIDs of processes that do not exist, so signals go nowhere."""

    def __init__(self) -> None:
        self.pid = 4_000_000  # above pid_max: os.kill raises ProcessLookupError
        self.bodies: list[Callable[[], int]] = []

    def __call__(self, service: Service, body: Callable[[], int]) -> int:
        self.bodies.append(body)
        self.pid += 1
        return self.pid


def test_quick_deaths_back_off_and_a_recycle_starts_at_once() -> None:
    fork, service = FakeFork(), Recorder()
    children = ServiceChildren([service], fork)
    now = time.monotonic()
    children.tend(now)
    (first,) = children.pids
    assert not children.on_exit(os.getpid(), "exit 0")  # not a service child
    assert children.on_exit(first, "signal 9")
    children.tend(time.monotonic())
    assert children.pids == []  # a quick death: the next child waits RESPAWN_DELAYS[1]
    children.tend(time.monotonic() + RESPAWN_DELAYS[1] + 0.01)
    (second,) = children.pids
    children.reconfigure(Settings(port=104))
    assert service.configured == [Settings(port=104)]
    assert children.on_exit(second, "exit 0")  # the recycled child ended as asked
    children.tend(time.monotonic())
    assert len(children.pids) == 1 and children.pids[0] != second


def test_a_refused_configuration_keeps_the_running_child() -> None:
    fork, service = FakeFork(), Recorder()
    children = ServiceChildren([service], fork)
    children.tend(time.monotonic())
    (running,) = children.pids
    service.refuse = True
    children.reconfigure(Settings(port=104))
    assert children.pids == [running]
    assert service.configured == []


def test_no_child_is_started_after_stop() -> None:
    fork = FakeFork()
    children = ServiceChildren([Recorder()], fork)
    children.tend(time.monotonic())
    (running,) = children.pids
    children.stop()
    assert children.on_exit(running, "exit 0")
    children.tend(time.monotonic() + 60)
    assert children.pids == []
    assert len(fork.bodies) == 1


def test_each_of_several_processes_is_respawned_alone_and_a_reload_resizes() -> None:
    fork, service = FakeFork(), Recorder()
    service.processes = 3
    children = ServiceChildren([service], fork)
    children.tend(time.monotonic())
    started = children.pids
    assert len(started) == 3
    second = started[1]
    assert children.on_exit(second, "signal 9")
    children.tend(time.monotonic() + RESPAWN_DELAYS[1] + 0.01)
    assert len(children.pids) == 3 and second not in children.pids
    service.processes = 1
    children.reconfigure(Settings(port=104))
    running = children.pids
    for pid in running:  # every child was asked to stop: one is replaced, two are not
        assert children.on_exit(pid, "exit 0")
    children.tend(time.monotonic())
    assert len(children.pids) == 1 and children.pids[0] not in running
    service.processes = 2
    children.reconfigure(Settings(port=104))
    children.tend(time.monotonic())
    assert len(children.pids) == 2  # one more at once, the running one recycling
