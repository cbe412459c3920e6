"""One DICOM association, from the A-ASSOCIATE-RQ to the closed socket, in the calling thread.

Why not pynetdicom's Association: it runs two threads per association that poll with 1 ms sleeps,
and it cannot reproduce wlmscpfs's reject order, cancel polling and timeouts. This engine uses
blocking socket I/O only: it waits in ``recv`` and polls (with a zero timeout) only where
wlmscpfs does, for a C-CANCEL-RQ before each C-FIND response. Each response (command plus
identifier PDUs) goes out in one ``sendall`` on a TCP_NODELAY socket.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator

from pydicom import Dataset

from wlmd.config.settings import Settings, TransferSyntaxPreference
from wlmd.dicom import dimse, pdu
from wlmd.dicom.dimse import (
    DEFLATED_LITTLE,
    EXPLICIT_BIG,
    EXPLICIT_LITTLE,
    IMPLICIT_LITTLE,
    DimseError,
    Pdv,
)
from wlmd.dicom.rawfile import ElementReader, NotRaw
from wlmd.dicom.types import (
    STATUS_CANCEL,
    STATUS_NO_SUCH_INSTANCE,
    STATUS_PENDING,
    STATUS_PENDING_WARNING,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_SUCCESS,
    AssociationInfo,
    AssociationReport,
    FindResponse,
    NResponse,
    Outcome,
    ProcedureStepApplication,
    ReceivedDataSet,
    UndecodableIdentifier,
    WorklistApplication,
)

LOG = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
MWL_FIND = "1.2.840.10008.5.1.4.31"
PRIORITY = 0x00000700
PDV_OVERHEAD = 12  # P-DATA-TF header and PDV item header: a PDV's value is this much shorter
_PRIORITY_NAMES = {0: "medium", 1: "high", 2: "low"}
_SOP_CLASS_NAMES = {MWL_FIND: "FINDModalityWorklistInformationModel"}
SUPPORTED_ABSTRACT_SYNTAXES = frozenset((VERIFICATION, MWL_FIND))

_LITTLE_FIRST = (EXPLICIT_LITTLE, EXPLICIT_BIG)
_LOCAL_EXPLICIT = _LITTLE_FIRST if sys.byteorder == "little" else _LITTLE_FIRST[::-1]
TRANSFER_SYNTAX_PREFERENCES: dict[TransferSyntaxPreference, tuple[str, ...]] = {
    TransferSyntaxPreference.UNCOMPRESSED: (*_LOCAL_EXPLICIT, IMPLICIT_LITTLE),
    TransferSyntaxPreference.LITTLE: (EXPLICIT_LITTLE, EXPLICIT_BIG, IMPLICIT_LITTLE),
    TransferSyntaxPreference.BIG: (EXPLICIT_BIG, EXPLICIT_LITTLE, IMPLICIT_LITTLE),
    TransferSyntaxPreference.DEFLATED: (
        DEFLATED_LITTLE,
        EXPLICIT_LITTLE,
        EXPLICIT_BIG,
        IMPLICIT_LITTLE,
    ),
    TransferSyntaxPreference.IMPLICIT: (IMPLICIT_LITTLE,),
}

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 §9.3.4
RJ_NO_REASON = (1, 1, 1)
RJ_CONTEXT_NAME = (2, 1, 2)
RJ_LOCAL_LIMIT = (2, 3, 2)
RJ_CALLING_AE = (1, 1, 3)
RJ_CALLED_AE = (1, 1, 7)

MAX_COMMAND_BYTES = 64 * 1024
_PENDING = frozenset((STATUS_PENDING, STATUS_PENDING_WARNING))


class _Stop(Exception):
    """Ends the association: ``reply`` (a PDU, if any) is sent, then the socket is closed."""

    def __init__(self, outcome: Outcome, detail: str, reply: bytes = b"") -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.reply = reply


def _abort(detail: str, source: int = pdu.ABORT_SOURCE_USER, reason: int = 0) -> _Stop:
    """An A-ABORT; (0,0) is what wlmscpfs's ASC_abortAssociation sends on DIMSE errors."""
    return _Stop(Outcome.ABORTED, detail, pdu.encode_abort(source, reason))


def negotiate_contexts(
    request: pdu.AssociateRequest,
    preference: TransferSyntaxPreference,
    supported: frozenset[str] = SUPPORTED_ABSTRACT_SYNTAXES,
) -> list[pdu.PresentationContextAC]:
    """Accept each proposed context by server transfer syntax preference (docs/compat.md §7.2)."""
    order = TRANSFER_SYNTAX_PREFERENCES[preference]
    results = []
    for ctx in request.contexts:
        if ctx.abstract_syntax not in supported:
            result, ts = pdu.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, IMPLICIT_LITTLE
        else:
            ts = next((t for t in order if t in ctx.transfer_syntaxes), "")
            result = pdu.PC_ACCEPTED if ts else pdu.PC_TRANSFER_SYNTAX_NOT_SUPPORTED
            ts = ts or IMPLICIT_LITTLE
        results.append(pdu.PresentationContextAC(ctx.context_id, result, ts))
    return results


CACHED_REQUEST_BYTES = 4096  # A-ASSOCIATE-RQs up to this size are negotiated once per worker


def _negotiate(body: bytes, preference: TransferSyntaxPreference, supported: frozenset[str],
               max_pdu: int
               ) -> tuple[pdu.AssociateRequest, tuple[pdu.PresentationContextAC, ...], bytes]:
    """The request, the answer to each proposed context, and the A-ASSOCIATE-AC carrying them
    (sent only if no reject applies)."""
    request = pdu.parse_associate_rq(body)
    answers = negotiate_contexts(request, preference, supported)
    return request, tuple(answers), pdu.encode_associate_ac(request, answers, max_pdu)


# A modality sends the same A-ASSOCIATE-RQ, byte for byte, every time: its negotiation is
# kept (the request is shared: read only); a large one is not, so that the cache stays small.
_negotiate_cached = functools.lru_cache(maxsize=64)(_negotiate)


class _Association:
    """State of one association; ``run`` drives it and raises _Stop to end it."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        settings: Settings,
        app: WorklistApplication,
        on_request: Callable[[AssociationInfo], None] | None = None,
    ) -> None:
        self.sock = sock
        self.on_request = on_request
        self.peer = peer
        self.settings = settings
        self.app = app
        self.stream = pdu.PduStream(sock)
        self.report = AssociationReport(outcome=Outcome.ERROR)
        self.info = AssociationInfo(peer[0], peer[1], "", "")
        self.contexts: dict[int, str] = {}  # accepted context ID -> transfer syntax UID
        self.abstract_syntaxes: dict[int, str] = {}  # accepted context ID -> SOP class UID
        self.steps: ProcedureStepApplication | None = app.procedure_steps()
        self.peer_max_pdu = 0
        self.acknowledged = False  # the A-ASSOCIATE-AC was sent
        self.pdvs: deque[Pdv] = deque()
        self.limits = {pdu.P_DATA_TF: settings.max_pdu}

    # --- establishment ----------------------------------------------------------------------

    def establish(self) -> None:
        """Read the A-ASSOCIATE-RQ within the ACSE timeout and answer with AC, RJ or silence."""
        try:
            pdu_type, body = self.stream.read({}, self.settings.acse_timeout)
        except TimeoutError as exc:
            raise _Stop(Outcome.TIMEOUT, "no A-ASSOCIATE-RQ within the ACSE timeout") from exc
        if pdu_type == pdu.A_ABORT:
            raise _Stop(Outcome.ABORTED, "peer aborted before associating")
        if pdu_type != pdu.A_ASSOCIATE_RQ:
            raise _abort(
                f"PDU type 0x{pdu_type:02x} instead of A-ASSOCIATE-RQ",
                pdu.ABORT_SOURCE_PROVIDER,
                pdu.REASON_UNEXPECTED_PDU,
            )
        supported = SUPPORTED_ABSTRACT_SYNTAXES
        if self.steps is not None:
            supported = supported | {self.steps.sop_class_uid}
        negotiate = _negotiate_cached if len(body) <= CACHED_REQUEST_BYTES else _negotiate
        request, answers, accept = negotiate(body, self.settings.transfer_syntax, supported,
                                             self.settings.max_pdu)
        self.report.calling_ae, self.report.called_ae = request.calling_ae, request.called_ae
        self.info = AssociationInfo(
            self.peer[0],
            self.peer[1],
            request.calling_ae,
            request.called_ae,
            request.implementation_class_uid,
            request.implementation_version_name,
        )
        LOG.info("Association Received (%s:%s -> %s)", self.peer[0], request.calling_ae,
                 request.called_ae)  # wlmscpfs names the peer host; wlmd its address
        if self.on_request is not None:
            self.on_request(self.info)
        LOG.debug(
            "A-ASSOCIATE-RQ from %s: implementation %s %s, max PDU %d, %d context(s)",
            self.peer[0],
            request.implementation_class_uid,
            request.implementation_version_name,
            request.max_pdu,
            len(request.contexts),
        )
        self._check_rejects(request)
        self.contexts = {a.context_id: a.transfer_syntax for a in answers if a.result == 0}
        self.abstract_syntaxes = {
            ctx.context_id: ctx.abstract_syntax
            for ctx in request.contexts
            if ctx.context_id in self.contexts
        }
        if not self.contexts:
            raise _Stop(Outcome.REJECTED, "no presentation context accepted", _rj(RJ_NO_REASON))
        self.peer_max_pdu = request.max_pdu
        self.sock.sendall(accept)
        self.acknowledged = True
        LOG.info("Association Acknowledged (Max Send PDV: %d)",
                 (request.max_pdu or self.settings.max_pdu) - PDV_OVERHEAD)

    def _check_rejects(self, request: pdu.AssociateRequest) -> None:
        """The reject order of wlmscpfs (docs/compat.md §7.1): steps 1-3, then (past the
        association limit, which the supervisor enforces with ``limit_refusal``) steps 5-6;
        between 5 and 6, the application's verdict on the calling AE (1/1/3, only with a
        per-peer policy)."""
        if (stop := _reject_before_limit(request, self.settings)) is not None:
            raise stop
        if not self.app.knows_called_ae(request.called_ae):
            detail = f"unknown called AE title {request.called_ae!r}"
            raise _Stop(Outcome.REJECTED, detail, _rj(RJ_CALLED_AE))
        admission = self.app.admit(request.called_ae, request.calling_ae)
        self.report.policy = admission.policy
        if not admission.allowed:
            detail = (f"calling AE title {request.calling_ae!r} not allowed by policy "
                      f"{admission.policy!r}")
            raise _Stop(Outcome.REJECTED, detail, _rj(RJ_CALLING_AE))
        if not request.contexts:
            raise _Stop(Outcome.CLOSED, "no presentation contexts proposed")

    # --- receiving ----------------------------------------------------------------------------

    def _next_pdv(self, timeout: float | None) -> Pdv:
        """The next PDV, reading P-DATA PDUs as needed; release and abort end the association."""
        while not self.pdvs:
            pdu_type, body = self.stream.read(self.limits, timeout)
            if pdu_type == pdu.P_DATA_TF:
                try:
                    self.pdvs.extend(dimse.parse_pdata(body))
                except DimseError as exc:
                    raise _abort(
                        str(exc), pdu.ABORT_SOURCE_PROVIDER, pdu.REASON_INVALID_PARAMETER
                    ) from exc
            elif pdu_type == pdu.A_RELEASE_RQ:
                raise _Stop(Outcome.RELEASED, "", pdu.encode_release_rp())
            elif pdu_type == pdu.A_ABORT:
                raise _Stop(Outcome.ABORTED, "peer aborted the association")
            else:
                raise _abort(
                    f"unexpected PDU type 0x{pdu_type:02x}",
                    pdu.ABORT_SOURCE_PROVIDER,
                    pdu.REASON_UNEXPECTED_PDU,
                )
        pdv = self.pdvs.popleft()
        if pdv.context_id not in self.contexts:
            raise _abort(
                f"PDV on presentation context {pdv.context_id}, which was not accepted",
                pdu.ABORT_SOURCE_PROVIDER,
                pdu.REASON_INVALID_PARAMETER,
            )
        return pdv

    def _reassemble(self, command: bool, timeout: float | None, limit: int) -> tuple[int, bytes]:
        """Collect the fragments of one command set or data set: (context ID, bytes)."""
        parts: list[bytes] = []
        size = 0
        context_id = -1
        while True:
            pdv = self._next_pdv(timeout)
            if pdv.is_command != command or context_id not in (-1, pdv.context_id):
                raise _abort("P-DATA fragments out of order")
            context_id = pdv.context_id
            size += len(pdv.data)
            if size > limit:
                raise _abort(f"message part exceeds {limit} bytes")
            parts.append(pdv.data)
            if pdv.is_last:
                return context_id, b"".join(parts)

    def _receive_command(
        self, timeout: float | None, what: str = "idle timeout"
    ) -> tuple[int, dict[int, bytes]]:
        try:
            context_id, data = self._reassemble(True, timeout, MAX_COMMAND_BYTES)
            return context_id, dimse.decode_command(data)
        except TimeoutError as exc:
            raise _Stop(Outcome.TIMEOUT, what, _abort_bytes()) from exc
        except DimseError as exc:
            raise _abort(str(exc)) from exc

    # --- services -----------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer commands until the peer releases or aborts."""
        while True:
            context_id, command = self._receive_command(self.settings.idle_timeout)
            field = dimse.command_us(command, dimse.COMMAND_FIELD)
            has_dataset = dimse.command_us(command, dimse.COMMAND_DATASET_TYPE) != dimse.NO_DATASET
            if field == dimse.C_ECHO_RQ:
                self._echo(context_id, command)
            elif field == dimse.C_FIND_RQ and has_dataset:
                self._find(context_id, command)
            elif field in (dimse.N_CREATE_RQ, dimse.N_SET_RQ) and self.steps is not None:
                self._procedure_step(context_id, command, field, has_dataset, self.steps)
            elif field == dimse.C_CANCEL_RQ:
                LOG.warning("C-CANCEL-RQ received while no C-FIND is running, ignored")
            else:
                raise _abort(f"unsupported command 0x{field or 0:04x} (dataset: {has_dataset})")

    def _echo(self, context_id: int, command: dict[int, bytes]) -> None:
        LOG.debug("C-ECHO-RQ on context %d", context_id)
        rsp = dimse.echo_response_command(
            dimse.command_ui(command, dimse.AFFECTED_SOP_CLASS_UID),
            dimse.command_us(command, dimse.MESSAGE_ID) or 0,
        )
        self.sock.sendall(dimse.encode_pdata(context_id, True, rsp, self.peer_max_pdu))

    def _receive_dataset(self, ts_uid: str, what: str) -> tuple[bytes, Dataset]:
        """The data set that follows a command (DIMSE timeout), as received and decoded;
        undecodable ones abort."""
        data = self._receive_bytes(what)
        return data, self._decode(data, ts_uid, what)

    def _receive_bytes(self, what: str) -> bytes:
        """The bytes of the data set that follows a command (DIMSE timeout)."""
        try:
            return self._reassemble(
                False, self.settings.dimse_timeout, self.settings.max_identifier_bytes
            )[1]
        except TimeoutError as exc:
            detail = f"DIMSE timeout receiving the {what}"
            raise _Stop(Outcome.TIMEOUT, detail, _abort_bytes()) from exc

    def _receive_step(self, ts_uid: str, what: str) -> ReceivedDataSet:
        """An N-CREATE/N-SET data set. One in explicit VR little endian that reads strictly
        (so pydicom reads it too) is decoded only if the application asks; any other now,
        and an undecodable one aborts."""
        data = self._receive_bytes(what)
        if ts_uid == EXPLICIT_LITTLE:
            try:
                ElementReader(data, implicit=False, strict=True).level(0, len(data), top=True)
            except NotRaw:
                pass
            else:
                limit = self.settings.max_identifier_bytes
                return ReceivedDataSet(lambda: dimse.decode_dataset(data, ts_uid, limit), data)
        return ReceivedDataSet.of(self._decode(data, ts_uid, what))

    def _decode(self, data: bytes, ts_uid: str, what: str) -> Dataset:
        try:
            return dimse.decode_dataset(data, ts_uid, self.settings.max_identifier_bytes)
        except DimseError as exc:
            LOG.debug("undecodable data set: %s", exc)  # may quote patient data
            raise _abort(f"undecodable {what}") from exc

    def _procedure_step(
        self,
        context_id: int,
        command: dict[int, bytes],
        field: int,
        has_dataset: bool,
        steps: ProcedureStepApplication,
    ) -> None:
        """N-CREATE or N-SET: read the data set, let the application answer, respond."""
        creating = field == dimse.N_CREATE_RQ
        name = "N-CREATE" if creating else "N-SET"
        message_id = dimse.command_us(command, dimse.MESSAGE_ID) or 0
        class_tag = dimse.AFFECTED_SOP_CLASS_UID if creating else dimse.REQUESTED_SOP_CLASS_UID
        instance_tag = (
            dimse.AFFECTED_SOP_INSTANCE_UID if creating else dimse.REQUESTED_SOP_INSTANCE_UID
        )
        sop_class = dimse.command_ui(command, class_tag)
        instance = dimse.command_ui(command, instance_tag)
        received = (self._receive_step(self.contexts[context_id], f"{name} data set")
                    if has_dataset else ReceivedDataSet.of(Dataset()))
        self.report.queries += 1
        LOG.debug("%s-RQ message %d on context %d", name, message_id, context_id)
        if sop_class != steps.sop_class_uid or self.abstract_syntaxes[context_id] != sop_class:
            response = NResponse(STATUS_SOP_CLASS_NOT_SUPPORTED, instance)
        elif creating:
            response = steps.create(self.info, instance, received)
        elif not instance:
            response = NResponse(STATUS_NO_SUCH_INSTANCE, error_comment="no SOP instance UID")
        else:
            response = steps.set(self.info, instance, received)
        (self.report.n_create_statuses if creating else self.report.n_set_statuses).append(
            response.status)
        rsp = dimse.n_response_command(
            sop_class,
            dimse.N_CREATE_RSP if creating else dimse.N_SET_RSP,
            message_id,
            response.status,
            sop_instance_uid=response.sop_instance_uid,
            attribute_identifiers=response.attribute_identifiers,
            comment=response.error_comment,
            error_id=response.error_id,
        )
        self.sock.sendall(dimse.encode_pdata(context_id, True, rsp, self.peer_max_pdu))

    def _find(self, context_id: int, command: dict[int, bytes]) -> None:
        """Receive the identifier (DIMSE timeout), then send the application's responses."""
        message_id = dimse.command_us(command, dimse.MESSAGE_ID) or 0
        sop_class = dimse.command_ui(command, dimse.AFFECTED_SOP_CLASS_UID)
        ts_uid = self.contexts[context_id]
        encoded, identifier = self._receive_dataset(ts_uid, "C-FIND identifier")
        started = time.perf_counter()
        self.report.queries += 1
        self.report.match_counts.append(0)
        LOG.debug("C-FIND-RQ message %d on context %d (%s)", message_id, context_id, ts_uid)
        if LOG.isEnabledFor(logging.INFO):
            LOG.info("%s", incoming_find_text(command, context_id, message_id, sop_class))
        responses = self.app.find(self.info, identifier, ts_uid, encoded)
        try:
            self._respond(responses, context_id, message_id, sop_class, ts_uid)
        except UndecodableIdentifier as exc:
            raise _abort(f"undecodable C-FIND identifier ({exc})") from exc
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()
            self.report.find_micros.append(int((time.perf_counter() - started) * 1_000_000))
        if self.settings.sleep_after:
            time.sleep(self.settings.sleep_after)

    def _respond(
        self,
        responses: Iterator[FindResponse],
        context_id: int,
        message_id: int,
        sop_class: str,
        ts_uid: str,
    ) -> None:
        """Poll for a cancel before each response, as DIMSE_findProvider does, and send it."""
        while True:
            if self._cancel_requested(message_id):
                LOG.debug("C-CANCEL-RQ for message %d, remaining results dropped", message_id)
                response = FindResponse(STATUS_CANCEL)
            else:
                response = next(responses, None) or FindResponse(STATUS_SUCCESS)
            if self.settings.sleep_during:
                time.sleep(self.settings.sleep_during)
            self._send_find_response(response, context_id, message_id, sop_class, ts_uid)
            if response.status not in _PENDING:
                LOG.debug("C-FIND final status 0x%04x", response.status)
                return
            self.report.matches += 1
            self.report.match_counts[-1] += 1

    def _cancel_requested(self, message_id: int) -> bool:
        """Non-blocking: a matching C-CANCEL-RQ is True, all else aborts (docs/compat.md §6.4)."""
        if not self.pdvs and not self.stream.has_data():
            return False
        _, command = self._receive_command(self.settings.dimse_timeout, "DIMSE timeout")
        field = dimse.command_us(command, dimse.COMMAND_FIELD)
        responded_to = dimse.command_us(command, dimse.MESSAGE_ID_RESPONDED_TO)
        if field == dimse.C_CANCEL_RQ and responded_to == message_id:
            return True
        raise _abort(f"command 0x{field or 0:04x} (for {responded_to}) during C-FIND {message_id}")

    def _send_find_response(
        self, response: FindResponse, context_id: int, message_id: int, sop_class: str, ts: str,
    ) -> None:
        """Command and identifier in one write."""
        dataset = b""
        if isinstance(response.identifier, bytes):
            dataset = response.identifier
        elif response.identifier is not None:
            try:
                dataset = dimse.encode_dataset(
                    response.identifier,
                    ts,
                    new_vr=self.settings.new_vr,
                    compression_level=self.settings.compression_level,
                )
            except Exception as exc:  # pydicom raises many types for unencodable values
                LOG.debug("cannot encode a response: %s", exc)  # may quote patient data
                detail = f"cannot encode a response ({type(exc).__name__})"
                raise _Stop(Outcome.ERROR, detail, _abort_bytes()) from exc
        has_dataset = response.identifier is not None
        if response.offending_elements or response.error_comment is not None:
            rsp = dimse.find_response_command(
                sop_class,
                message_id,
                response.status,
                has_dataset=has_dataset,
                offending=response.offending_elements,
                comment=response.error_comment,
            )
            out = dimse.encode_pdata(context_id, True, rsp, self.peer_max_pdu)
        else:
            out = _find_response_pdu(context_id, sop_class, message_id, response.status,
                                     has_dataset, self.peer_max_pdu)
        if has_dataset:
            out += dimse.encode_pdata(context_id, False, dataset, self.peer_max_pdu)
        self.sock.sendall(out)


@functools.lru_cache(maxsize=256)
def _find_response_pdu(context_id: int, sop_class: str, message_id: int, status: int,
                       has_dataset: bool, peer_max_pdu: int) -> bytes:
    """The P-DATA-TF of a plain C-FIND-RSP command (status only): the same for every match of
    a C-FIND and for the same query of the next association, so made once."""
    rsp = dimse.find_response_command(sop_class, message_id, status, has_dataset=has_dataset)
    return dimse.encode_pdata(context_id, True, rsp, peer_max_pdu)


def _reject_before_limit(request: pdu.AssociateRequest, settings: Settings) -> _Stop | None:
    """Steps 1-3 of the reject order, which come before the association limit."""
    if settings.refuse:
        return _Stop(Outcome.REJECTED, "refusing all associations (--refuse)", _rj(RJ_NO_REASON))
    if request.application_context != pdu.APPLICATION_CONTEXT:
        detail = f"unknown application context {request.application_context!r}"
        return _Stop(Outcome.REJECTED, detail, _rj(RJ_CONTEXT_NAME))
    if settings.reject and not request.implementation_class_uid:
        return _Stop(Outcome.REJECTED, "no implementation class UID (--reject)", _rj(RJ_NO_REASON))
    return None


def limit_refusal(pdu_type: int, body: bytes, settings: Settings
                  ) -> tuple[bytes, Outcome, str]:
    """The answer to the first PDU of a connection that arrived while the server is full.

    Returns (reply, outcome, detail): normally A-ASSOCIATE-RJ 2/3/2, or the earlier reject of
    docs/compat.md §7.1 steps 1-3, or an A-ABORT for anything but a valid A-ASSOCIATE-RQ. Pure,
    so the supervisor can answer without a worker and without blocking.
    """
    if pdu_type != pdu.A_ASSOCIATE_RQ:
        return (pdu.encode_abort(pdu.ABORT_SOURCE_PROVIDER, pdu.REASON_UNEXPECTED_PDU),
                Outcome.ABORTED, f"PDU type 0x{pdu_type:02x} instead of A-ASSOCIATE-RQ")
    try:
        request = pdu.parse_associate_rq(body)
    except pdu.PduError as exc:
        return pdu.encode_abort(pdu.ABORT_SOURCE_PROVIDER, exc.reason), Outcome.ABORTED, str(exc)
    stop = _reject_before_limit(request, settings) or _Stop(
        Outcome.REFUSED_LIMIT, "too many associations", _rj(RJ_LOCAL_LIMIT))
    return stop.reply, stop.outcome, stop.detail


def _rj(values: tuple[int, int, int]) -> bytes:
    return pdu.encode_associate_rj(*values)


def _abort_bytes() -> bytes:
    return pdu.encode_abort(pdu.ABORT_SOURCE_USER, 0)


_ENDINGS = {"released": "Association Release", "aborted": "Association Aborted"}


def _finish(assoc: _Association) -> AssociationReport:
    """Run the association and turn every way it can end into a report."""
    report = assoc.report
    try:
        assoc.establish()
        assoc.serve()
    except _Stop as stop:
        report.outcome, report.detail = stop.outcome, stop.detail
        if assoc.acknowledged and stop.outcome in _ENDINGS:
            LOG.info("%s", _ENDINGS[stop.outcome])
        if stop.reply:
            with contextlib.suppress(OSError):
                assoc.sock.sendall(stop.reply)
    except pdu.PduError as exc:
        report.outcome, report.detail = Outcome.ABORTED, str(exc)
        with contextlib.suppress(OSError):
            assoc.sock.sendall(pdu.encode_abort(pdu.ABORT_SOURCE_PROVIDER, exc.reason))
    except pdu.ConnectionClosed as exc:
        report.outcome, report.detail = Outcome.CLOSED, str(exc)
    except OSError as exc:
        report.outcome, report.detail = Outcome.CLOSED, f"connection error: {exc}"
    except Exception as exc:  # the application failed: never let it take the worker down
        LOG.exception("association with %s failed", assoc.peer[0])
        report.outcome, report.detail = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            assoc.sock.sendall(_abort_bytes())
    if assoc.acknowledged:
        LOG.info("+++++++++++++++++++++++++++++")  # wlmscpfs's end of an association
    return report


def serve_association(
    sock: socket.socket,
    peer: tuple[str, int],
    settings: Settings,
    app: WorklistApplication,
    on_request: Callable[[AssociationInfo], None] | None = None,
) -> AssociationReport:
    """Run one association on a connected socket to its end, close the socket, report.

    ``on_request`` sees who is asking as soon as the A-ASSOCIATE-RQ is read (process titles).
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assoc = _Association(sock, peer, settings, app, on_request)
    try:
        report = _finish(assoc)
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    LOG.debug(  # the supervisor (or single-process server) logs the one INFO line
        "association %s:%d calling=%r called=%r: %s, %d queries, %d matches%s",
        peer[0],
        peer[1],
        report.calling_ae,
        report.called_ae,
        report.outcome,
        report.queries,
        report.matches,
        f" ({report.detail})" if report.detail else "",
    )
    return report


def incoming_find_text(command: dict[int, bytes], context_id: int, message_id: int,
                       sop_class: str | None) -> str:
    """The C-FIND-RQ block wlmscpfs logs at -v (DCMTK's ``DIMSE_dumpMessage``)."""
    priority = dimse.command_us(command, PRIORITY) or 0
    lines = [
        "===================== INCOMING DIMSE MESSAGE ====================",
        "Message Type                  : C-FIND RQ",
        f"Presentation Context ID       : {context_id}",
        f"Message ID                    : {message_id}",
        f"Affected SOP Class UID        : {_SOP_CLASS_NAMES.get(sop_class or '', sop_class)}",
        "Data Set                      : present",
        f"Priority                      : {_PRIORITY_NAMES.get(priority, str(priority))}",
        "======================= END DIMSE MESSAGE =======================",
    ]
    return "\n".join(lines)
