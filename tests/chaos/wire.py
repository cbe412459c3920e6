"""A minimal DICOM upper-layer client, encoded by hand (PS3.8 §9.3, PS3.7 §9.3).

Written independently of wlmd's and pynetdicom's encoders so that a flood costs no threads and
an AE title can carry any bytes at all. Only what the chaos tests need: an A-ASSOCIATE-RQ with
one presentation context, C-ECHO and a universal C-FIND in implicit VR little endian, A-RELEASE.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

VERIFICATION = "1.2.840.10008.1.1"
MWL_FIND = "1.2.840.10008.5.1.4.31"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1234.6"  # test-only root

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF = 0x02, 0x03, 0x04
A_RELEASE_RP, A_ABORT = 0x06, 0x07
STATUS_PENDING = frozenset((0xFF00, 0xFF01))
RELEASE_RQ = struct.pack(">BBI", 0x05, 0, 4) + bytes(4)
CONTEXT_ID = 1


class PduError(Exception):
    """The peer sent something this client did not expect."""


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _ae(title: str | bytes) -> bytes:
    raw = title.encode("latin-1") if isinstance(title, str) else title
    return raw[:16].ljust(16, b" ")


def associate_rq(called: str | bytes, calling: str | bytes = "CHAOSSCU",
                 abstract: str = VERIFICATION, max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ proposing ``abstract`` in implicit VR little endian."""
    context = _item(0x20, bytes((CONTEXT_ID, 0, 0, 0))
                    + _item(0x30, abstract.encode()) + _item(0x40, IMPLICIT_LITTLE.encode()))
    user = _item(0x50, _item(0x51, struct.pack(">I", max_pdu))
                 + _item(0x52, IMPLEMENTATION_UID.encode()))
    body = (struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT.encode()) + context + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _element(group: int, elem: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, elem, len(value)) + value


def _command(sop_class: str, command_field: int, message_id: int, has_dataset: bool) -> bytes:
    body = (_element(0, 0x0002, sop_class.encode())
            + _element(0, 0x0100, struct.pack("<H", command_field))
            + _element(0, 0x0110, struct.pack("<H", message_id))
            + (_element(0, 0x0700, struct.pack("<H", 0)) if has_dataset else b"")
            + _element(0, 0x0800, struct.pack("<H", 0x0001 if has_dataset else 0x0101)))
    return _element(0, 0x0000, struct.pack("<I", len(body))) + body


def _p_data(payload: bytes, control: int) -> bytes:
    pdv = struct.pack(">IBB", len(payload) + 2, CONTEXT_ID, control) + payload
    return struct.pack(">BBI", P_DATA_TF, 0, len(pdv)) + pdv


def echo_rq(message_id: int = 1) -> bytes:
    """One P-DATA-TF holding a C-ECHO-RQ."""
    return _p_data(_command(VERIFICATION, 0x0030, message_id, False), 0x03)


def universal_find_rq(message_id: int = 1) -> bytes:
    """Two P-DATA-TFs: a C-FIND-RQ and an identifier asking for every entry's name and ID."""
    identifier = (struct.pack("<HHI", 0x0010, 0x0010, 0)  # (0010,0010) Patient's Name, empty
                  + struct.pack("<HHI", 0x0010, 0x0020, 0))  # (0010,0020) Patient ID, empty
    return (_p_data(_command(MWL_FIND, 0x0020, message_id, True), 0x03)
            + _p_data(identifier, 0x02))


def rj_reason(body: bytes) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ body."""
    return body[1], body[2], body[3]


def command_status(command: bytes) -> int:
    """The (0000,0900) Status of an implicit-VR command set."""
    offset = 0
    while offset + 8 <= len(command):
        group, elem, length = struct.unpack_from("<HHI", command, offset)
        if (group, elem) == (0, 0x0900):
            return struct.unpack_from("<H", command, offset + 8)[0]
        offset += 8 + length
    raise PduError("command set without a Status")


def pdvs(body: bytes) -> list[tuple[int, bytes]]:
    """(message control header, fragment) of each PDV item in a P-DATA-TF body."""
    items, offset = [], 0
    while offset + 6 <= len(body):
        length = struct.unpack_from(">I", body, offset)[0]
        items.append((body[offset + 5], body[offset + 6:offset + 4 + length]))
        offset += 4 + length
    return items


ReadExactly = Callable[[int], Awaitable[bytes]]


async def read_pdu(read: ReadExactly) -> tuple[int, bytes]:
    """(PDU type, body) of the next PDU."""
    header = await read(6)
    pdu_type, _, length = struct.unpack(">BBI", header)
    return pdu_type, await read(length)


async def read_statuses(read: ReadExactly) -> list[int]:
    """Every response Status of one DIMSE exchange, up to and including the final one."""
    statuses: list[int] = []
    command = b""
    for _ in range(100_000):  # bound: far more responses than any test worklist holds
        pdu_type, body = await read_pdu(read)
        if pdu_type != P_DATA_TF:
            raise PduError(f"PDU type {pdu_type:#x} instead of P-DATA-TF")
        for control, fragment in pdvs(body):
            if not control & 0x01:
                continue  # an identifier fragment
            command += fragment
            if control & 0x02:
                statuses.append(command_status(command))
                command = b""
                if statuses[-1] not in STATUS_PENDING:
                    return statuses
    raise PduError("no final response")


@dataclass
class Answer:
    """What the server answered an A-ASSOCIATE-RQ: its PDU type and, for RJ, the reason."""

    pdu_type: int | None  # None: closed without answering
    reason: tuple[int, int, int] | None = None


def request_association(host: str, port: int, called: str | bytes, timeout: float = 10.0,
                        source: str | None = None) -> Answer:
    """Send an A-ASSOCIATE-RQ on a blocking socket and report the answer (then abort)."""
    bind = (source, 0) if source else None
    with socket.create_connection((host, port), timeout=timeout, source_address=bind) as sock:
        sock.sendall(associate_rq(called))
        try:
            header = _recv_exactly(sock, 6)
            pdu_type, _, length = struct.unpack(">BBI", header)
            body = _recv_exactly(sock, length)
        except (EOFError, ConnectionResetError):
            return Answer(None)
        if pdu_type == A_ASSOCIATE_AC:
            sock.sendall(struct.pack(">BBI", A_ABORT, 0, 4) + bytes(4))
        return Answer(pdu_type, rj_reason(body) if pdu_type == A_ASSOCIATE_RJ else None)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data
