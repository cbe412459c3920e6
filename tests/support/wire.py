"""The one raw DICOM upper-layer client of the tests (PS3.8 §9.3, PS3.7 §9.3).

The fuzzer, the chaos flood and the unit tests must be able to say anything, including what no
real stack would send (any bytes in an AE title, wrapped lengths), at no cost in threads, so
every PDU is built from bytes here; only well-formed identifiers are written by pydicom. It shares
no code with ``wlmd.dicom`` so that a bug there cannot hide itself by being mirrored in the client.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
MWL = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"
ILE, ELE, EBE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"
CLIENT_UID = "1.2.826.0.1.3680043.10.1366.99"

# PDU types (PS3.8 §9.3)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07

# Command fields and dataset types (PS3.7 §9.3, §E.1)
C_FIND_RQ, C_ECHO_RQ, C_CANCEL_RQ = 0x0020, 0x0030, 0x0FFF
HAS_DATASET, NO_DATASET = 0x0001, 0x0101
STATUS_PENDING = frozenset((0xFF00, 0xFF01))

# The contexts every established fuzz association proposes: (id, abstract syntax, syntaxes).
STANDARD_CONTEXTS = ((1, MWL, (ELE,)), (3, MWL, (ILE,)), (5, VERIFICATION, (ILE,)))


def item(item_type: int, value: bytes) -> bytes:
    """A PDU item or sub-item: type, reserved, 16-bit length, value (the length wraps)."""
    return struct.pack(">BxH", item_type, len(value) & 0xFFFF) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    """A whole PDU: type, reserved, 32-bit length, body."""
    return struct.pack(">BxL", pdu_type, len(body)) + body


def ae_field(title: str | bytes) -> bytes:
    """A 16-byte AE field, space padded (longer titles are cut, as a stack would)."""
    raw = title.encode("latin-1") if isinstance(title, str) else title
    return raw[:16].ljust(16, b" ")


def rq_fixed(called: str | bytes = b"CT01", calling: str | bytes = b"FUZZSCU",
             version: int = 1) -> bytes:
    """The 68 fixed bytes of an A-ASSOCIATE-RQ body."""
    return struct.pack(">HH", version, 0) + ae_field(called) + ae_field(calling) + bytes(32)


def context_item(context_id: int, abstract: str, syntaxes: tuple[str, ...]) -> bytes:
    """A presentation context item (0x20) with its abstract and transfer syntax sub-items."""
    subs = item(0x30, abstract.encode()) + b"".join(item(0x40, ts.encode()) for ts in syntaxes)
    return item(0x20, bytes((context_id, 0, 0, 0)) + subs)


def user_info(max_pdu: int = 16384, extra: tuple[bytes, ...] = ()) -> bytes:
    """A user information item (0x50): max length, implementation UID and version, extras."""
    subs = (
        item(0x51, struct.pack(">L", max_pdu))
        + item(0x52, CLIENT_UID.encode())
        + item(0x55, b"WLMD_FUZZ")
        + b"".join(extra)
    )
    return item(0x50, subs)


def rq_items(contexts: tuple[tuple[int, str, tuple[str, ...]], ...] = STANDARD_CONTEXTS,
             max_pdu: int = 16384) -> list[bytes]:
    """The variable items of a well-formed A-ASSOCIATE-RQ, in order."""
    return [
        item(0x10, APP_CONTEXT.encode()),
        *(context_item(*ctx) for ctx in contexts),
        user_info(max_pdu),
    ]


def associate_rq(called: str | bytes = b"CT01", max_pdu: int = 16384,
                 contexts: tuple[tuple[int, str, tuple[str, ...]], ...] = STANDARD_CONTEXTS
                 ) -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing ``contexts``."""
    return pdu(ASSOCIATE_RQ, rq_fixed(called) + b"".join(rq_items(contexts, max_pdu)))


def single_context_rq(called: str | bytes, abstract: str = VERIFICATION) -> bytes:
    """An A-ASSOCIATE-RQ proposing ``abstract`` in implicit VR little endian as context 1."""
    return associate_rq(called, contexts=((1, abstract, (ILE,)),))


def release_rq() -> bytes:
    """An A-RELEASE-RQ PDU."""
    return pdu(RELEASE_RQ, bytes(4))


def abort() -> bytes:
    """An A-ABORT PDU (source: service user)."""
    return pdu(ABORT, bytes(4))


def pdv(context_id: int, is_command: bool, last: bool, data: bytes) -> bytes:
    """One presentation data value item."""
    header = (1 if is_command else 0) | (2 if last else 0)
    return struct.pack(">LBB", len(data) + 2, context_id, header) + data


def p_data(*pdvs: bytes) -> bytes:
    """A P-DATA-TF PDU holding the given PDV items."""
    return pdu(P_DATA, b"".join(pdvs))


def element(elem: int, value: bytes, group: int = 0) -> bytes:
    """An implicit VR little endian element as command sets use."""
    return struct.pack("<HHL", group, elem, len(value)) + value


def command_set(elements: list[bytes]) -> bytes:
    """A command set: the elements, preceded by their group length."""
    body = b"".join(elements)
    return element(0x0000, struct.pack("<L", len(body))) + body


def command_elements(field_: int, message_id: int = 1, dataset: int = HAS_DATASET,
                     sop_class: str = MWL, responded_to: int | None = None) -> list[bytes]:
    """The elements of a request command set, in tag order."""
    uid = sop_class.encode()
    elements = [element(0x0002, uid + b"\0" * (len(uid) % 2)),
                element(0x0100, struct.pack("<H", field_))]
    if responded_to is None:
        elements.append(element(0x0110, struct.pack("<H", message_id)))
    else:
        elements.append(element(0x0120, struct.pack("<H", responded_to)))
    if field_ == C_FIND_RQ:
        elements.append(element(0x0700, struct.pack("<H", 0)))
    elements.append(element(0x0800, struct.pack("<H", dataset)))
    return elements


def find_command(message_id: int = 1) -> bytes:
    """A well-formed C-FIND-RQ command set."""
    return command_set(command_elements(C_FIND_RQ, message_id))


def echo_rq(message_id: int = 1) -> bytes:
    """One P-DATA-TF holding a C-ECHO-RQ on context 1."""
    command = command_set(command_elements(C_ECHO_RQ, message_id, NO_DATASET, VERIFICATION))
    return p_data(pdv(1, True, True, command))


def universal_find_rq(message_id: int = 1) -> bytes:
    """Two P-DATA-TFs on context 1 (implicit VR): a C-FIND-RQ and an identifier asking for every
    entry's Patient's Name and Patient ID."""
    identifier = element(0x0010, b"", 0x0010) + element(0x0020, b"", 0x0010)
    return (p_data(pdv(1, True, True, find_command(message_id)))
            + p_data(pdv(1, False, True, identifier)))


def encode_identifier(ds: Dataset, implicit: bool = False) -> bytes:
    """An identifier in (explicit or implicit) VR little endian, written by pydicom."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def health_query() -> Dataset:
    """The correct query the campaign repeats: every CT01 entry's accession number."""
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    ds = Dataset()
    ds.AccessionNumber = ""
    ds.PatientName = ""
    ds.PatientID = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


class PduError(Exception):
    """The peer sent something this client did not expect."""


class Closed(Exception):
    """The server closed (or reset) the connection."""


@dataclass
class Received:
    """Everything the server sent on one connection, summarised for judging."""

    pdus: list[tuple[int, bytes]] = field(default_factory=list)
    closed: bool = False

    def kinds(self) -> list[int]:
        return [t for t, _ in self.pdus]


class Connection:
    """A blocking loopback connection that reads whole PDUs with a deadline."""

    def __init__(self, port: int, timeout: float = 3.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send bytes; False when the server has already closed or reset the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def _fill(self, need: int, deadline: float) -> None:
        while len(self.buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:  # reset by peer
                raise Closed(str(exc)) from exc
            if not chunk:
                raise Closed("eof")
            self.buf += chunk

    def read_pdu(self, timeout: float) -> tuple[int, bytes]:
        """The next PDU; TimeoutError if it is not complete within ``timeout``; Closed on EOF."""
        deadline = time.monotonic() + timeout
        self._fill(6, deadline)
        pdu_type, length = struct.unpack_from(">BxL", self.buf)
        self._fill(6 + length, deadline)
        body = bytes(self.buf[6 : 6 + length])
        del self.buf[: 6 + length]
        return pdu_type, body

    def collect(self, into: Received, quiet: float, limit: float) -> bool:
        """Read PDUs until the server closes (True) or is quiet for ``quiet`` s (False).

        ``limit`` bounds the whole call, so a server that streams forever cannot hold us.
        """
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                into.pdus.append(self.read_pdu(min(quiet, max(end - time.monotonic(), 0.01))))
            except Closed:
                into.closed = True
                return True
            except TimeoutError:
                return False
        return False


def parse_pdvs(body: bytes) -> list[tuple[int, int, bytes]]:
    """(context id, header, data) of each PDV in a P-DATA body sent by the server."""
    out, pos = [], 0
    while pos + 6 <= len(body):
        length, ctx, header = struct.unpack_from(">LBB", body, pos)
        out.append((ctx, header, body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    return out


def command_fields(data: bytes) -> dict[int, bytes]:
    """A command set sent by the server as {element: value}."""
    fields, pos = {}, 0
    while pos + 8 <= len(data):
        _, elem, length = struct.unpack_from("<HHL", data, pos)
        fields[elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return fields


@dataclass
class Message:
    """One DIMSE message from the server."""

    command: dict[int, bytes]
    dataset: bytes | None

    @property
    def status(self) -> int | None:
        raw = self.command.get(0x0900)
        return struct.unpack("<H", raw)[0] if raw and len(raw) == 2 else None


def messages(pdus: list[tuple[int, bytes]]) -> list[Message]:
    """Reassemble the DIMSE messages carried by the P-DATA PDUs in ``pdus``."""
    out: list[Message] = []
    command, data = b"", b""
    pending: dict[int, bytes] | None = None
    for pdu_type, body in pdus:
        if pdu_type != P_DATA:
            continue
        for _, header, value in parse_pdvs(body):
            if header & 1:
                command += value
                if header & 2:
                    fields, command = command_fields(command), b""
                    dataset_type = fields.get(0x0800, b"")
                    if dataset_type == struct.pack("<H", NO_DATASET):
                        out.append(Message(fields, None))
                    else:
                        pending = fields
            else:
                data += value
                if header & 2 and pending is not None:
                    out.append(Message(pending, data))
                    pending, data = None, b""
    return out


def accepted_syntax(ac_body: bytes, context_id: int) -> str | None:
    """The transfer syntax an A-ASSOCIATE-AC accepted for ``context_id`` (None if refused)."""
    pos = 68
    while pos + 4 <= len(ac_body):
        item_type, length = struct.unpack_from(">BxH", ac_body, pos)
        value = ac_body[pos + 4 : pos + 4 + length]
        if item_type == 0x21 and value[0] == context_id and value[2] == 0:
            return value[8:].rstrip(b"\0 ").decode("latin-1")
        pos += 4 + length
    return None


def decode_identifier(data: bytes, ts_uid: str) -> Dataset:
    """A response identifier in the negotiated syntax."""
    return read_dataset(BytesIO(data), ts_uid == ILE, True)


def rj_reason(body: bytes) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ body."""
    return body[1], body[2], body[3]


ReadExactly = Callable[[int], Awaitable[bytes]]


async def read_pdu(read: ReadExactly) -> tuple[int, bytes]:
    """(PDU type, body) of the next PDU, read with an asyncio stream's ``readexactly``."""
    pdu_type, length = struct.unpack(">BxL", await read(6))
    return pdu_type, await read(length)


async def read_statuses(read: ReadExactly) -> list[int]:
    """Every response Status of one DIMSE exchange, up to and including the final one."""
    statuses: list[int] = []
    command = b""
    for _ in range(100_000):  # bound: far more responses than any test worklist holds
        pdu_type, body = await read_pdu(read)
        if pdu_type != P_DATA:
            raise PduError(f"PDU type {pdu_type:#x} instead of P-DATA-TF")
        for _, header, fragment in parse_pdvs(body):
            if not header & 0x01:
                continue  # an identifier fragment
            command += fragment
            if header & 0x02:
                status = Message(command_fields(command), None).status
                if status is None:
                    raise PduError("command set without a Status")
                statuses.append(status)
                command = b""
                if status not in STATUS_PENDING:
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
        sock.sendall(single_context_rq(called))
        try:
            pdu_type, length = struct.unpack(">BxL", _recv_exactly(sock, 6))
            body = _recv_exactly(sock, length)
        except (EOFError, ConnectionResetError):
            return Answer(None)
        if pdu_type == ASSOCIATE_AC:
            sock.sendall(abort())
        return Answer(pdu_type, rj_reason(body) if pdu_type == ASSOCIATE_RJ else None)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data
