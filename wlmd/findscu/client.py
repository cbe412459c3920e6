"""One findscu run: associate, send each query (``--repeat`` times), then release or abort.

Built on pynetdicom's SCU. Two pynetdicom events give what DCMTK's output needs and the
high-level API hides: ``EVT_PDU_RECV`` (the A-ASSOCIATE-RJ reason codes; taken as the PDU
arrives, because a reject that arrives very fast is otherwise reported as a failed connection)
and
``EVT_DIMSE_RECV`` (each response identifier's bytes exactly as received, for dumps and
``rsp0001.dcm`` files).
"""

from __future__ import annotations

import logging
import socket
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, DimsePrimitiveType
from pynetdicom.dsutils import encode
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from wlmd.dicom.dump import dump_dataset
from wlmd.dicom.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from wlmd.findscu.output import Received

LOG = logging.getLogger(__name__)
# pynetdicom would decode every response identifier to log it (and pydicom would warn on
# stderr about bytes it cannot decode); findscu prints its own DCMTK-style dumps instead.
_config.LOG_RESPONSE_IDENTIFIERS = False

EXIT_OK = 0
EXIT_ASSOCIATION = 2  # DCMTK findscu: no connection, or the association was rejected

_STATUS_TEXT = {
    0x0000: "Success",
    0xFF00: "Pending",
    0xFF01: "Pending: WarningUnsupportedOptionalKeys",
    0xFE00: "Cancel: MatchingTerminatedDueToCancelRequest",
    0xA700: "Refused: OutOfResources",
    0x0122: "Refused: SOPClassNotSupported",
    0xA900: "Error: DataSetDoesNotMatchSOPClass",
}
_RESULT = {1: "Rejected Permanent", 2: "Rejected Transient"}
_SOURCE = {1: "Service User", 2: "Service Provider (ACSE Related Function)",
           3: "Service Provider (Presentation Related Function)"}
_REASON = {
    (1, 1): "No Reason", (1, 2): "App Context Name Not Supported",
    (1, 3): "Calling AE Title Not Recognized", (1, 7): "Called AE Title Not Recognized",
    (2, 1): "No Reason", (2, 2): "Protocol Version Not Supported",
    (3, 1): "Temporary Congestion", (3, 2): "Local Limit Exceeded",
}


def status_text(status: int) -> str:
    """DCMTK's wording for a C-FIND status (``DU_cfindStatusString``)."""
    if status in _STATUS_TEXT:
        return _STATUS_TEXT[status]
    if status & 0xF000 == 0xC000:
        return "Failed: UnableToProcess"
    return f"Unknown Status: 0x{status:x}"


# Builds one identifier at send time: (dataset, its transfer syntax, made from -k only).
QueryBuilder = Callable[[], tuple[Dataset, str, bool]]


class QueryFailed(Exception):
    """A query that could not be sent or answered: logged as ``Find SCU Failed: ...``."""


@dataclass(frozen=True)
class Peer:
    """Where to connect and how to negotiate."""

    host: str
    port: int
    calling_ae: str
    called_ae: str
    abstract_syntax: str
    transfer_syntaxes: Sequence[str]
    max_pdu: int
    acse_timeout: float | None
    dimse_timeout: float | None
    connect_timeout: float | None
    socket_timeout: float | None
    ssl_context: ssl.SSLContext | None = None
    server_name: str | None = None
    compression_level: int = 6  # +cl: zlib level of deflated identifiers we send


@dataclass(frozen=True)
class Plan:
    """What to do once associated."""

    queries: Sequence[QueryBuilder]
    repeat: int = 1
    abort: bool = False
    cancel_after: int | None = None


class Client:
    """Runs one association as DCMTK's findscu does and reports each response to a callback."""

    def __init__(self, peer: Peer, on_response: Callable[[Received, int], None],
                 on_associated: Callable[[], None] = lambda: None) -> None:
        self.peer = peer
        self.on_response = on_response
        self.on_associated = on_associated
        self.counter = 0  # DCMTK numbers responses across the run, finals included
        self._raw: deque[tuple[bytes, int]] = deque()
        self._reject: A_ASSOCIATE | None = None
        self._msg_id = 0
        self._accepted = False
        self._sent: dict[int, Dataset] = {}

    def run(self, plan: Plan) -> int:
        """Associate, run the plan, release or abort; the process exit code."""
        if not self._resolves():
            return EXIT_ASSOCIATION
        LOG.info("Requesting Association")
        assoc = self._associate()
        if assoc is None:
            return EXIT_ASSOCIATION
        failed = False
        try:
            self.on_associated()
            for _ in range(plan.repeat):
                for index, build in enumerate(plan.queries):
                    self._query(assoc, index, build, plan.cancel_after)
        except QueryFailed as exc:
            LOG.error("Find SCU Failed: %s", exc)
            failed = True
        if (plan.abort or failed) and assoc.is_established:
            LOG.info("Aborting Association")
            assoc.abort()
        elif assoc.is_established:
            LOG.info("Releasing Association")
            assoc.release()
        return EXIT_OK

    def _resolves(self) -> bool:
        try:
            socket.getaddrinfo(self.peer.host, self.peer.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            LOG.error("Association Request Failed: 0006:0320 Attempt to connect to unknown"
                      " host: %s", self.peer.host)
            return False
        return True

    def _associate(self) -> Association | None:
        peer = self.peer
        ae = AE(ae_title=peer.calling_ae)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.acse_timeout = peer.acse_timeout
        ae.dimse_timeout = peer.dimse_timeout
        ae.connection_timeout = peer.connect_timeout
        ae.network_timeout = peer.socket_timeout
        ae.add_requested_context(peer.abstract_syntax, list(peer.transfer_syntaxes))
        handlers: list[EventHandlerType] = [(evt.EVT_PDU_RECV, self._on_pdu),
                                            (evt.EVT_DIMSE_RECV, self._on_dimse)]
        tls = (peer.ssl_context, peer.server_name) if peer.ssl_context else None
        capture = _ConnectErrorCapture()
        transport = logging.getLogger("pynetdicom.transport")
        saved_level = transport.level
        transport.addHandler(capture)
        transport.setLevel(min(logging.ERROR, transport.getEffectiveLevel()))
        try:
            assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_ae,
                                 max_pdu=peer.max_pdu, evt_handlers=handlers,
                                 tls_args=tls)  # type: ignore[arg-type]
        finally:
            transport.removeHandler(capture)
            transport.setLevel(saved_level)
        if assoc.is_established:
            if assoc.accepted_contexts and \
                    assoc.accepted_contexts[0].transfer_syntax[0] == DeflatedExplicitVRLittleEndian:
                deflate_identifiers_at(assoc, peer.compression_level)
            max_send = assoc.acceptor.maximum_length
            LOG.info("Association Accepted (Max Send PDV: %s)", max_send - 12 if max_send else 0)
            return assoc
        self._report_failure(assoc, capture.text)
        return None

    def _report_failure(self, assoc: Association, connect_error: str) -> None:
        rj = self._reject
        if rj is not None:
            source = int(rj.result_source or 0)
            LOG.error("Association Rejected:\nResult: %s, Source: %s\nReason: %s",
                      _RESULT.get(int(rj.result or 0), "Unknown"),
                      _SOURCE.get(source, "Unknown"),
                      _REASON.get((source, int(rj.diagnostic or 0)), "Unknown"))
        elif connect_error:
            LOG.error("Association Request Failed: 0006:031c TCP Initialization Error: %s",
                      connect_error)
        elif self._accepted and not assoc.accepted_contexts:
            LOG.error("No Acceptable Presentation Contexts")
        else:
            LOG.error("Association Request Failed: 0006:0317 Peer aborted Association"
                      " (or never connected)")

    def _on_pdu(self, event: evt.Event) -> None:
        pdu = event.pdu
        if isinstance(pdu, A_ASSOCIATE_RJ):
            self._reject = pdu.to_primitive()
        elif isinstance(pdu, A_ASSOCIATE_AC):
            self._accepted = True

    def _on_dimse(self, event: evt.Event) -> None:
        message = event.message
        data = message.data_set.getvalue() if message.data_set is not None else b""
        self._raw.append((data, int(message.context_id or 0)))

    def _query(self, assoc: Association, index: int, build: QueryBuilder,
               cancel_after: int | None) -> None:
        context = assoc.accepted_contexts[0]
        ts = str(context.transfer_syntax[0])
        if index in self._sent:  # --repeat: DCMTK re-sends its (now padded) encoded dataset
            identifier, request_ts, built = self._sent[index], ts, False
        else:
            identifier, request_ts, built = build()
            encoded = encode(identifier, ts == ImplicitVRLittleEndian,
                             ts != ExplicitVRBigEndian, ts == DeflatedExplicitVRLittleEndian)
            self._sent[index] = decode_identifier(encoded or b"", ts)
        self._msg_id += 1
        msg_id = self._msg_id
        LOG.info("Sending Find Request (MsgID %d)", msg_id)
        lines = dump_dataset(identifier, request_ts, built=built)
        LOG.info("Request Identifiers:\n\n%s\n", "\n".join(lines))
        self._raw.clear()
        responses = assoc.send_c_find(identifier, self.peer.abstract_syntax, msg_id)
        for received, (status, response) in enumerate(responses):
            if "Status" not in status:
                raise QueryFailed("0006:0207 DIMSE No data available (timeout in non-blocking"
                                  " mode)" if assoc.is_established else
                                  "0006:020e DIMSE Failed to receive message")
            raw, _ = self._raw.popleft() if self._raw else (b"", 0)
            self.counter += 1
            code = int(status.Status)
            if code not in (0xFF00, 0xFF01):
                LOG.info("Received Final Find Response (%s)", status_text(code))
                return
            match = decode_identifier(raw, ts) if raw else response or Dataset()
            self.on_response(Received(self.counter, match, raw, ts), code)
            if cancel_after is not None and received + 1 == cancel_after:
                LOG.info("Sending Cancel Request (MsgID %d, PresID %d)", msg_id,
                         context.context_id)
                assoc.send_c_cancel(msg_id, context.context_id)


def deflate_identifiers_at(assoc: Association, level: int) -> None:
    """Send each C-FIND identifier deflated at zlib ``level`` (findscu's ``+cl``).

    pynetdicom's ``dsutils.encode`` always deflates at zlib's default level and has no setting
    for it, so the identifier it built is inflated and deflated again just before it leaves,
    by wrapping this association's public ``dimse.send_msg``.
    """
    send_msg = assoc.dimse.send_msg

    def send_at_level(primitive: DimsePrimitiveType, context_id: int) -> None:
        identifier = getattr(primitive, "Identifier", None)
        if isinstance(primitive, C_FIND) and identifier is not None:
            raw = zlib.decompressobj(-zlib.MAX_WBITS).decompress(identifier.getvalue())
            primitive.Identifier = BytesIO(deflate(raw, level))
        send_msg(primitive, context_id)

    assoc.dimse.send_msg = send_at_level  # type: ignore[method-assign]


def deflate(data: bytes, level: int) -> bytes:
    """Raw deflate (no zlib header), padded to an even length as pynetdicom pads it."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(data) + compressor.flush()
    return out + b"\x00" if len(out) % 2 else out


def decode_identifier(raw: bytes, transfer_syntax: str) -> Dataset:
    """The identifier as received, its elements left raw so padding and lengths survive."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        raw = zlib.decompress(raw, -zlib.MAX_WBITS)
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    return read_dataset(BytesIO(raw), implicit, little)


class _ConnectErrorCapture(logging.Handler):
    """Keeps the OS error text pynetdicom logs when the TCP connection fails."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        prefix = "TCP Initialisation Error: "
        if message.startswith(prefix):
            text = message[len(prefix):]
            self.text = text.split("] ", 1)[1] if text.startswith("[Errno") else text
