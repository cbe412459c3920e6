"""Accept-side work shared by the supervisor's workers and the single-process server.

One connection's path once accepted: the access check, the TLS handshake, the association, and
the one log line an administrator reads for it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Callable

from wlmd.config.logs import ASSOCIATION_LOGGER, LIFECYCLE_LOGGER
from wlmd.config.settings import Settings
from wlmd.dicom.association import serve_association
from wlmd.dicom.types import AssociationInfo, AssociationReport, Outcome, WorklistApplication
from wlmd.security.access import AccessPolicy
from wlmd.security.tls import HandshakeFailed, accept_tls

LOGGER = logging.getLogger(__name__)
# The one line per association: a channel of its own (an access log, kept at INFO by default).
ASSOCIATION_LOG = logging.getLogger(ASSOCIATION_LOGGER)
LIFECYCLE_LOG = logging.getLogger(LIFECYCLE_LOGGER)  # the listening line, shown by default too


def refused(access: AccessPolicy | None, conn: socket.socket, peer: tuple[str, int]) -> bool:
    """Apply the access rules: a refused peer is logged and closed before anything is read."""
    if access is None:
        return False
    decision = access.check(peer[0])
    if decision.allowed:
        return False
    LOGGER.warning("refused connection from %s (%s)", peer[0], decision.rule)
    conn.close()
    return True


def address_of(sock: socket.socket) -> str:
    """``host:port`` or ``[v6]:port`` of a listening socket, for the startup line."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_listening(server: str, listeners: list[socket.socket]) -> None:
    """The start-up line, shown at the default level: ``supervisor 42 listening on ...``."""
    LIFECYCLE_LOG.info("%s %d listening on %s", server, os.getpid(),
                       ", ".join(address_of(s) for s in listeners))


def serve_connection(conn: socket.socket, peer: tuple[str, int], settings: Settings,
                     app: WorklistApplication, tls_context: ssl.SSLContext | None,
                     on_request: Callable[[AssociationInfo], None] | None = None,
                     ) -> AssociationReport:
    """The TLS handshake when configured (within the ACSE timeout), then the association.

    Runs in the process that serves the connection, never in the supervisor.
    """
    if tls_context is not None:
        try:
            conn = accept_tls(conn, tls_context, settings.acse_timeout)
        except HandshakeFailed as exc:
            LOGGER.warning("TLS handshake with %s:%s failed: %s", peer[0], peer[1], exc)
            return AssociationReport(Outcome.TLS_FAILED, detail=str(exc))
    return serve_association(conn, peer, settings, app, on_request)


def log_association(report: AssociationReport, peer: tuple[str, int], started: float,
                    worker_pid: int | None = None) -> None:
    """The one line per association an administrator reads in syslog or the journal.

    ``matches=3+0+9`` gives the matched entries of each query (the total when there is one).
    The record is made here, with this function as its origin, rather than by ``Logger.info``:
    the supervisor writes one per association, and the caller lookup was a tenth of its cost.
    """
    if not ASSOCIATION_LOG.isEnabledFor(logging.INFO):
        return
    per_query = "+".join(str(count) for count in report.match_counts)
    record = ASSOCIATION_LOG.makeRecord(
        ASSOCIATION_LOG.name, logging.INFO, __file__, _LOG_ASSOCIATION_LINE,
        "association from %s:%s calling=%r called=%r%s outcome=%s queries=%d matches=%s "
        "duration=%.3fs%s%s",
        (peer[0], peer[1], report.calling_ae, report.called_ae,
         f" worker={worker_pid}" if worker_pid else "", report.outcome, report.queries,
         per_query if len(report.match_counts) > 1 else report.matches,
         time.monotonic() - started,
         f" policy={report.policy}" if report.policy else "",
         f" ({report.detail})" if report.detail else ""),
        None, "log_association")
    ASSOCIATION_LOG.handle(record)


_LOG_ASSOCIATION_LINE = log_association.__code__.co_firstlineno
