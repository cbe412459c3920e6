"""What a server loop needs from its surroundings, shared by ``--single-process`` and the
supervisor: the application it serves, systemd notifications and watchdog, reloading,
reopening logs, the TLS context.

Every hook is optional, so a server built in a test needs none of them.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from wlmd.config.settings import Settings
from wlmd.daemon.loading import BackgroundLoad
from wlmd.dicom.types import WorklistApplication
from wlmd.security.access import AccessPolicy

LOGGER = logging.getLogger(__name__)



class PreforkApplication(WorklistApplication, Protocol):
    """The application as the process model sees it: built before workers are forked, and
    inherited by them. The association engine never calls ``forking``; the supervisor does."""

    def forking(self) -> AbstractContextManager[None]:
        """Wrap the fork of one worker, so that it starts from the application's current state."""


# Builds (or returns the already built) application for the given settings.
AppFactory = Callable[[Settings], PreforkApplication]
ReloadHook = Callable[[], tuple[Settings, AccessPolicy | None]]
TlsContextGetter = Callable[[], ssl.SSLContext | None]
Notify = Callable[[str], object]  # sd_notify: one ``KEY=VALUE`` datagram, a no-op outside systemd


def _no_notify(_state: str) -> None:
    return None


def _no_tls() -> None:
    return None


@dataclass
class ServerHooks:
    """The hooks, plus the watchdog's schedule."""

    notify: Notify = _no_notify
    watchdog_interval: float | None = None  # seconds systemd allows between pings
    reload: ReloadHook | None = None  # SIGHUP: fresh settings and access rules, or raise
    reopen_logs: Callable[[], None] | None = None  # SIGUSR1, after log rotation
    tls_context: TlsContextGetter = _no_tls  # a getter: SIGHUP may replace the context
    # what the application loads while the supervisor serves (None: loaded before it starts)
    background_load: BackgroundLoad | None = None
    _next_watchdog: float = field(default=0.0, repr=False)

    def ping_watchdog(self, now: float) -> None:
        """``WATCHDOG=1`` at half the interval systemd asked for."""
        if self.watchdog_interval and now >= self._next_watchdog:
            self.notify("WATCHDOG=1")
            self._next_watchdog = now + self.watchdog_interval / 2

    def reload_settings(self) -> tuple[Settings, AccessPolicy | None] | None:
        """Tell systemd a reload began and re-read; None keeps the running configuration.

        The caller applies what it gets and then calls ``reloaded()``.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
        if self.reload is None:
            return None
        try:
            return self.reload()
        except Exception as exc:
            LOGGER.error("reload failed, keeping the running configuration: %s", exc)
            return None

    def reloaded(self) -> None:
        """The reload is over (applied or not)."""
        self.notify("READY=1")
