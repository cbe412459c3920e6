"""The HTTP child: uvicorn serving the web application on sockets the supervisor opened.

The supervisor binds the HTTP listener before privileges are dropped and forks this child
like a worker (so it shares the preloaded worklist copy-on-write and keeps it current with its
own inotify queue); it respawns the child if it dies. TERM stops uvicorn gracefully.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from pathlib import Path

import uvicorn

from wlmd.config.settings import Settings
from wlmd.web.app import WebContext, create_app
from wlmd.web.metrics import exposition
from wlmd.worklist.service import WorklistService

LOGGER = logging.getLogger(__name__)


def readiness(settings: Settings, metrics_directory: Path | None) -> tuple[bool, str]:
    """Ready when the data path is readable and the pool has an idle worker (fork mode)."""
    if not os.access(settings.data_files_path, os.R_OK | os.X_OK):
        return False, f"data path {settings.data_files_path} is not readable"
    if metrics_directory is None:
        return True, "ready"
    text = exposition(metrics_directory).decode()
    for line in text.splitlines():
        if line.startswith('wlmd_workers{state="idle"}'):
            idle = float(line.rsplit(" ", 1)[1])
            return (True, "ready") if idle >= 1 else (False, "no idle worker")
    return False, "worker pool not started"


def serve(settings: Settings, listeners: list[socket.socket], service: WorklistService,
          metrics_directory: Path | None, tls_context: ssl.SSLContext | None) -> int:
    """Run uvicorn until TERM; returns the child's exit status."""
    context = WebContext(service=service, data_path=settings.data_files_path,
                         ready=lambda: readiness(settings, metrics_directory),
                         metrics_directory=metrics_directory)
    config = uvicorn.Config(create_app(context), log_config=None, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=int(
                                settings.graceful_timeout) or 1,
                            limit_concurrency=settings.http_max_connections)
    config.load()
    config.ssl = tls_context  # wlmd's own TLS context, the DICOM port's settings
    server = uvicorn.Server(config)
    server.run(sockets=listeners)
    return 0
