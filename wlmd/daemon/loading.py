"""The application's load, run by the supervisor while it already serves.

A first start of 100,000 worklist entries parses for most of a minute of CPU, and even a
restart from the index file loads for seconds; the supervisor would accept nothing meanwhile.
With a ``BackgroundLoad`` (``ServerHooks.background_load``) it serves at once instead, from
workers that answer without the load (``worklist/scan.py``), and runs the load in two steps:

1. a forked child does the work that need not happen in the supervisor (the parsing, into the
   index file), at a lower priority than the workers that serve;
2. a thread of the supervisor then does what must (the records that the next workers will
   share), while the loop goes on accepting and dispatching.

Then the supervisor starts a new generation of workers, which inherit the loaded application;
the serving ones finish their associations first, as on a reload. While the thread runs, the
supervisor forks nothing (a fork would copy whatever the thread holds half-done) and so does not
grow the pool: connections wait for an idle worker, within the exact association limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

LOGGER = logging.getLogger(__name__)
LOAD_NICENESS = 5  # added to the load's child and thread: serving comes first


class BackgroundLoad(Protocol):
    """What the application loads while the supervisor serves."""

    def in_child(self) -> int:
        """Step 1, in a forked child: its exit status (0: done)."""

    def in_thread(self) -> None:
        """Step 2, in a thread of the supervisor once the child is done; must not fork."""


class Loading:
    """The supervisor's side of a ``BackgroundLoad``: a child, then a thread, then done."""

    def __init__(self, load: BackgroundLoad, fork: Callable[[Callable[[], int]], int]) -> None:
        self._load = load
        self._started = time.monotonic()
        self._thread: threading.Thread | None = None
        self._failed = False
        # the thread says it is done on this socket, which wakes the supervisor's selector
        self.wakeup, self._wake_w = socket.socketpair()
        self.wakeup.setblocking(False)
        self.child_pid: int | None = fork(self._child)
        with contextlib.suppress(OSError):  # here too: a stop may come before the child runs
            os.setpgid(self.child_pid, self.child_pid)

    def _child(self) -> int:
        # a process group of its own, which its parsing processes join: a stop ends them all
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        os.nice(LOAD_NICENESS)  # the parsing yields the CPU to the workers that serve
        return self._load.in_child()

    @property
    def forks_allowed(self) -> bool:
        """False while the thread runs."""
        return self._thread is None or not self._thread.is_alive()

    @property
    def done(self) -> bool:
        """True once the thread has ended."""
        return self._thread is not None and not self._thread.is_alive()

    @property
    def failed(self) -> bool:
        """True if the thread raised (the load is left undone)."""
        return self._failed

    def child_exited(self, pid: int, exit_code: int | None, description: str, *,
                     start: bool = True) -> bool:
        """Step 2 begins when the child of step 1 ends (whatever its status: the thread does
        what the child left undone), unless not to ``start`` (stopping); False if ``pid`` is
        not that child."""
        if pid != self.child_pid:
            return False
        self.child_pid = None
        if not start:
            return True
        if exit_code != 0:
            LOGGER.warning("the worklist loading child %d failed (%s); loading what it left "
                           "undone here", pid, description)
        self._thread = threading.Thread(target=self._in_thread, name="wlmd-load", daemon=True)
        self._thread.start()
        return True

    def _in_thread(self) -> None:
        # this thread alone yields the CPU to the workers that serve, and to the loop
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
        try:
            self._load.in_thread()
        except Exception:
            self._failed = True
            LOGGER.exception("loading the worklist failed; workers go on reading the files")
        finally:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def on_wakeup(self, _sock: object) -> None:
        """Drain the wakeup socket (the supervisor then looks at ``done``)."""
        with contextlib.suppress(BlockingIOError):
            self.wakeup.recv(64)

    def seconds(self) -> float:
        """Since the load began."""
        return time.monotonic() - self._started

    def stop(self) -> None:
        """The supervisor stops: end the child of step 1 and its parsing processes (a thread
        ends with the process)."""
        if self.child_pid is not None:
            try:
                os.killpg(self.child_pid, signal.SIGKILL)
            except ProcessLookupError:  # it could not make its group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.child_pid, signal.SIGKILL)

    def close(self) -> None:
        """Close the wakeup sockets (the thread has ended)."""
        self.wakeup.close()
        self._wake_w.close()
