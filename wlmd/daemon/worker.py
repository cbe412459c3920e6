"""A pre-forked worker: receive a connection, serve one association, report, repeat.

A worker obeys its supervisor only: it ignores TERM, INT and HUP (a Ctrl-C or a systemd
control-group TERM must not cut an association the supervisor means to drain) and exits when
told ``stop``, when its channel reaches EOF (the supervisor died) or on SIGKILL.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import ssl
import time
from _thread import start_new_thread

from setproctitle import setproctitle

from wlmd.config.settings import Settings
from wlmd.daemon import handoff
from wlmd.daemon.connection import refused, serve_connection
from wlmd.daemon.hooks import AppFactory
from wlmd.daemon.pool import WORKER_BOOT_ERROR, Heartbeat, release_free_memory
from wlmd.dicom.types import AssociationInfo, AssociationReport, Outcome
from wlmd.security.access import AccessPolicy
from wlmd.worklist import completeness, records
from wlmd.worklist.records import FILE_VERSION

LOGGER = logging.getLogger(__name__)

IDLE_TITLE = "wlmd: worker idle"
STARTING_TITLE = "wlmd: worker starting"  # until its application is built
IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DEFAULT_SIGNALS = (signal.SIGQUIT, signal.SIGCHLD)
# Seconds without a new connection after an association before the worker gives back the
# heap pages its temporaries left free: off the path of a busy worker's next association.
QUIET_RELEASE_DELAY = 1.0


def reset_signals() -> None:
    """Undo the supervisor's handlers and wakeup fd, which fork copied into this process."""
    signal.set_wakeup_fd(-1)
    for signum in IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


class ForwardFileProblems(logging.Filter):
    """Hands what is logged about one worklist file version to the supervisor.

    Every worker reads a changed file for itself; the supervisor writes each such line once,
    so a bad file is reported once per version, not once per worker.
    """

    def __init__(self, channel: socket.socket) -> None:
        super().__init__()
        self._channel = channel

    def filter(self, record: logging.LogRecord) -> bool:
        version = FILE_VERSION.get()
        if not version:
            return True
        handoff.send_message(self._channel, handoff.OP_LOG, version=version,
                             logger=record.name, level=record.levelno,
                             message=record.getMessage())
        return False


def show_association(info: AssociationInfo) -> None:
    """``ps`` shows which modality a busy worker serves: ``wlmd: worker CT01 <- 10.0.0.5``."""
    setproctitle(f"wlmd: worker {info.called_ae} <- {info.peer_address}")


def next_message(channel: socket.socket, quiet_release_delay: float) -> handoff.Message:
    """The supervisor's next message; once the channel has been quiet for
    ``quiet_release_delay`` seconds, the heap's free pages are given back first."""
    if not select.select([channel], [], [], quiet_release_delay)[0]:
        release_free_memory()
    return handoff.receive(channel)


def start_heartbeat(heartbeat: Heartbeat, timeout: float) -> None:
    """Beat from a thread, so that a long association is not mistaken for a hang.

    A stopped (SIGSTOP) or GIL-starved worker stops beating, which is what the watchdog is for.
    The thread is a bare ``_thread`` one: ``threading.Thread`` would first build the threading
    module's bookkeeping (thread registry, start event, locks), whose writes un-share some
    200 KB of the supervisor's pages in every worker. Nothing joins this thread, names it or
    waits for it: it dies with the worker, which always leaves through ``os._exit``.
    """
    interval = max(0.05, min(timeout / 4, 5.0))

    def beat_forever() -> None:
        while True:
            heartbeat.beat()
            time.sleep(interval)

    start_new_thread(beat_forever, ())


def run_worker(channel: socket.socket, heartbeat: Heartbeat, settings: Settings,
               app_factory: AppFactory, tls_context: ssl.SSLContext | None = None,
               access: AccessPolicy | None = None) -> int:
    """The worker's life after fork (and after ``reset_signals``); returns its exit status.

    With ``tls_context`` the worker, not the supervisor, shakes hands with each client; with
    ``access`` (rules that need host name lookups) it also applies the access rules.
    """
    setproctitle(STARTING_TITLE)  # not the supervisor's title it was forked with
    start_heartbeat(heartbeat, settings.worker_timeout)
    forward = ForwardFileProblems(channel)
    for logger in (records.LOGGER, completeness.LOGGER):  # the loggers of reading one file
        logger.addFilter(forward)
    try:
        app = app_factory(settings)
    except Exception:
        LOGGER.exception("worker cannot build the worklist application")
        return WORKER_BOOT_ERROR
    setproctitle(IDLE_TITLE)
    handoff.send_message(channel, handoff.OP_READY)
    served = False  # until then the heap is the supervisor's, trimmed before the fork
    while True:
        try:
            message = (next_message(channel, QUIET_RELEASE_DELAY) if served
                       else handoff.receive(channel))
        except handoff.ChannelClosed:
            LOGGER.warning("supervisor gone, worker exiting")
            return 0
        if message.op != handoff.OP_SERVE or message.conn is None:
            return 0
        peer = (message.data["peer"][0], message.data["peer"][1])
        setproctitle(f"wlmd: worker <- {peer[0]}")
        if refused(access, message.conn, peer):
            report = AssociationReport(Outcome.REFUSED, detail="access rules")
        else:
            report = serve_connection(message.conn, peer, settings, app, tls_context,
                                      on_request=show_association)
        handoff.send_report(channel, report)
        served = True
        setproctitle(IDLE_TITLE)
