"""``--single-process``: the whole server in one process, one association at a time.

The same accept → access check → serve path as a worker, inline, so that a person can follow an
association under pdb or strace. Later connections wait in the listen backlog. Services (HL7
intake) run in threads of this process.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from collections.abc import Sequence

from wlmd.config.settings import Settings
from wlmd.daemon.connection import log_association, log_listening, refused, serve_connection
from wlmd.daemon.hooks import AppFactory, ServerHooks
from wlmd.daemon.services import Service, ServiceThreads
from wlmd.security.access import AccessPolicy

LOGGER = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
TICK = 1.0  # longest wait between looks at signals and the watchdog while idle


class SingleProcessServer:
    """Accept and serve associations one after another until a stop signal arrives."""

    def __init__(self, settings: Settings, listeners: Sequence[socket.socket],
                 app_factory: AppFactory, access_policy: AccessPolicy | None = None,
                 hooks: ServerHooks | None = None, services: Sequence[Service] = ()) -> None:
        self._settings = settings
        self._services = ServiceThreads(services)
        self._hooks = hooks or ServerHooks()
        self._listeners = list(listeners)
        self._app_factory = app_factory
        self._app = app_factory(settings)
        self._access = access_policy
        self._stopping = False
        self._reload_requested = False
        self._reopen_requested = False

    def run(self) -> int:
        """Serve until SIGTERM, SIGINT or SIGQUIT; an open association is finished first.

        SIGHUP (reload) and SIGUSR1 (reopen logs) take effect between associations.
        """
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._request_stop)
        signal.signal(signal.SIGHUP, self._request_reload)
        signal.signal(signal.SIGUSR1, self._request_reopen)
        # signals also write to wake_w (set_wakeup_fd), so select() returns at once for them
        wake_r, wake_w = socket.socketpair()
        self._services.start()
        with selectors.DefaultSelector() as selector, wake_r, wake_w:
            wake_w.setblocking(False)
            previous_wakeup_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            selector.register(wake_r, selectors.EVENT_READ)
            for listener in self._listeners:
                listener.setblocking(False)
                selector.register(listener, selectors.EVENT_READ, listener)
            log_listening("single process", self._listeners)
            hooks = self._hooks
            hooks.notify("READY=1\nSTATUS=serving (single process)")
            tick = min(TICK, hooks.watchdog_interval / 2) if hooks.watchdog_interval else TICK
            while not self._stopping:
                self._apply_requests()
                hooks.ping_watchdog(time.monotonic())  # only while not serving
                for key, _ in selector.select(timeout=tick):
                    ready: socket.socket | None = key.data
                    if ready is None:  # the wakeup socket
                        wake_r.recv(4096)  # the handlers already ran; this only woke us
                        continue
                    self._accept_and_serve(ready)
                    if self._stopping:
                        break
            signal.set_wakeup_fd(previous_wakeup_fd)
        for listener in self._listeners:
            listener.close()
        self._services.close()
        LOGGER.info("stopped")
        return 0

    def _request_stop(self, signum: int, _frame: object) -> None:
        """Runs in the main thread between bytecodes, so it may notify systemd at once."""
        if not self._stopping:
            self._hooks.notify("STOPPING=1")
        self._stopping = True

    def _request_reload(self, signum: int, _frame: object) -> None:
        self._reload_requested = True

    def _request_reopen(self, signum: int, _frame: object) -> None:
        self._reopen_requested = True

    def _apply_requests(self) -> None:
        """Act on SIGHUP/SIGUSR1 outside the signal handlers, between associations."""
        hooks = self._hooks
        if self._reopen_requested and hooks.reopen_logs is not None:
            self._reopen_requested = False
            hooks.reopen_logs()
        if self._reload_requested:
            self._reload_requested = False
            if (fresh := hooks.reload_settings()) is not None:
                self._settings, self._access = fresh
                self._app = self._app_factory(self._settings)
                self._services.reconfigure(self._settings)
                LOGGER.info("reloaded")
            hooks.reloaded()

    def _accept_and_serve(self, listener: socket.socket) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if refused(self._access, conn, peer):
            return
        conn.setblocking(True)
        started = time.monotonic()
        report = serve_connection(conn, peer, self._settings, self._app,
                                  self._hooks.tls_context())
        log_association(report, peer, started)
