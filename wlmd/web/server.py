"""The HTTP service: uvicorn serving the web application on sockets the supervisor opened.

Supervised service children (``wlmd.daemon.services``), ``http_workers`` of them (one per CPU
by default) accepting on the one listener the supervisor binds before privileges are dropped:
one Python process serves on one core, and the DICOM port has a pool of workers too. Each is
forked inside the worklist's ``forking()`` like a worker (so it shares the preloaded worklist
copy-on-write and keeps it current with its own inotify queue), respawned if it dies and
recycled on reload. ``stop`` (SIGTERM) makes uvicorn finish the requests under way and exit.
Rate and connection limits are counted in each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import uvicorn

from wlmd.config.settings import Settings
from wlmd.mpps.service import MppsService
from wlmd.security.access import AccessPolicy
from wlmd.security.tls import TlsError, server_context
from wlmd.web.app import WebContext, create_app, web_service
from wlmd.web.auth import Principal, TokenFileError, TokenStore
from wlmd.web.guard import GuardSettings
from wlmd.web.metrics import samples
from wlmd.web.status import LintSummary
from wlmd.worklist.service import WorklistService

LOGGER = logging.getLogger(__name__)
STOP_POLL = 0.2  # seconds between looks at the stop event
DEFAULT_MAX_PROCESSES = 8  # http_workers = 0 on a machine with more CPUs than this


def http_processes(settings: Settings) -> int:
    """``http_workers``, where 0 means one per CPU this process may run on, at most
    ``DEFAULT_MAX_PROCESSES``: each child holds its own copy of the web stack (tens of MB)."""
    return settings.http_workers or min(len(os.sched_getaffinity(0)), DEFAULT_MAX_PROCESSES)


class HttpConfigError(Exception):
    """The HTTP settings cannot be used (token file, TLS files); the message says why."""


def readiness(settings: Settings, metrics_directory: Path | None) -> tuple[bool, str]:
    """Ready when the data path is readable and, in fork mode, the pool has an idle worker."""
    if not os.access(settings.data_files_path, os.R_OK | os.X_OK):
        return False, "data path not readable"
    if metrics_directory is None:
        return True, "ready"
    for sample in samples(metrics_directory, "wlmd_workers"):
        if sample.labels.get("state") == "idle":
            return (True, "ready") if sample.value >= 1 else (False, "no idle worker")
    return False, "worker pool not started"


class WorklistSource(Protocol):
    """The supervisor's loaded worklist (and MPPS service), inherited by the child."""

    def __call__(self, settings: Settings) -> WorklistService: ...

    @property
    def mpps(self) -> MppsService | None: ...


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service child owns SIGTERM (``stop``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpService:
    """The ``http`` service of the supervisor (or a thread in ``--single-process``)."""

    name = "http"
    reads_worklist = True  # the search answers from the shared, inotify-current store
    niceness = 10  # a busy HTTP client must not slow the modalities' C-FINDs down

    def __init__(self, sockets: list[socket.socket], settings: Settings,
                 worklist: WorklistSource,
                 access: Callable[[Settings], AccessPolicy | None],
                 metrics_directory: Path | None = None) -> None:
        self.sockets = sockets
        self._worklist = worklist
        self._access_for = access
        self._metrics_directory = metrics_directory
        self._settings = settings
        self._guard, self._tls = self._load(settings)
        self.processes = http_processes(settings)

    def configure(self, settings: Settings) -> None:
        """Check and take new settings (SIGHUP); raises HttpConfigError to keep the old."""
        self._guard, self._tls = self._load(settings)
        self._settings = settings
        self.processes = http_processes(settings)

    def _load(self, settings: Settings) -> tuple[GuardSettings, ssl.SSLContext | None]:
        tokens = None
        if settings.http_tokens is not None:
            try:
                tokens = TokenStore.load(settings.http_tokens)
            except TokenFileError as error:
                raise HttpConfigError(str(error)) from None
        tls = None
        if settings.http_tls:
            try:
                tls = server_context(settings)
            except TlsError as error:
                raise HttpConfigError(str(error)) from None
            if tls is None:
                raise HttpConfigError("http_tls needs the TLS key and certificate settings")
        if settings.http_client_cert_scope and not (tls and settings.tls_require_peer_cert):
            raise HttpConfigError("http_client_cert_scope needs http_tls and "
                                  "tls_require_peer_cert, so that every client is verified")
        certificate = (Principal("client-certificate", settings.http_client_cert_scope)
                       if settings.http_client_cert_scope else None)
        guard = GuardSettings(tokens=tokens, client_certificate=certificate,
                              access=self._access_for(settings),
                              max_body=settings.http_max_body, rate=settings.http_rate,
                              burst=max(1, int(settings.http_rate * 2)))
        return guard, tls

    def serve(self, stop: threading.Event) -> None:
        """Run uvicorn on the inherited sockets until ``stop`` is set."""
        settings = self._settings
        service = web_service(settings, self._worklist(settings).store)
        context = WebContext(service=service, data_path=settings.data_files_path,
                             ready=lambda: readiness(settings, self._metrics_directory),
                             metrics_directory=self._metrics_directory,
                             problems=LintSummary(settings.data_files_path),
                             mpps=self._worklist.mpps)
        config = uvicorn.Config(create_app(context, self._guard), log_config=None,
                                access_log=False, lifespan="off",
                                timeout_graceful_shutdown=max(1, int(settings.graceful_timeout)),
                                limit_concurrency=settings.http_max_connections)
        config.load()
        config.ssl = self._tls  # the DICOM port's TLS context, built by wlmd's own TLS module
        server = _Server(config)
        for sock in self.sockets:
            sock.setblocking(False)
        asyncio.run(self._run(server, stop))

    async def _run(self, server: uvicorn.Server, stop: threading.Event) -> None:
        task = asyncio.create_task(server.serve(sockets=self.sockets))
        while not task.done():
            if stop.is_set():
                server.should_exit = True
            await asyncio.sleep(STOP_POLL)
        await task
