"""Supervised service children: the listeners that are not DICOM (HL7 intake, HTTP).

A service is a name, the listening sockets the supervisor opened for it (before privileges were
dropped), how many ``processes`` serve them at once, ``configure(settings)`` (run in the
supervisor: checks and takes new settings, raises to keep the old) and ``serve(stop)`` (run in
the child until ``stop`` is set). The supervisor forks ``processes`` children per service, all
accepting on the same sockets (the kernel spreads the connections), never waits on them,
respawns each that dies (backing off when it keeps dying), stops them with SIGTERM (graceful:
``stop`` is set) and recycles them on reload: each new child is forked once the one it replaces
has exited. In ``--single-process`` mode ``ServiceThreads`` runs each service in one thread
instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from wlmd.config.settings import Settings
from wlmd.dicom.types import AssociationReport

LOGGER = logging.getLogger("wlmd.services")
RESPAWN_DELAYS = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # after 0, 1, 2 … quick deaths in a row
QUICK_DEATH = 10.0  # a child that lived less than this counts as dying quickly
THREAD_JOIN = 10.0  # single-process mode: how long a stopping service thread may take


class Service(Protocol):
    """What the supervisor needs from a service."""

    name: str
    sockets: list[socket.socket]
    reads_worklist: bool  # forked like a worker, sharing the loaded worklist
    processes: int  # children serving the sockets at once (read again after configure)
    niceness: int  # added to the children's nice value: modalities on the DICOM port come first

    def configure(self, settings: Settings) -> None:
        """Check and take ``settings``; raise to keep the running ones."""

    def serve(self, stop: threading.Event) -> None:
        """Serve on ``sockets`` until ``stop`` is set, then finish what is under way."""


Fork = Callable[["Service", Callable[[], int]], int]  # (service, body) -> pid


class SupervisorEvents(Protocol):
    """What the supervisor reports as it works (counted for ``/metrics`` by the HTTP service)."""

    def association(self, report: AssociationReport, seconds: float) -> None:
        """One association ended (whichever worker served it)."""

    def refused(self, reason: str) -> None:
        """A connection was refused before a worker saw it: ``access`` or ``limit``."""

    def pool(self, busy: int, idle: int) -> None:
        """The worker pool's state, each time the supervisor looks at it."""

    def worker_exit(self, reason: str) -> None:
        """A worker left the pool: ``recycled``, ``killed`` or ``died``."""

    def file_problem(self) -> None:
        """A worklist file version was reported rejected or faulty (once per version)."""


@dataclass
class ServiceChild:
    """One service and its current child process (pid 0: none running)."""

    service: Service
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    respawn_at: float = 0.0
    stopping: bool = False  # SIGTERM sent: recycling or shutting down
    recycle: bool = False  # start a fresh child once this one has exited
    leaving: bool = False  # fewer processes configured: forget this one once it has exited


class ServiceChildren:
    """Forks, watches, respawns and stops the service children of the supervisor."""

    def __init__(self, services: Sequence[Service], fork: Fork) -> None:
        self._children = [ServiceChild(service) for service in services
                          for _ in range(service.processes)]
        self._fork = fork
        self._closed = False
        self._starting: Service | None = None

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children if child.pid]

    def sockets(self) -> list[socket.socket]:
        return [sock for child in self._children for sock in child.service.sockets]

    def tend(self, now: float) -> None:
        """Start every child that should run and does not (never blocks)."""
        if self._closed:
            return
        for child in self._children:
            if not child.pid and not child.leaving and now >= child.respawn_at:
                self._spawn(child, now)

    def on_exit(self, pid: int, how: str) -> bool:
        """A reaped child; False if it was not a service child."""
        child = next((c for c in self._children if c.pid == pid), None)
        if child is None:
            return False
        now = time.monotonic()
        expected = child.stopping
        child.pid, child.stopping = 0, False
        if child.leaving:
            self._children.remove(child)
            LOGGER.info("%s child %d exited (%s), not replaced", child.service.name, pid, how)
            return True
        if child.recycle or expected:
            child.recycle, child.quick_deaths, child.respawn_at = False, 0, now
            LOGGER.info("%s child %d exited (%s)", child.service.name, pid, how)
            return True
        child.quick_deaths = child.quick_deaths + 1 if now - child.started < QUICK_DEATH else 0
        delay = RESPAWN_DELAYS[min(child.quick_deaths, len(RESPAWN_DELAYS) - 1)]
        child.respawn_at = now + delay
        LOGGER.error("%s child %d died (%s); starting another in %gs", child.service.name,
                     pid, how, delay)
        return True

    def reconfigure(self, settings: Settings) -> None:
        """SIGHUP: each service takes the new settings (or keeps its own) and its children are
        recycled, as many as it now asks for."""
        services = list(dict.fromkeys(child.service for child in self._children))
        for service in services:
            try:
                service.configure(settings)
            except Exception as exc:
                LOGGER.error("%s: keeping the running configuration: %s", service.name, exc)
                continue
            staying = [c for c in self._children if c.service is service and not c.leaving]
            for child in staying[service.processes:]:
                child.leaving = True
                if child.pid:
                    self._signal(child, signal.SIGTERM)
                else:
                    self._children.remove(child)
            for child in staying[:service.processes]:
                if child.pid:
                    child.recycle = True
                    self._signal(child, signal.SIGTERM)
            self._children.extend(ServiceChild(service)
                                  for _ in range(service.processes - len(staying)))

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Stop every child (SIGTERM: gracefully) and start no more."""
        self._closed = True
        for child in self._children:
            if child.pid:
                self._signal(child, how)

    def close_sockets(self, keep: Service | None = None) -> None:
        """Close the listening sockets (in a forked child: all but its own service's)."""
        for service in dict.fromkeys(child.service for child in self._children):
            if service is not keep:
                for sock in service.sockets:
                    sock.close()

    def after_fork(self) -> None:
        """In any forked child: keep only the sockets of the service being started."""
        self.close_sockets(keep=self._starting)

    def _spawn(self, child: ServiceChild, now: float) -> None:
        service = self._starting = child.service
        try:
            child.pid = self._fork(service, lambda: _run_child(service))
        finally:
            self._starting = None
        child.started, child.stopping = now, False
        LOGGER.info("%s child %d started", service.name, child.pid)

    def _signal(self, child: ServiceChild, how: signal.Signals) -> None:
        child.stopping = True
        with contextlib.suppress(ProcessLookupError):  # already gone: its exit is reaped
            os.kill(child.pid, how)


def _run_child(service: Service) -> int:
    """The body of a service child: serve until SIGTERM (or SIGINT) sets ``stop``."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if service.niceness:
        os.nice(service.niceness)
    service.serve(stop)
    return 0


class ServiceThreads:
    """``--single-process``: each service in one thread of the one process, whatever its
    ``processes``."""

    def __init__(self, services: Sequence[Service]) -> None:
        self._services = list(services)
        self._threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(self) -> None:
        for service in self._services:
            stop = threading.Event()
            thread = threading.Thread(target=service.serve, args=(stop,),
                                      name=f"wlmd-{service.name}", daemon=True)
            thread.start()
            self._threads.append((thread, stop))

    def stop(self) -> None:
        for _thread, stop in self._threads:
            stop.set()
        for thread, _stop in self._threads:
            thread.join(THREAD_JOIN)
        self._threads.clear()

    def reconfigure(self, settings: Settings) -> None:
        """Reload: stop, take the new settings (or keep the old), start again."""
        self.stop()
        for service in self._services:
            try:
                service.configure(settings)
            except Exception as exc:
                LOGGER.error("%s: keeping the running configuration: %s", service.name, exc)
        self.start()

    def close(self) -> None:
        self.stop()
        for service in self._services:
            for sock in service.sockets:
                sock.close()
