"""The MLLP listener of the HL7 child: python-hl7's asyncio MLLP server around ``Intake``.

Framing and its limits come from ``hl7.mllp`` (a block over the size limit raises, a block
without its start byte is refused); everything else is here: sender address allow-list, a cap
on connections, a per-connection rate limit (the reader waits: nothing is refused or lost), TLS.
Messages are applied one at a time in the event loop (each is a few fsyncs), so one process
owns the journal and a cancel can never overtake its order. On stop, connections waiting for
their next message are closed; a message that is not fully received is not applied and gets no
ACK, so its sender sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hl7.mllp import InvalidBlockError, start_hl7_server  # type: ignore[import-untyped]
from hl7.mllp.streams import (  # type: ignore[import-untyped]
    CARRIAGE_RETURN,
    END_BLOCK,
    START_BLOCK,
    HL7StreamReader,
)

from wlmd.config.settings import Settings
from wlmd.hl7.ack import Header, acknowledgement
from wlmd.hl7.intake import ApplicationRule, Intake
from wlmd.hl7.journal import Journal, journal_directory
from wlmd.hl7.mapping import Mapping, MappingError
from wlmd.hl7.message import DATA_TYPE_ERROR, Hl7Error
from wlmd.security.tls import TlsError, server_context

LOGGER = logging.getLogger("wlmd.hl7")
IDLE_TIMEOUT = 600.0  # a connection silent this long (mid-message or between) is closed
STOP_POLL = 0.1  # how often the loop looks at the stop event
TLS_HANDSHAKE_TIMEOUT = 30.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Hl7ConfigError(Exception):
    """The HL7 settings cannot be used (mapping file, allow-lists, TLS, journal)."""


@dataclass(frozen=True)
class Hl7Config:
    """Everything the child needs, checked in the supervisor."""

    root: Path
    mapping: Mapping
    journal: Path
    senders: tuple[Network, ...]
    applications: tuple[ApplicationRule, ...]
    max_bytes: int
    max_rate: float
    max_connections: int
    tls: ssl.SSLContext | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Hl7Config:
        try:
            mapping = Mapping.load(settings.hl7_mapping)
            senders = tuple(ipaddress.ip_network(item.strip(), strict=False)
                            for item in (settings.hl7_allow_senders or "").split(",")
                            if item.strip())
            tls = server_context(settings) if settings.hl7_tls else None
        except (MappingError, ValueError, TlsError) as exc:
            raise Hl7ConfigError(str(exc)) from None
        if settings.hl7_tls and tls is None:
            raise Hl7ConfigError("--hl7-tls needs --tls-key and --tls-cert")
        journal = journal_directory(settings)
        try:
            journal.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise Hl7ConfigError(f"journal directory {journal}: {exc.strerror}") from None
        return cls(settings.data_files_path, mapping, journal, senders,
                   ApplicationRule.parse_list(settings.hl7_allow_applications),
                   settings.hl7_max_message_bytes, settings.hl7_max_rate,
                   settings.hl7_max_connections, tls)


class Hl7Service:
    """The ``hl7`` service of ``wlmd.daemon.services``."""

    name = "hl7"
    reads_worklist = False  # it only writes, through the writer
    processes = 1
    niceness = 0  # one RIS connection, each order waiting for its ACK: as urgent as a query

    def __init__(self, sockets: list[socket.socket], settings: Settings) -> None:
        self.sockets = sockets
        self.config = Hl7Config.from_settings(settings)

    def configure(self, settings: Settings) -> None:
        self.config = Hl7Config.from_settings(settings)

    def serve(self, stop: threading.Event) -> None:
        asyncio.run(Hl7Server(self.config, self.sockets).run(stop))


class Hl7Server:
    """One run of the listener: journal recovery, then MLLP until stopped."""

    def __init__(self, config: Hl7Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.connections: set[asyncio.Task[None]] = set()

    async def run(self, stop: threading.Event) -> None:
        journal = Journal(self.config.journal)
        try:
            self.intake = Intake(self.config.root, self.config.mapping, journal,
                                 self.config.applications)
            self.intake.recover()
            servers = [await start_hl7_server(
                self._connected, sock=sock.dup(), ssl=self.config.tls,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self.config.tls else None,
                limit=self.config.max_bytes) for sock in self.sockets]
            LOGGER.info("HL7 intake listening on %s", ", ".join(
                _address(sock) for sock in self.sockets))
            while not stop.is_set():
                await asyncio.sleep(STOP_POLL)
            for server in servers:
                server.close()
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)
        finally:
            journal.close()

    async def _connected(self, reader: HL7StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        if not self._admitted(peer[0]):
            writer.close()
            return
        self.connections.add(task)
        try:
            await self._serve(reader, writer, peer[0])
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            LOGGER.info("HL7 connection from %s ended: %s", peer[0], exc)
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _admitted(self, host: str) -> bool:
        if self.config.senders:
            address = ipaddress.ip_address(host.split("%")[0])
            if not any(address in network for network in self.config.senders):
                LOGGER.warning("HL7 connection from %s refused: not an allowed sender", host)
                return False
        if len(self.connections) >= self.config.max_connections:
            LOGGER.warning("HL7 connection from %s refused: %d connections open", host,
                           len(self.connections))
            return False
        return True

    async def _serve(self, reader: HL7StreamReader, writer: asyncio.StreamWriter,
                     host: str) -> None:
        interval = 1.0 / self.config.max_rate if self.config.max_rate > 0 else 0.0
        next_slot = 0.0
        while True:
            try:
                block = await asyncio.wait_for(reader.readblock(), IDLE_TIMEOUT)
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    LOGGER.info("HL7 sender %s closed mid-message: nothing applied", host)
                return
            except TimeoutError:
                LOGGER.info("HL7 connection from %s idle for %gs, closing", host, IDLE_TIMEOUT)
                return
            except InvalidBlockError:
                self._refuse(writer, "MLLP block without its start byte <VT>")
                continue
            except ValueError:  # over the size limit: the rest of the stream is unframed
                self._refuse(writer, f"message over {self.config.max_bytes} bytes")
                await writer.drain()
                return
            if interval:
                now = time.monotonic()
                if next_slot > now:
                    await asyncio.sleep(next_slot - now)
                next_slot = max(now, next_slot) + interval
            result = self.intake.handle(bytes(block), host)
            replies = [r for r in (result.reply, result.application_ack) if r is not None]
            for reply in replies:
                _write_block(writer, reply)
            if replies:
                await writer.drain()

    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        LOGGER.info("HL7 message refused: %s", reason)
        error = Hl7Error(reason, location="MSH-1", code=DATA_TYPE_ERROR, ack="AR")
        reply = acknowledgement(Header.of(b""), "AR", error, "ascii")
        if reply is not None:
            _write_block(writer, reply)


def _write_block(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(START_BLOCK + data + END_BLOCK + CARRIAGE_RETURN)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
