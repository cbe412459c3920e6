"""The worklist application: turns one C-FIND identifier into the responses wlmscpfs would send.

Pipeline (docs/compat.md §1): write the request file, sleep, validate and clean the
search mask, take a consistent snapshot of the called AE's worklist, match, build every
response, and only then hand them out one by one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from pydicom import Dataset
from pydicom.errors import BytesLengthException

from wlmd.config.settings import Settings
from wlmd.dicom.dimse import encode_dataset
from wlmd.dicom.dump import ENCODING, ESCAPE, dump_request
from wlmd.dicom.types import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PENDING,
    STATUS_PENDING_WARNING,
    STATUS_SUCCESS,
    Admission,
    AssociationInfo,
    FindResponse,
    ProcedureStepApplication,
    UndecodableIdentifier,
)
from wlmd.policy.apply import (
    AppliedQueries,
    PolicyQuery,
    convert_response,
    query_charset,
    record_charset,
)
from wlmd.policy.model import NO_POLICY, Fallback, LimitAction, PeerPolicy
from wlmd.worklist import findlog
from wlmd.worklist.answerplan import AnswerPlan, NotDirect
from wlmd.worklist.cache import NO_MATCH, PreparedQueries, QueryShape, ResponseCache
from wlmd.worklist.compact import screens
from wlmd.worklist.fileview import raw_elements
from wlmd.worklist.index import Prefilter, prefilter_of
from wlmd.worklist.limits import identifier_limit_error
from wlmd.worklist.matching import matches
from wlmd.worklist.preload import ChildProcesses, preload
from wlmd.worklist.query import Elements, InvalidQuery, PreparedQuery, prepare_query
from wlmd.worklist.records import WorklistRecord
from wlmd.worklist.response import build_response
from wlmd.worklist.store import Candidates, LockfileError, WorklistStore

LOGGER = logging.getLogger(__name__)
# What pydicom raises converting a value it cannot read: unknown VR, impossible length, bytes.
UNDECODABLE_VALUE_ERRORS = (NotImplementedError, BytesLengthException, ValueError,
                            struct.error, UnicodeError)
MAX_CHARSET_WARNINGS = 100_000  # entries remembered as logged, then forgotten all at once


class WorklistService:
    """Answers C-FIND requests from the worklist directory; one instance per process."""

    def __init__(self, settings: Settings, store: WorklistStore | None = None,
                 procedure_steps: ProcedureStepApplication | None = None, *,
                 scanning: bool = False) -> None:
        """``scanning``: answer every query from a fresh read of the files (``scan.py``), for
        the workers that serve while the supervisor loads the worklist."""
        self._settings = settings
        self._scanning = scanning
        self._procedure_steps = procedure_steps
        self._store = store or WorklistStore(
            settings.data_files_path, file_reject=settings.file_reject,
            refresh=settings.refresh,
        )
        self._cache = ResponseCache()
        self._policies = settings.policy or NO_POLICY
        self._applied = AppliedQueries()
        # (AE, entry, charset, policy) already logged as holding characters the charset lacks
        self._charset_warned: set[tuple[str, str, bytes, str]] = set()
        self._queries = PreparedQueries()  # by identifier bytes received

    @property
    def store(self) -> WorklistStore:
        """The worklist store this application answers from (shared with the HTTP search)."""
        return self._store

    def preload(self, children: ChildProcesses) -> None:
        """Parse every AE's worklist now (in the supervisor, so that workers share the result).

        Parses in ``children``'s processes; with ``--index-file``, only the files that
        changed since the index file was saved.
        """
        preload(self._store, children, self._settings.index_file)

    @contextlib.contextmanager
    def forking(self) -> Iterator[None]:
        """Wrap the fork of one worker, so that it starts from an up-to-date worklist (and the
        MPPS service's link indexes)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._store.forking())
            if self._procedure_steps is not None:
                stack.enter_context(self._procedure_steps.forking())
            yield

    def procedure_steps(self) -> ProcedureStepApplication | None:
        """The MPPS service answered on the same associations (None: MPPS is off)."""
        return self._procedure_steps

    def knows_called_ae(self, called_ae: str) -> bool:
        """True if the called AE title is safe and has a directory under ``-dfp``."""
        return self._store.knows_called_ae(called_ae)

    def admit(self, called_ae: str, calling_ae: str) -> Admission:
        """The allow-lists of the configured policies decide; without policies, everyone."""
        if not self._policies:
            return Admission(True)
        return self._policies.admit(called_ae, calling_ae)

    def find(
        self, assoc: AssociationInfo, identifier: Dataset, transfer_syntax_uid: str,
        encoded: bytes = b"",
    ) -> Iterator[FindResponse]:
        """Yield one pending response per matching record, then the final status.

        ``encoded``: the identifier as received (DIMSE, or the HTTP search's encoding); a
        query already prepared from the same bytes is reused, except at information level.
        At information level every step is logged as wlmscpfs -v logs it (``findlog``).
        """
        if findlog.enabled():
            log = findlog.FindLog(transfer_syntax_uid)
            return log.responses(self._find(assoc, identifier, transfer_syntax_uid, log, b""))
        return self._find(assoc, identifier, transfer_syntax_uid, None, encoded)

    def _prepare(self, identifier: Dataset, transfer_syntax_uid: str,
                 encoded: bytes) -> PreparedQuery:
        """``prepare_query`` with this service's settings, kept for its bytes; invalid queries
        are not kept (each one is logged)."""
        settings = self._settings
        query = prepare_query(identifier, no_fail=settings.no_fail,
                              expand_sequences=settings.sequence_expansion)
        self._queries.add(encoded, transfer_syntax_uid, query)
        return query

    def _find(self, assoc: AssociationInfo, identifier: Dataset, transfer_syntax_uid: str,
              log: findlog.FindLog | None, encoded: bytes) -> Iterator[FindResponse]:
        settings = self._settings
        if log is not None:
            log.request(identifier)
        # a known query passed the limits before
        known = self._queries.get(encoded, transfer_syntax_uid) if encoded else None
        if known is None and (refusal := self._refusal(assoc, identifier)) is not None:
            yield refusal
            return
        if settings.request_file_path is not None:
            if log is not None:
                LOGGER.info("Storing request dataset to file")
            write_request_file(settings, assoc, identifier, transfer_syntax_uid)
        if settings.sleep_before:
            if log is not None:
                LOGGER.info("SLEEPING (before evaluating find request): %d secs",
                            settings.sleep_before)
            time.sleep(settings.sleep_before)
        try:
            query = known or self._prepare(identifier, transfer_syntax_uid, encoded)
        except InvalidQuery as error:
            LOGGER.info("Invalid query from %s (%s): %s", assoc.calling_ae,
                        assoc.peer_address, error.comment)
            yield FindResponse(STATUS_IDENTIFIER_MISMATCH, offending_elements=error.offending,
                               error_comment=error.comment)
            return
        except UNDECODABLE_VALUE_ERRORS as error:  # pydicom could not read an element's value
            LOGGER.warning("Undecodable identifier from %s (%s): %s", assoc.calling_ae,
                           assoc.peer_address, type(error).__name__)
            raise UndecodableIdentifier(type(error).__name__) from error
        if log is not None:
            log.expanded(query)
        policy = self._policies.for_peer(assoc.called_ae, assoc.calling_ae) \
            if self._policies else None
        if policy is not None:
            yield from self._find_under_policy(assoc, identifier, query, policy,
                                               transfer_syntax_uid, log)
            return
        try:  # logged: every record is a candidate, so each gets its lines, as in wlmscpfs
            candidates = self._candidates(assoc.called_ae, query, log is not None,
                                          lambda: prefilter_of(query))
        except LockfileError as error:
            LOGGER.error("%s", error)
            yield FindResponse(STATUS_OUT_OF_RESOURCES)
            return
        responses = self._answers(query, candidates, transfer_syntax_uid)
        if log is not None:
            log.candidates(os.path.join(settings.data_files_path, assoc.called_ae), query,
                           candidates.records(), len(responses))
        LOGGER.debug("%d of %d candidate worklist records in %s match", len(responses),
                     len(candidates), assoc.called_ae)
        if 0 < settings.max_responses < len(responses):
            yield self._too_many(assoc, len(responses))
            return
        status = STATUS_PENDING_WARNING if query.unsupported_removed else STATUS_PENDING
        for response in responses:
            yield FindResponse(status, response)
        yield FindResponse(STATUS_SUCCESS)

    def _candidates(self, ae: str, query: PreparedQuery, every: bool,
                    prefilter: Callable[[], Prefilter | None]) -> Candidates:
        """The records of ``ae`` that may match ``query`` (``every``: all of them), from the
        store's index, or read afresh while scanning; LockfileError as for the store's."""
        if self._scanning:
            return self._store.scanned(ae, () if every else screens(query))
        return self._store.candidates(ae, None if every else prefilter())

    def _too_many(self, assoc: AssociationInfo, count: int) -> FindResponse:
        """The 0xA700 refusal of ``--max-responses``."""
        limit = self._settings.max_responses
        LOGGER.warning("Query from %s (%s) matches %d entries of %s, more than "
                       "--max-responses %d: refused", assoc.calling_ae, assoc.peer_address,
                       count, assoc.called_ae, limit)
        return FindResponse(STATUS_OUT_OF_RESOURCES, error_comment=(
            f"Too many matches ({count} > {limit}), refine query"))

    # --- per-peer policy (wlmd.policy): only queries from a peer a policy names come here ---

    def _find_under_policy(self, assoc: AssociationInfo, identifier: Dataset,
                           query: PreparedQuery, policy: PeerPolicy, transfer_syntax_uid: str,
                           log: findlog.FindLog | None) -> Iterator[FindResponse]:
        """``_find`` from the snapshot on, with the policy's masks, tests, charset and limit."""
        applied = self._applied.get(policy, query, query_charset(identifier), assoc.calling_ae)
        try:
            candidates = self._candidates(assoc.called_ae, applied.match, log is not None,
                                          lambda: applied.prefilter)
        except LockfileError as error:
            LOGGER.error("%s", error)
            yield FindResponse(STATUS_OUT_OF_RESOURCES)
            return
        responses = self._policy_answers(assoc, applied, candidates, transfer_syntax_uid)
        if log is not None:
            log.candidates(os.path.join(self._settings.data_files_path, assoc.called_ae),
                           applied.match, candidates.records(), len(responses))
        LOGGER.debug("%d of %d candidate worklist records in %s match under policy %s",
                     len(responses), len(candidates), assoc.called_ae, policy.name)
        if 0 < self._settings.max_responses < len(responses):
            yield self._too_many(assoc, len(responses))
            return
        final = FindResponse(STATUS_SUCCESS)
        if 0 < policy.max_answers < len(responses):
            responses, final = self._limited(assoc, policy, responses)
        status = STATUS_PENDING_WARNING if query.unsupported_removed else STATUS_PENDING
        for response in responses:
            yield FindResponse(status, response)
        yield final

    def _limited(self, assoc: AssociationInfo, policy: PeerPolicy, responses: list[bytes]
                 ) -> tuple[list[bytes], FindResponse]:
        """``max_answers``: the answers to send and the final status; never silent."""
        count, limit = len(responses), policy.max_answers
        action = policy.on_too_many
        LOGGER.warning("Query from %s (%s) matches %d entries of %s, more than max_answers %d "
                       "of policy %s: %s", assoc.calling_ae, assoc.peer_address, count,
                       assoc.called_ae, limit, policy.name, action.value)
        if action is LimitAction.REFUSE:
            return [], FindResponse(STATUS_OUT_OF_RESOURCES, error_comment=(
                f"Too many matches ({count} > {limit}), refine query"))
        if action is LimitAction.PARTIAL:
            return responses[:limit], FindResponse(STATUS_OUT_OF_RESOURCES, error_comment=(
                f"Too many matches: first {limit} of {count} returned, refine query"))
        return responses[:limit], FindResponse(STATUS_SUCCESS)

    def _policy_answers(self, assoc: AssociationInfo, applied: PolicyQuery,
                        candidates: Candidates, transfer_syntax_uid: str) -> list[bytes]:
        """``_answers`` under a policy: the cache is keyed by everything the policy changed."""
        settings = self._settings

        def answer_of(number: int) -> bytes:
            record = candidates.record(number)
            dataset = record.dataset
            if not (matches(applied.match, dataset) and applied.matches_text(dataset)):
                return NO_MATCH
            response = build_response(applied.answer, dataset, settings.return_charset)
            if not self._in_peer_charset(assoc, applied, record, dataset, response):
                return NO_MATCH
            return self._encode(response, transfer_syntax_uid)

        shape = self._cache.shape(applied.cache_key, transfer_syntax_uid)
        return self._cached(shape, candidates, answer_of)

    def _in_peer_charset(self, assoc: AssociationInfo, applied: PolicyQuery,
                         record: WorklistRecord, dataset: Dataset, response: Dataset) -> bool:
        """Convert ``response`` to the policy's character set; False: leave the entry out.

        A value the set cannot hold is logged once per entry, character set and policy in
        each process (the entry's file name, never the value).
        """
        target = applied.target
        if target is None:
            return True
        fallback = applied.policy.charset_fallback
        outcome = convert_response(response, record_charset(dataset), target, fallback)
        if outcome.fallback_used:
            warned = (assoc.called_ae, record.name, target.value, applied.policy.name)
            if warned not in self._charset_warned:
                if len(self._charset_warned) >= MAX_CHARSET_WARNINGS:
                    self._charset_warned.clear()
                self._charset_warned.add(warned)
                LOGGER.warning("Worklist entry %s/%s has values %s cannot represent (policy "
                               "%s): %s", assoc.called_ae, record.name, target.value.decode(),
                               applied.policy.name, "left out" if fallback is Fallback.OMIT
                               else fallback.value + "d")
        return not outcome.omitted

    def _answers(self, query: PreparedQuery, candidates: Candidates,
                 transfer_syntax_uid: str) -> list[bytes]:
        """The encoded response of every matching candidate, in the store's (stable) order.

        Outcomes come from the response cache where this query was answered before for the
        same record version. An answer is encoded straight from the file's raw elements by
        the query's ``AnswerPlan``; what a plan does not model is built as a Dataset and
        encoded, to the same bytes.
        """
        settings = self._settings
        shape = self._cache.shape(query.key(), transfer_syntax_uid)

        def plan() -> AnswerPlan | None:
            try:
                return AnswerPlan(query.mask, transfer_syntax_uid,
                                  charset=settings.return_charset, new_vr=settings.new_vr,
                                  compression_level=settings.compression_level)
            except NotDirect:
                return None

        def answer_of(number: int) -> bytes:
            # only an answer reads the file
            if not matches(query, candidates.match_view(number)):
                return NO_MATCH
            record = candidates.record(number)
            direct = self._cache.plan(shape, plan)
            elements = raw_elements(record, None if direct is None else direct.wanted)
            if elements is None:  # bytes pydicom might read otherwise: it decodes them
                return built(record.dataset)
            if direct is not None:
                try:
                    return direct.answer(elements)
                except NotDirect:  # read again whole: the plan's elements are its own
                    elements = raw_elements(record) or elements
            return built(elements)

        def built(elements: Elements) -> bytes:
            response = build_response(query, elements, settings.return_charset)
            return self._encode(response, transfer_syntax_uid)

        return self._cached(shape, candidates, answer_of)

    def _cached(self, shape: QueryShape, candidates: Candidates,
                answer_of: Callable[[int], bytes]) -> list[bytes]:
        """The answers of ``candidates`` (NO_MATCH left out) for the query of ``shape``, each
        worked out by ``answer_of`` (given the record's number) where the cache has none."""
        serials, keep = candidates.serials, self._cache.keep
        if len(shape.answers) > len(candidates.numbers):  # some of records changed or gone
            self._cache.retain(shape, {serials[number] for number in candidates.numbers})
        known = shape.answers
        encoded: list[bytes] = []
        for number in candidates.numbers:
            serial = serials[number]
            answer = known.get(serial)
            if answer is None:
                answer = answer_of(number)
                keep(shape, serial, answer)
            if answer is not NO_MATCH:
                encoded.append(answer)
        return encoded

    def _encode(self, response: Dataset, transfer_syntax_uid: str) -> bytes:
        settings = self._settings
        return encode_dataset(response, transfer_syntax_uid, new_vr=settings.new_vr,
                              compression_level=settings.compression_level)

    def _refusal(self, assoc: AssociationInfo, identifier: Dataset) -> FindResponse | None:
        """The response refusing an identifier that breaks a resource limit or cannot be read."""
        settings = self._settings
        try:
            problem = identifier_limit_error(identifier, max_depth=settings.max_sequence_depth,
                                             max_items=settings.max_sequence_items)
        except Exception as exc:  # pydicom reports malformed nested data with many types
            LOGGER.warning("Unreadable identifier from %s (%s): %s", assoc.calling_ae,
                           assoc.peer_address, exc)
            return FindResponse(STATUS_IDENTIFIER_MISMATCH,
                                error_comment="Identifier could not be decoded")
        if problem is None:
            return None
        LOGGER.warning("Query from %s (%s) refused: %s", assoc.calling_ae, assoc.peer_address,
                       problem)
        return FindResponse(STATUS_OUT_OF_RESOURCES, error_comment=f"Query refused: {problem}")


def request_file_name(fmt: str, assoc: AssociationInfo, patient_id: str) -> str:
    """Expand ``-rff`` placeholders in wlmscpfs's order: #c, #a, #i, #t, #p.

    Substituted values contain no path separator and never start with a dot, so a Patient ID
    or AE title can never name a file outside ``-rfp`` nor a hidden one.
    """
    name = fmt.replace("#c", _path_safe(assoc.called_ae))
    name = name.replace("#a", _path_safe(assoc.calling_ae))
    name = name.replace("#i", str(os.getpid()))
    if "#t" in name:
        name = name.replace("#t", datetime.now().strftime("%Y%m%d%H%M%S%f"))
    return name.replace("#p", _path_safe(patient_id))


def _patient_id(identifier: Dataset) -> str:
    """(0010,0020) without its padding, read raw so the identifier keeps its received bytes."""
    element = identifier.get_item(0x00100020)
    if element is None or not element.value:
        return ""
    value = element.value
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return text.rstrip(" \0")


def _path_safe(value: str) -> str:
    """Replace what could change which directory a file name lands in, or hide the file.

    Path separators and control characters become ``_``, and so do leading dots: a value can
    never name ``.``, ``..`` or a hidden file.
    """
    safe = "".join("_" if ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F else ch
                   for ch in value)
    dots = len(safe) - len(safe.lstrip("."))
    return "_" * dots + safe[dots:]


def write_request_file(settings: Settings, assoc: AssociationInfo, identifier: Dataset,
                       transfer_syntax_uid: str) -> None:
    """Store the identifier as received, in dcmdump format, as ``-rfp``/``-rff`` ask."""
    assert settings.request_file_path is not None
    directory = settings.request_file_path.resolve()
    path = directory / request_file_name(settings.request_file_format, assoc,
                                         _patient_id(identifier))
    if path.resolve().parent != directory:
        LOGGER.error("Request file name %r would leave %s; not written", path.name, directory)
        return
    try:
        path.write_text(dump_request(identifier, transfer_syntax_uid), encoding=ENCODING,
                        errors=ESCAPE)  # the value bytes as received, as wlmscpfs writes them
    except OSError as error:
        LOGGER.error("Cannot write request file %s: %s", path, error)
