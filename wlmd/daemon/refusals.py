"""Connections over the association limit, answered by the supervisor without ever blocking.

wlmscpfs answers the association after ``--max-associations`` with A-ASSOCIATE-RJ 2/3/2 once it
has read the A-ASSOCIATE-RQ (closing with the request unread would reset the connection). The
supervisor must not wait for a client, so each refused socket is non-blocking and watched by
the supervisor's selector: bytes are collected as they arrive (after a TLS handshake when TLS
is on), the reply is sent, and the socket is closed once the client has closed its side (for
at most ``LINGER`` seconds: closing with bytes unread would reset the connection, and a reset
can discard the reply before the client reads it). A silent client is closed after the ACSE
timeout; a flood beyond ``MAX_REFUSALS`` pending refusals is closed at once.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field

from wlmd.config.settings import Settings
from wlmd.dicom.association import limit_refusal
from wlmd.dicom.pdu import MAX_ASSOCIATE_RQ, PDU_HEADER
from wlmd.dicom.types import Outcome

LOGGER = logging.getLogger(__name__)
MAX_REFUSALS = 512  # refusals in progress at once; beyond this a connection is just closed
LINGER = 2.0  # seconds an answered client has to close before the supervisor closes


@dataclass
class _Refusal:
    conn: socket.socket
    peer: tuple[str, int]
    deadline: float
    handshaking: bool
    received: bytearray = field(default_factory=bytearray)
    outcome: Outcome | None = None  # set once answered; the connection is then being drained
    detail: str = ""


class Refusals:
    """The refusals in progress, driven by the supervisor's selector."""

    def __init__(self, selector: selectors.BaseSelector, settings: Settings,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._selector = selector
        self.settings = settings
        self.ssl_context = ssl_context
        self._pending: dict[socket.socket, _Refusal] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def refuse(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Start refusing ``conn``; the supervisor no longer owns it."""
        if len(self._pending) >= MAX_REFUSALS:
            LOGGER.warning("association limit reached and %d refusals pending: closing %s:%s",
                           MAX_REFUSALS, *peer)
            conn.close()
            return
        conn.setblocking(False)
        if self.ssl_context is not None:
            conn = self.ssl_context.wrap_socket(conn, server_side=True,
                                                do_handshake_on_connect=False)
        refusal = _Refusal(conn, peer, time.monotonic() + self.settings.acse_timeout,
                           handshaking=self.ssl_context is not None)
        self._pending[conn] = refusal
        self._selector.register(conn, selectors.EVENT_READ, self._on_readable)
        self._on_readable(conn)  # data may already be there

    def expire(self, now: float) -> None:
        """Close refusals whose client sent no complete request within the ACSE timeout."""
        for refusal in [r for r in self._pending.values() if now >= r.deadline]:
            self._finish(refusal, f"no A-ASSOCIATE-RQ within {self.settings.acse_timeout:g}s")

    def close_all(self) -> None:
        """Stopping: drop every refusal in progress."""
        for refusal in list(self._pending.values()):
            self._finish(refusal, "server stopping")

    def drop(self) -> None:
        """In a freshly forked child: close the inherited copies, touching nothing shared."""
        for conn in self._pending:
            conn.close()
        self._pending.clear()

    def _on_readable(self, conn: socket.socket) -> None:
        refusal = self._pending.get(conn)
        if refusal is None:
            return
        if refusal.outcome is not None:
            self._drain(refusal)
            return
        try:
            if isinstance(conn, ssl.SSLSocket) and refusal.handshaking:
                conn.do_handshake()
                refusal.handshaking = False
            while (chunk := conn.recv(65536)):
                refusal.received += chunk
                if self._answer(refusal):
                    return
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except (OSError, ssl.SSLError) as exc:
            self._finish(refusal, f"connection error: {exc}")
            return
        self._finish(refusal, "closed by the peer before its request was complete")

    def _answer(self, refusal: _Refusal) -> bool:
        """Reply once the first PDU is complete (or hopeless); True when the refusal is over."""
        if len(refusal.received) < PDU_HEADER.size:
            return False
        pdu_type, length = PDU_HEADER.unpack_from(refusal.received)
        if length > MAX_ASSOCIATE_RQ:
            self._finish(refusal, f"first PDU of {length} bytes")
            return True
        if len(refusal.received) < PDU_HEADER.size + length:
            return False
        body = bytes(refusal.received[PDU_HEADER.size:PDU_HEADER.size + length])
        reply, outcome, detail = limit_refusal(pdu_type, body, self.settings)
        refusal.outcome, refusal.detail = outcome, detail
        try:
            refusal.conn.send(reply)  # a few bytes into an empty send buffer: never partial
            refusal.conn.shutdown(socket.SHUT_WR)  # (also ends TLS on this socket: no more
        except OSError as exc:                     #  records either way)
            refusal.detail = f"{detail}; reply not sent: {exc}"
            self._finish(refusal, refusal.detail)
            return True
        refusal.deadline = min(refusal.deadline, time.monotonic() + LINGER)
        self._drain(refusal)
        return True

    def _drain(self, refusal: _Refusal) -> None:
        """Read and drop what an answered client still sends; finish when it has closed."""
        try:
            while refusal.conn.recv(65536):
                pass
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            pass
        self._finish(refusal, refusal.detail)

    def _finish(self, refusal: _Refusal, detail: str, outcome: Outcome = Outcome.CLOSED) -> None:
        if refusal.outcome is not None:  # answered: closed now, whatever closed it
            outcome, detail = refusal.outcome, refusal.detail
        self._selector.unregister(refusal.conn)
        del self._pending[refusal.conn]
        refusal.conn.close()
        LOGGER.info("association from %s:%s outcome=%s (%s)", *refusal.peer, outcome, detail)
