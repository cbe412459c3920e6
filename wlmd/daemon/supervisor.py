"""``--fork`` (the default): a supervisor that accepts and a pool of pre-forked workers that serve.

The supervisor never blocks on a client: it accepts, applies the access rules and the exact
association limit, and passes each connection to an idle worker. One ``selectors`` loop watches
the listeners, every worker's channel and a wakeup socket that ``signal.set_wakeup_fd`` writes
signal numbers to; the handlers themselves do nothing (gunicorn's arbiter, minus its globals).

Over the limit, the supervisor itself reads the A-ASSOCIATE-RQ and answers RJ 2/3/2
(``wlmd.refusals``), without blocking: the socket is non-blocking and watched by the same
selector. Not an idle worker: the pool is capped at ``max_associations``, so when the limit is
reached there may be no idle worker at all, and a refused client that sends nothing would hold
a worker for the whole ACSE timeout.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from setproctitle import setproctitle

from wlmd.config.settings import Settings
from wlmd.daemon import handoff
from wlmd.daemon.connection import LIFECYCLE_LOG, log_association, log_listening, refused
from wlmd.daemon.hooks import AppFactory, ServerHooks
from wlmd.daemon.loading import Loading
from wlmd.daemon.pool import (
    HANDLED_SIGNALS,
    WORKER_BOOT_ERROR,
    ChildExit,
    Heartbeat,
    SlotState,
    WorkerPool,
    WorkerSlot,
    spawn_plan,
)
from wlmd.daemon.refusals import Refusals
from wlmd.daemon.services import Service, ServiceChildren, SupervisorEvents
from wlmd.daemon.worker import reset_signals, run_worker
from wlmd.dicom.types import AssociationReport
from wlmd.security.access import AccessPolicy

LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_HALTED = 1  # workers cannot boot: respawning would only loop
ACCEPT_BATCH = 64  # connections accepted per readable event, so signals are not starved
TICK = 1.0  # longest sleep of the loop: the watchdog and the pool are tended at least this often
MEMORY_CHECK_INTERVAL = 5.0
ACCEPT_PAUSE = 0.5  # after EMFILE and friends, instead of spinning on a readable listener
SHRINK_INTERVAL = 1.0  # the pool gives back half its surplus idle workers at most this often
REAP_GRACE = 5.0  # after SIGKILL, how long to wait for the children to be reaped

# The reload hook re-reads configuration and access rules; it raises to keep the old ones.


@dataclass
class Pending:
    """An accepted connection admitted under the limit, waiting for a worker to become idle."""

    conn: socket.socket
    peer: tuple[str, int]
    since: float


class FileProblemLog:
    """Writes once what workers report about a worklist file version (each reads it itself)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._written: OrderedDict[tuple[str, str], None] = OrderedDict()

    def write(self, data: dict[str, object]) -> bool:
        """Log the reported line unless a worker already reported it for that version; True
        when it is new."""
        key = (str(data.get("version")), str(data.get("message")))
        if key in self._written:
            return False
        self._written[key] = None
        if len(self._written) > self._capacity:
            self._written.popitem(last=False)
        level = data.get("level")
        logging.getLogger(str(data.get("logger"))).log(
            level if isinstance(level, int) else logging.WARNING, "%s", key[1])
        return True


class Supervisor:
    """Owns the listeners and the pool; ``run()`` returns the process exit status."""

    def __init__(self, settings: Settings, listeners: Sequence[socket.socket],
                 app_factory: AppFactory, access_policy: AccessPolicy | None = None,
                 hooks: ServerHooks | None = None, services: Sequence[Service] = (),
                 events: SupervisorEvents | None = None) -> None:
        self.settings = settings
        self._hooks = hooks = hooks or ServerHooks()
        self._listeners = list(listeners)
        self._app_factory = app_factory
        self._access = access_policy
        self._last_status = ""
        self._generation = 0
        self._pending: deque[Pending] = deque()
        self._signals: deque[int] = deque()
        self._selector = selectors.DefaultSelector()
        self._refusals = Refusals(self._selector, settings, hooks.tls_context())
        self._file_log = FileProblemLog()
        self._next_shrink = 0.0
        self._least_surplus = sys.maxsize  # the smallest surplus of spares seen this interval
        self._wake_r, self._wake_w = socket.socketpair()
        self._pool = WorkerPool(self._worker_main, self._after_fork)
        self._services = ServiceChildren(services, self._fork_service)
        self._events = events
        self._exit_code: int | None = None
        self._stopping = False
        self._stop_code = EXIT_OK
        self._drain_deadline = 0.0
        self._killed_all = False
        self._next_memory_check = 0.0
        self._next_watch = 0.0
        self._child_exited = False  # SIGCHLD came: reap in this turn of the loop
        self._accept_paused_until = 0.0
        self._loading: Loading | None = None  # the application loading while serving
        self._reload_waiting = False  # SIGHUP came while loading: reload once loaded

    # ---- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a stop signal (or a halt); return the exit status."""
        setproctitle("wlmd: supervisor")
        self._install_signals()
        try:
            self._watch_listeners()
            self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)
            self._manage_workers()
            if self._hooks.background_load is not None:
                self._loading = Loading(self._hooks.background_load, self._pool.fork_service)
                self._selector.register(self._loading.wakeup, selectors.EVENT_READ,
                                        self._loading.on_wakeup)
                LIFECYCLE_LOG.info("loading the worklist; meanwhile workers read the files "
                                   "for each query")
            else:
                self._services.tend(time.monotonic())
            log_listening("supervisor", self._listeners)
            self._hooks.notify("READY=1\nSTATUS=accepting associations")
            while self._exit_code is None:
                self._wait()
                self._handle_signals()
                self._tend()
        finally:
            self._shutdown()
        return self._stop_code if self._exit_code is None else self._exit_code

    def _watch_interval(self) -> float:
        """The longest sleep of the loop, and the period of its watching."""
        return min(TICK, max(0.05, self.settings.worker_timeout / 2))

    def _wait(self) -> None:
        timeout = self._watch_interval()
        if self._stopping:
            timeout = min(timeout, max(0.0, self._drain_deadline - time.monotonic()) + 0.01)
        for key, _events in self._selector.select(timeout):
            key.data(key.fileobj)

    def _tend(self) -> None:
        """Reap, watch, then keep the pool and the waiting connections moving.

        The loop runs about twice per association under load; reaping waits for SIGCHLD
        and the watching (a stat of every heartbeat, expiries, status) for its interval.
        """
        now = time.monotonic()
        watch = self._stopping or now >= self._next_watch
        if watch or self._child_exited:
            self._child_exited = False
            for child in self._pool.reap():
                self._on_exit(child)
        if self._loading is not None and self._loading.done:
            self._loaded(self._loading)
        if watch:
            self._next_watch = now + self._watch_interval()
            self._pool.murder_silent(self.settings.worker_timeout)
            self._refusals.expire(now)
            self._report_health(now)
        if now >= self._next_memory_check:
            self._next_memory_check = now + MEMORY_CHECK_INTERVAL
            self._pool.check_memory(self.settings.worker_max_memory_mb)
        if self._stopping:
            self._check_drained(now)
            return
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._watch_listeners()
        self._expire_pending(now)
        self._manage_workers()
        if self._loading is None:  # services start with the loaded application
            self._services.tend(now)
        self._dispatch_pending()

    def _loaded(self, loading: Loading) -> None:
        """The background load is over: the next generation of workers inherits it."""
        self._loading = None
        _unregister(self._selector, loading.wakeup)
        loading.close()
        if loading.failed:
            return  # the workers go on reading the files
        LIFECYCLE_LOG.info("worklist loaded in %.1f s; worker generation %d serves it",
                           loading.seconds(), self._generation + 1)
        self._start_generation("worklist loaded")
        if self._reload_waiting:
            self._reload_waiting = False
            self.reload()

    def _report_health(self, now: float) -> None:
        """Ping the systemd watchdog and keep ``systemctl status`` showing the pool's load."""
        self._hooks.ping_watchdog(now)
        busy = self._pool.busy_count()
        status = f"STATUS={busy} association(s) open, {len(self._pool.slots) - busy} idle worker(s)"
        if status != self._last_status:
            self._last_status = status
            self._hooks.notify(status)

    # ---- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, _record_nothing)

    def _on_wakeup(self, _sock: object) -> None:
        with contextlib.suppress(BlockingIOError):
            for _ in range(64):
                data = self._wake_r.recv(4096)
                if not data:
                    break
                self._signals.extend(data)

    def _handle_signals(self) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.stop,
            signal.SIGINT: self._interrupt,
            signal.SIGQUIT: self.stop_now,
            signal.SIGHUP: self.reload,
            signal.SIGUSR1: self.reopen_logs,
        }
        while self._signals:
            signum = self._signals.popleft()
            if signum == signal.SIGCHLD:  # _tend reaps
                self._child_exited = True
            elif (handler := handlers.get(signum)) is not None:
                handler()

    def _interrupt(self) -> None:
        """SIGINT: graceful, or fast when a graceful stop is already under way (gunicorn)."""
        if self._stopping:
            self.stop_now()
        else:
            self.stop()

    def stop(self) -> None:
        """Graceful stop: no new connections; open associations get ``graceful_timeout``."""
        if self._stopping:
            return
        busy = self._pool.busy_count()
        LOGGER.info("stopping: %d association(s) open, waiting up to %gs", busy,
                    self.settings.graceful_timeout)
        self._hooks.notify("STOPPING=1")
        self._begin_stop(time.monotonic() + self.settings.graceful_timeout)
        self._services.stop()
        if self._loading is not None:
            self._loading.stop()
        for slot in self._pool:
            self._pool.retire(slot)

    def stop_now(self) -> None:
        """Fast stop: end every association now."""
        LOGGER.info("stopping now")
        self._hooks.notify("STOPPING=1")
        if self._loading is not None:
            self._loading.stop()
        self._begin_stop(time.monotonic())
        self._kill_all()

    def _halt(self, reason: str) -> None:
        LOGGER.critical("%s; stopping", reason)
        self._stop_code = EXIT_HALTED
        self.stop_now()

    def _begin_stop(self, deadline: float) -> None:
        if not self._stopping:
            self._drain_deadline = deadline
        self._drain_deadline = min(self._drain_deadline, deadline)
        self._stopping = True
        self._close_listeners()
        self._services.close_sockets()
        while self._pending:
            self._pending.popleft().conn.close()
        self._refusals.close_all()

    def _check_drained(self, now: float) -> None:
        if not self._pool.slots and not self._services.pids:
            self._exit_code = self._stop_code
        elif now >= self._drain_deadline + REAP_GRACE:
            LOGGER.error("children did not exit: %s",
                         sorted([*self._pool.slots, *self._services.pids]))
            self._exit_code = self._stop_code
        elif now >= self._drain_deadline and not self._killed_all:
            LOGGER.warning("grace period over, ending %d association(s)",
                           self._pool.busy_count())
            self._kill_all()

    def _kill_all(self) -> None:
        self._killed_all = True
        self._pool.kill_all()
        self._services.stop(signal.SIGKILL)

    def reload(self) -> None:
        """SIGHUP: re-read configuration and rules, then replace the workers by generation.

        Idle workers of the old generation stop at once; busy ones finish their association
        first. Listening sockets are kept: a changed port or address needs a restart.
        """
        if self._stopping:
            return
        if self._loading is not None:  # the load in progress is of the running settings
            LOGGER.info("reload: waiting for the worklist load to finish")
            self._reload_waiting = True
            return
        if (fresh := self._hooks.reload_settings()) is not None:
            self.settings, self._access = fresh
            self._refusals.settings = self.settings
            self._refusals.ssl_context = self._hooks.tls_context()
            self._start_generation("reloaded")
            self._services.reconfigure(self.settings)
        self._hooks.reloaded()

    def reopen_logs(self) -> None:
        """SIGUSR1 (after log rotation): reopen log files and sockets, here and in new workers."""
        if self._stopping or self._hooks.reopen_logs is None:
            return
        self._hooks.reopen_logs()
        if self._loading is None:  # else the loaded generation comes with the new logs
            self._start_generation("logs reopened")

    def _start_generation(self, reason: str) -> None:
        """Replace every worker: idle ones now, busy ones after their association."""
        self._generation += 1
        LOGGER.info("%s: starting worker generation %d", reason, self._generation)
        for slot in self._pool:
            self._pool.retire(slot)
        self._manage_workers()

    # ---- accepting -------------------------------------------------------------------------

    def _watch_listeners(self) -> None:
        for listener in self._listeners:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, self._on_listener)

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            _unregister(self._selector, listener)
            listener.close()
        self._listeners.clear()

    def _on_listener(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: back off instead of spinning
                LOGGER.error("accept failed: %s; pausing for %gs", exc, ACCEPT_PAUSE)
                for sock in self._listeners:
                    _unregister(self._selector, sock)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            self._admit(conn, (peer[0], peer[1]))

    def _admit(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Access rules, then the exact limit, then a worker (now or when one is free).

        Rules that name hosts need a reverse lookup, which may take seconds: the worker applies
        those, so that the supervisor never waits.
        """
        if not self._rules_need_lookup() and refused(self._access, conn, peer):
            if self._events:
                self._events.refused("access")
            return
        if self._over_limit(peer[0]):
            if self._events:
                self._events.refused("limit")
            self._refuse(conn, peer)
            return
        self._pending.append(Pending(conn, peer, time.monotonic()))
        self._dispatch_pending()

    def _rules_need_lookup(self) -> bool:
        return self._access is not None and self._access.needs_host_lookup

    def _over_limit(self, host: str) -> bool:
        """``--max-associations`` (and ``--max-associations-per-host``) counting every worker
        holding an association and every connection already admitted to wait for one."""
        limit, per_host = self.settings.max_associations, self.settings.max_associations_per_host
        if self._pool.busy_count() + len(self._pending) >= limit:
            return True
        if per_host <= 0:
            return False
        peers = [s.peer for s in self._pool if s.peer] + [p.peer for p in self._pending]
        return sum(1 for peer in peers if peer[0] == host) >= per_host

    def _dispatch_pending(self) -> None:
        while self._pending:
            slot = self._pool.idle_slot(self._generation)
            if slot is None:
                return
            waiting = self._pending.popleft()
            try:
                handoff.send_connection(slot.channel, waiting.conn, waiting.peer)
            except OSError as exc:  # the worker is dying; its CHLD will follow
                LOGGER.warning("%s cannot take a connection: %s", slot.describe(), exc)
                self._pool.kill(slot, "broken channel")
                self._pending.appendleft(waiting)
                continue
            waiting.conn.close()
            slot.state, slot.peer, slot.busy_since = SlotState.BUSY, waiting.peer, time.monotonic()

    def _expire_pending(self, now: float) -> None:
        """A connection no worker could take within the ACSE timeout is closed."""
        while self._pending and now - self._pending[0].since > self.settings.acse_timeout:
            waiting = self._pending.popleft()
            LOGGER.error("no worker became free for %s:%s, closing", *waiting.peer)
            waiting.conn.close()

    def _refuse(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        LOGGER.debug("association limit reached: refusing %s:%s", *peer)
        self._refusals.refuse(conn, peer)

    # ---- workers ---------------------------------------------------------------------------

    def _manage_workers(self) -> None:
        """Keep between min and max spare workers, within the association limit (none forked
        while the background load's thread runs)."""
        if self._loading is not None and not self._loading.forks_allowed:
            return
        spares = self._pool.spares(self._generation)
        busy = self._pool.busy_count()
        if self._events:
            self._events.pool(busy=busy, idle=sum(s.state is SlotState.IDLE for s in spares))
        delta = spawn_plan(self.settings, idle=len(spares), busy=busy,
                           wanted_extra=len(self._pending))
        for _ in range(delta):
            with self._app_factory(self.settings).forking():
                slot = self._pool.spawn(self.settings, self._generation)
            self._selector.register(slot.channel, selectors.EVENT_READ,
                                    functools.partial(self._on_channel, slot))
        now = time.monotonic()
        self._least_surplus = min(self._least_surplus, max(0, -delta))
        if now >= self._next_shrink:
            # Half the surplus that lasted the whole interval (at least one) a second, the
            # coldest (used least recently, or never) first: a pool that followed every swing
            # of its load would fork a worker per association (and clients that connect again
            # at once leave a spare over for a moment each time), and one that shrank by one a
            # second would keep a flood's workers for a minute.
            surplus, self._least_surplus = self._least_surplus, sys.maxsize
            self._next_shrink = now + SHRINK_INTERVAL
            if surplus:
                idle = [s for s in spares if s.state is SlotState.IDLE]
                for slot in idle[len(idle) - min((1 + surplus) // 2, len(idle)):]:
                    self._pool.retire(slot)

    def _on_channel(self, slot: WorkerSlot, channel: socket.socket) -> None:
        try:
            message = handoff.receive(channel)
        except BlockingIOError:
            return
        except (handoff.ChannelClosed, OSError, ValueError) as exc:
            _unregister(self._selector, channel)  # a dead worker's EOF; its CHLD follows
            if not isinstance(exc, handoff.ChannelClosed):
                self._pool.kill(slot, f"bad channel message: {exc}")
            return
        if message.op == handoff.OP_READY:
            slot.state = SlotState.IDLE
        elif message.op == handoff.OP_DONE and message.report is not None:
            self._on_done(slot, message.report)
        elif (message.op == handoff.OP_LOG and self._file_log.write(message.data)
              and self._events):
            self._events.file_problem()

    def _on_done(self, slot: WorkerSlot, report: AssociationReport) -> None:
        """A worker is free again: log its association's one line, then reuse or recycle it."""
        started = slot.busy_since or time.monotonic()
        log_association(report, slot.peer or ("?", 0), started, slot.pid)
        if self._events:
            self._events.association(report, time.monotonic() - started)
        slot.state, slot.peer, slot.busy_since = SlotState.IDLE, None, None
        slot.served += 1
        slot.freed = time.monotonic()
        if (slot.retire_when_free or slot.generation != self._generation
                or 0 < slot.max_uses <= slot.served):
            self._pool.retire(slot)

    def _on_exit(self, child: ChildExit) -> None:
        if self._loading is not None and self._loading.child_exited(
                child.pid, child.exit_code, child.describe(), start=not self._stopping):
            return
        slot = child.slot
        if slot is None:  # a service child, or an unknown one (we may be PID 1)
            self._services.on_exit(child.pid, child.describe())
            return
        _unregister(self._selector, slot.channel)
        slot.close()
        if slot.state is SlotState.BOOTING and child.exit_code == WORKER_BOOT_ERROR:
            if not self._stopping:
                self._halt(f"worker {slot.pid} could not start")
        elif slot.state is SlotState.BUSY:
            LOGGER.error("%s died (%s) during its association", slot.describe(),
                         child.describe())
        elif not (slot.retiring or slot.killed) or child.exit_code not in (0, None):
            LOGGER.warning("worker %d exited (%s)", slot.pid, child.describe())
        if self._events:
            self._events.worker_exit("killed" if slot.killed else
                                     "recycled" if slot.retiring else "died")

    def _fork_service(self, service: Service, body: Callable[[], int]) -> int:
        """Fork a service child; one that reads the worklist is forked like a worker, inside
        the worklist's ``forking()``, so it shares the loaded records and has its own inotify
        queue."""
        if not service.reads_worklist:
            return self._pool.fork_service(body)
        with self._app_factory(self.settings).forking():
            return self._pool.fork_service(body)

    def _worker_main(self, channel: socket.socket, heartbeat: Heartbeat,
                     settings: Settings) -> int:
        return run_worker(channel, heartbeat, settings, self._app_factory,
                          self._hooks.tls_context(),
                          self._access if self._rules_need_lookup() else None)

    def _after_fork(self) -> None:
        """In every child: drop the supervisor's signal plumbing, listeners and waiting clients.

        A waiting client's fd left open in a child would keep its TCP connection alive after
        the supervisor hands it on and closes its own copy.
        """
        reset_signals()
        os.environ.pop("NOTIFY_SOCKET", None)  # NotifyAccess=main: only the supervisor reports
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        for listener in self._listeners:
            listener.close()
        self._services.after_fork()
        while self._pending:
            self._pending.popleft().conn.close()
        self._refusals.drop()
        if self._loading is not None:
            self._loading.close()

    def _shutdown(self) -> None:
        """Leave nothing behind, whatever ended the loop."""
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        self._begin_stop(time.monotonic())
        if self._pool.slots or self._services.pids:
            self._pool.kill_all()
            self._services.stop(signal.SIGKILL)
            deadline = time.monotonic() + REAP_GRACE
            while (self._pool.slots or self._services.pids) and time.monotonic() < deadline:
                for child in self._pool.reap():
                    self._on_exit(child)
                time.sleep(0.02)
        self._pool.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        LOGGER.info("supervisor %d stopped", os.getpid())


def _record_nothing(_signum: int, _frame: object) -> None:
    """Signal handler: the number already went to the wakeup fd; act on it in the loop."""


def _unregister(selector: selectors.BaseSelector, fileobj: socket.socket) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(fileobj)
