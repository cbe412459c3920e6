"""DICOM upper-layer PDUs (PS3.8 §9.3): reading them off a socket, parsing the A-ASSOCIATE-RQ and
encoding the PDUs an acceptor sends.

Hand-written with ``struct`` because every association passes through here: no per-PDU objects
beyond what the engine needs, and each encoded PDU is one ``bytes`` for one ``sendall``.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field

from wlmd import __version__

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1366.1"
IMPLEMENTATION_VERSION_NAME = f"WLMD_{__version__}"[:16]
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# PDU types
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))

# A-ABORT sources and provider reasons (PS3.8 §9.3.8)
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
REASON_NOT_SPECIFIED = 0
REASON_UNRECOGNIZED_PDU = 1
REASON_UNEXPECTED_PDU = 2
REASON_INVALID_PARAMETER = 6

# Presentation context results (PS3.8 §9.3.3.2)
PC_ACCEPTED = 0
PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PC_TRANSFER_SYNTAX_NOT_SUPPORTED = 4

MAX_ASSOCIATE_RQ = 64 * 1024  # an RQ larger than this is an attack, not a modality
PDU_HEADER = struct.Struct(">BxL")  # PDU type, reserved, length (PS3.8 §9.3.1)
_ITEM = struct.Struct(">BxH")


class PduError(Exception):
    """The peer sent something that is not a well-formed PDU; ``reason`` is the A-ABORT reason."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionClosed(Exception):
    """The peer closed the TCP connection (possibly in the middle of a PDU)."""


@dataclass(frozen=True)
class PresentationContextRQ:
    """One proposed presentation context: ID, abstract syntax and transfer syntaxes in order."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ the acceptor acts on."""

    called_ae: str
    calling_ae: str
    called_ae_raw: bytes
    calling_ae_raw: bytes
    application_context: str = ""
    contexts: list[PresentationContextRQ] = field(default_factory=list)
    max_pdu: int = 0  # 0 = unlimited
    implementation_class_uid: str = ""
    implementation_version_name: str = ""


def parse_ae(raw: bytes) -> str:
    """An AE title as DCMTK's parseAssociate reads it: cut at NUL, trailing spaces trimmed."""
    return raw[:16].split(b"\0", 1)[0].rstrip(b" ").decode("latin-1")


def _uid(raw: bytes) -> str:
    """A UID from a PDU item; peers pad with NUL or space although PS3.8 says not to."""
    return raw.rstrip(b"\0 ").decode("latin-1")


def _items(body: bytes | memoryview, start: int) -> list[tuple[int, bytes]]:
    """Split a run of ``type, reserved, length(2), value`` items; a short item is an error."""
    items = []
    pos, end = start, len(body)
    while pos < end:
        if end - pos < _ITEM.size:
            raise PduError("truncated item header")
        item_type, length = _ITEM.unpack_from(body, pos)
        pos += _ITEM.size
        if pos + length > end:
            raise PduError(f"item 0x{item_type:02x} runs past the end of its PDU")
        items.append((item_type, bytes(body[pos : pos + length])))
        pos += length
    return items


def _parse_context(value: bytes) -> PresentationContextRQ:
    """A presentation context item (0x20): ID, then abstract (0x30) and transfer (0x40) syntaxes."""
    if len(value) < 4:
        raise PduError("truncated presentation context item")
    abstract = ""
    syntaxes = []
    for sub_type, sub_value in _items(value, 4):
        if sub_type == 0x30:
            abstract = _uid(sub_value)
        elif sub_type == 0x40:
            syntaxes.append(_uid(sub_value))
    return PresentationContextRQ(value[0], abstract, tuple(syntaxes))


def _parse_user_info(value: bytes, request: AssociateRequest) -> None:
    """The user information item (0x50): max length, implementation class UID and version."""
    for sub_type, sub_value in _items(value, 0):
        if sub_type == 0x51:
            if len(sub_value) != 4:
                raise PduError("maximum length sub-item is not 4 bytes")
            request.max_pdu = struct.unpack(">L", sub_value)[0]
        elif sub_type == 0x52:
            request.implementation_class_uid = _uid(sub_value)
        elif sub_type == 0x55:
            request.implementation_version_name = sub_value.decode("latin-1").strip()


def parse_associate_rq(body: bytes) -> AssociateRequest:
    """Parse the body (after the 6-byte header) of an A-ASSOCIATE-RQ."""
    if len(body) < 68:
        raise PduError("A-ASSOCIATE-RQ shorter than its fixed fields")
    called_raw, calling_raw = body[4:20], body[20:36]
    request = AssociateRequest(parse_ae(called_raw), parse_ae(calling_raw), called_raw, calling_raw)
    for item_type, value in _items(body, 68):
        if item_type == 0x10:
            request.application_context = _uid(value)
        elif item_type == 0x20:
            request.contexts.append(_parse_context(value))
        elif item_type == 0x50:
            _parse_user_info(value, request)
    return request


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return PDU_HEADER.pack(pdu_type, len(body)) + body


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, len(value)) + value


@dataclass(frozen=True)
class PresentationContextAC:
    """The answer to one proposed context: result and the transfer syntax it carries."""

    context_id: int
    result: int
    transfer_syntax: str


def encode_associate_ac(
    request: AssociateRequest, contexts: list[PresentationContextAC], max_pdu: int
) -> bytes:
    """An A-ASSOCIATE-AC echoing the RQ's AE fields, as DCMTK does, with wlmd's identity."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    for ctx in contexts:
        ts = _item(0x40, ctx.transfer_syntax.encode())
        items.append(_item(0x21, bytes((ctx.context_id, 0, ctx.result, 0)) + ts))
    user = (
        _item(0x51, struct.pack(">L", max_pdu))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
        + _item(0x55, IMPLEMENTATION_VERSION_NAME.encode())
    )
    items.append(_item(0x50, user))
    fixed = (
        b"\x00\x01\x00\x00"
        + request.called_ae_raw.ljust(16, b" ")
        + request.calling_ae_raw.ljust(16, b" ")
        + bytes(32)
    )
    return _pdu(A_ASSOCIATE_AC, fixed + b"".join(items))


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ with result/source/diagnostic as in PS3.8 §9.3.4."""
    return _pdu(A_ASSOCIATE_RJ, bytes((0, result, source, reason)))


def encode_release_rp() -> bytes:
    """A-RELEASE-RP."""
    return _pdu(A_RELEASE_RP, bytes(4))


def encode_abort(source: int, reason: int) -> bytes:
    """A-ABORT from ``source`` (0 user, 2 provider) with ``reason`` (provider only, else 0)."""
    return _pdu(A_ABORT, bytes((0, 0, source, reason)))


class PduStream:
    """Reads whole PDUs from a blocking socket through one receive buffer.

    Buffering lets one ``recv`` deliver several small PDUs (a C-FIND command and its identifier)
    and lets ``has_data`` answer the cancel poll without a syscall when bytes are already here.
    """

    RECV_SIZE = 65536

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    def _fill(self, need: int, deadline: float | None) -> None:
        """Receive until at least ``need`` bytes are buffered or ``deadline`` (monotonic) passes."""
        while len(self._buf) < need:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out reading a PDU")
                self.sock.settimeout(remaining)
            chunk = self.sock.recv(max(self.RECV_SIZE, need - len(self._buf)))
            if not chunk:
                raise ConnectionClosed(
                    "peer closed the connection" + (" mid-PDU" if self._buf else "")
                )
            self._buf += chunk

    def read(self, limits: dict[int, int], timeout: float | None) -> tuple[int, bytes]:
        """The next PDU as (type, body); ``limits`` caps the body length per PDU type.

        Raises PduError for unknown types or bodies over their limit (before reading them),
        ConnectionClosed on EOF and TimeoutError when the whole PDU has not arrived within
        ``timeout`` seconds (None = wait forever), so a trickling peer cannot stretch it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is None and self.sock.gettimeout() is not None:
            self.sock.settimeout(None)
        self._fill(PDU_HEADER.size, deadline)
        pdu_type, length = PDU_HEADER.unpack_from(self._buf)
        if pdu_type not in KNOWN_PDU_TYPES:
            raise PduError(f"unknown PDU type 0x{pdu_type:02x}", REASON_UNRECOGNIZED_PDU)
        if length > limits.get(pdu_type, MAX_ASSOCIATE_RQ):
            raise PduError(f"PDU type 0x{pdu_type:02x} of {length} bytes is too large")
        end = PDU_HEADER.size + length
        self._fill(end, deadline)
        with memoryview(self._buf) as view:  # one copy, not two
            body = bytes(view[PDU_HEADER.size : end])
        del self._buf[:end]
        return pdu_type, body

    def has_data(self) -> bool:
        """True if a read would not block for its first byte (buffered, TLS-pending, in flight)."""
        if self._buf:
            return True
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        return bool(self._poller.poll(0))
