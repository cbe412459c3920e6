"""The Modality Performed Procedure Step SOP Class as SCP (PS3.4 Annex F.7).

N-CREATE stores a new IN PROGRESS instance, N-SET updates it until it is COMPLETED or
DISCONTINUED; both are checked against Table F.7.2-1 (``wlmd.mpps.rules``). A success is
answered only after the instance (and its forwarding messages) are on disk; then the AE's
worklist policy is applied. The whole change runs under the lock of the AE's MPPS directory, so
concurrent N-SETs from two workers are serialised. Every refusal logs one line: calling AE,
SOP Instance UID and why, never patient data.

A step received in explicit VR little endian is checked, merged and stored on its bytes
(``wlmd.mpps.encoded``); anything those cannot read as pydicom would takes the Dataset path,
with the same outcome.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import generate_uid

from wlmd.config.settings import Settings
from wlmd.dicom.types import (
    STATUS_DUPLICATE_INSTANCE,
    STATUS_NO_SUCH_INSTANCE,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    AssociationInfo,
    NResponse,
    ReceivedDataSet,
)
from wlmd.mpps.encoded import EncodedLevel, NotRaw, encoded_level
from wlmd.mpps.forward import OP_CREATE, OP_SET, ForwardAgent, Forwarder, ForwardQueue
from wlmd.mpps.lifecycle import LinkKey, WorklistLifecycle, instance_link_keys, link_keys
from wlmd.mpps.links import EntrySource
from wlmd.mpps.policy import AePolicy, CompletedAction, MppsPolicies
from wlmd.mpps.rules import (
    COMPLETED,
    FINAL_STATES,
    STATUS_TAG,
    Refusal,
    check_create,
    check_set,
    is_uid,
    merge,
    text,
)
from wlmd.mpps.storage import MPPS_SOP_CLASS, MppsStorage, decode_instance, instance_level
from wlmd.worklist.writer import WriterError, write_durably

LOGGER = logging.getLogger("wlmd.mpps")
STATUS_INVALID_OBJECT_INSTANCE = 0x0117
ERROR_ID_FINAL = 0xA710  # PS3.4 F.7.2.2.2: the step is final and may no longer be updated
COMMENT_FINAL = "Performed Procedure Step Object may no longer be updated"
DELAYED = "delayed"


class MppsService:
    """The MPPS application the association engine calls for N-CREATE and N-SET."""

    sop_class_uid = MPPS_SOP_CLASS

    def __init__(self, settings: Settings, entries: EntrySource | None = None) -> None:
        if settings.mpps_path is None:
            raise ValueError("MPPS needs mpps_path")
        self.root = settings.mpps_path
        self.policies: MppsPolicies = settings.mpps_policy
        self.storage = MppsStorage(self.root)
        self.lifecycle = WorklistLifecycle(settings.data_files_path, self.root, entries,
                                           settings.refresh)
        self.queue = ForwardQueue(self.root)
        self.agent = ForwardAgent(Forwarder(self.queue, self.policies.destinations()),
                                  self.run_due_actions)

    def forking(self) -> contextlib.AbstractContextManager[None]:
        """Around the fork of one worker, so that it starts with current link indexes."""
        return self.lifecycle.forking()

    def start_agent(self) -> None:
        """Start this process's forwarder/timer thread (in each worker, after the fork)."""
        self.agent.start()

    # --- N-CREATE ---------------------------------------------------------------------------

    def create(self, assoc: AssociationInfo, sop_instance_uid: str,
               attributes: ReceivedDataSet) -> NResponse:
        uid = sop_instance_uid or generate_uid()
        return self._guarded(assoc, "N-CREATE", uid,
                             lambda: self._create(assoc, uid, attributes))

    def _create(self, assoc: AssociationInfo, uid: str,
                attributes: ReceivedDataSet) -> NResponse:
        if not is_uid(uid):
            return self._refuse(assoc, "N-CREATE", "", NResponse(
                STATUS_INVALID_OBJECT_INSTANCE, error_comment="invalid SOP Instance UID"),
                "invalid SOP Instance UID")
        refusal, instance = _checked_create(attributes)
        if refusal is not None:
            return self._refuse(assoc, "N-CREATE", uid, NResponse(
                refusal.status, uid, refusal.tags, refusal.comment), refusal.comment)
        ae = assoc.called_ae
        policy = self.policies.for_ae(ae)
        with self.storage.locked(ae, uid) as tx:
            if self.storage.exists(tx, uid):
                return self._refuse(assoc, "N-CREATE", uid, NResponse(
                    STATUS_DUPLICATE_INSTANCE, uid, error_comment="instance exists"),
                    "duplicate SOP instance")
            stored = self.storage.write(tx, instance, uid)
            self._forward(policy, OP_CREATE, uid, attributes)
            linked = self.lifecycle.started(ae, _link_keys(stored, instance), policy)
        LOGGER.info("MPPS %s from %s: IN PROGRESS, %s", uid, assoc.calling_ae,
                    _linked(linked))
        return NResponse(STATUS_SUCCESS, uid)

    # --- N-SET ------------------------------------------------------------------------------

    def set(self, assoc: AssociationInfo, sop_instance_uid: str,
            modifications: ReceivedDataSet) -> NResponse:
        uid = sop_instance_uid
        return self._guarded(assoc, "N-SET", uid,
                             lambda: self._set(assoc, uid, modifications))

    def _set(self, assoc: AssociationInfo, uid: str,
             modifications: ReceivedDataSet) -> NResponse:
        if not is_uid(uid):
            return self._refuse(assoc, "N-SET", "", NResponse(
                STATUS_INVALID_OBJECT_INSTANCE, error_comment="invalid SOP Instance UID"),
                "invalid SOP Instance UID")
        ae = assoc.called_ae
        policy = self.policies.for_ae(ae)
        with self.storage.locked(ae, uid) as tx:
            data = self.storage.read_bytes(tx, uid)
            if data is None:
                return self._refuse(assoc, "N-SET", uid, NResponse(
                    STATUS_NO_SUCH_INSTANCE, uid, error_comment="no such instance"),
                    "no such SOP instance")
            outcome = _set_outcome(data, modifications)
            if outcome.merged is None and outcome.refusal is None:
                return self._refuse(assoc, "N-SET", uid, NResponse(
                    STATUS_PROCESSING_FAILURE, uid, error_comment=COMMENT_FINAL,
                    error_id=ERROR_ID_FINAL), f"already {outcome.status}")
            if outcome.refusal is not None:
                refusal = outcome.refusal
                return self._refuse(assoc, "N-SET", uid, NResponse(
                    refusal.status, uid, refusal.tags, refusal.comment), refusal.comment)
            assert outcome.merged is not None
            stored = self.storage.write(tx, outcome.merged, uid)
            self._forward(policy, OP_SET, uid, modifications)
            status = outcome.status
            linked: list[str] = []
            if status in FINAL_STATES:
                if status == COMPLETED and _delayed_removal(policy):
                    self._schedule_removal(ae, uid, policy)
                linked = self.lifecycle.ended(ae, _link_keys(stored, outcome.merged), status,
                                              policy)
        LOGGER.info("MPPS %s from %s: %s, %s", uid, assoc.calling_ae, status, _linked(linked))
        return NResponse(STATUS_SUCCESS, uid)

    # --- helpers ----------------------------------------------------------------------------

    def _forward(self, policy: AePolicy, op: str, uid: str,
                 received: ReceivedDataSet) -> None:
        for destination in policy.forward:  # decoded only for a destination
            self.queue.enqueue(destination, op, uid, received.dataset)

    def _guarded(self, assoc: AssociationInfo, operation: str, uid: str,
                 handle: Callable[[], NResponse]) -> NResponse:
        """``handle()``, or a processing failure when the instance cannot be stored or read."""
        try:
            return handle()
        except WriterError as exc:
            return self._refuse(assoc, operation, uid, NResponse(
                STATUS_PROCESSING_FAILURE, uid, error_comment="cannot store the instance"),
                str(exc))
        except Exception as exc:  # pydicom raises many types for values it cannot read
            return self._refuse(assoc, operation, uid, NResponse(
                STATUS_PROCESSING_FAILURE, uid, error_comment="cannot read the data set"),
                type(exc).__name__)

    @staticmethod
    def _refuse(assoc: AssociationInfo, operation: str, uid: str, response: NResponse,
                why: str) -> NResponse:
        tags = " ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})"
                        for t in response.attribute_identifiers)
        LOGGER.warning("MPPS %s from %s for %s refused with 0x%04X: %s%s", operation,
                       assoc.calling_ae, uid or "-", response.status, why,
                       f" {tags}" if tags else "")
        return response

    def _schedule_removal(self, ae: str, uid: str, policy: AePolicy) -> None:
        """A durable timer: ``<AE>/delayed/<due ms>-<action>-<UID>.due``."""
        directory = self.storage.ae_path(ae) / DELAYED
        directory.mkdir(mode=0o700, exist_ok=True)
        due = int((time.time() + policy.completed_delay) * 1000)
        write_durably(directory, f"{due:015d}-{policy.completed.value}-{uid}.due", b"")

    def run_due_actions(self) -> None:
        """Apply the delayed archive/delete actions whose time has come."""
        now_ms = time.time() * 1000
        for due_file in sorted(self.root.glob(f"*/{DELAYED}/*.due")):
            parts = due_file.name[:-4].split("-", 2)
            if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) > now_ms:
                continue
            ae = due_file.parent.parent.name
            action = CompletedAction(parts[1])
            with self.storage.locked(ae, parts[2]) as tx:
                mpps = self.storage.read(tx, parts[2]) if is_uid(parts[2]) else None
                if mpps is not None:
                    linked = self.lifecycle.remove_later(ae, link_keys(mpps), action)
                    LOGGER.info("MPPS %s: delayed %s of %s", parts[2], action.value,
                                _linked(linked))
            due_file.unlink()


def _received(encoded: bytes | None) -> EncodedLevel | None:
    """The raw elements of a data set received in explicit VR little endian, if readable."""
    if encoded is None:
        return None
    try:
        return encoded_level(encoded)
    except NotRaw:
        return None


def _checked_create(attributes: ReceivedDataSet
                    ) -> tuple[Refusal | None, Dataset | EncodedLevel]:
    """The N-CREATE check, and what to store: the received bytes when they can be read raw."""
    received = _received(attributes.explicit_little)
    if received is not None:
        with contextlib.suppress(NotRaw):
            return check_create(received), received
    return check_create(attributes.dataset), attributes.dataset


@dataclass(frozen=True)
class _SetOutcome:
    """An N-SET against the stored instance: ``merged`` to store (None: refused), or the
    ``refusal``, or neither when the step is final already; ``status`` after (or final)."""

    status: str
    refusal: Refusal | None = None
    merged: Dataset | EncodedLevel | None = None


def _set_outcome(data: bytes, modifications: ReceivedDataSet) -> _SetOutcome:
    """The N-SET on the stored and received bytes when both read raw, else on Datasets."""
    received = _received(modifications.explicit_little)
    if received is not None:
        with contextlib.suppress(NotRaw):
            return _outcome(instance_level(data), received)
    return _outcome(decode_instance(data), modifications.dataset)


def _outcome(current: Dataset | EncodedLevel,
             changes: Dataset | EncodedLevel) -> _SetOutcome:
    status = text(current, STATUS_TAG)
    if status in FINAL_STATES:
        return _SetOutcome(status)
    refusal = check_set(current, changes)
    if refusal is not None:
        return _SetOutcome(status, refusal)
    merged = merge(current, changes)
    return _SetOutcome(text(merged, STATUS_TAG), merged=merged)


def _link_keys(stored: bytes, instance: Dataset | EncodedLevel) -> list[LinkKey]:
    """The stored instance's links, from its raw elements when the step had them."""
    return instance_link_keys(stored, instance if isinstance(instance, EncodedLevel) else None)


def _delayed_removal(policy: AePolicy) -> bool:
    return bool(policy.completed_delay) and policy.completed in (CompletedAction.ARCHIVE,
                                                                 CompletedAction.DELETE)


def _linked(names: list[str]) -> str:
    return f"worklist entry {', '.join(names)}" if names else "no worklist entry linked"


def mpps_directory_problem(path: Path | None) -> str | None:
    """Why ``mpps_path`` cannot be used (None: usable); creates it (0700) when missing."""
    if path is None:
        return "--mpps needs --mpps-path (mpps_path in wlmd.conf)"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return f"MPPS directory {path}: {exc.strerror}"
    return None

