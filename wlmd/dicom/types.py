"""The contract between the association engine and the worklist application it serves.

The engine (``wlmd.dicom.association``) speaks the DICOM upper layer and DIMSE; the application
(``wlmd.worklist.service``) knows the worklist. Neither imports the other.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from pydicom import Dataset
from pydicom.tag import BaseTag

# DIMSE status values used by the Basic Worklist Management service (PS3.4 K.4.1.1.4).
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_PENDING_WARNING = 0xFF01  # pending, some optional keys were not supported
STATUS_CANCEL = 0xFE00
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_IDENTIFIER_MISMATCH = 0xA900
# DIMSE-N status values (PS3.7 Annex C) used by the procedure step services.
STATUS_NO_SUCH_ATTRIBUTE = 0x0105
STATUS_INVALID_ATTRIBUTE_VALUE = 0x0106
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_DUPLICATE_INSTANCE = 0x0111
STATUS_NO_SUCH_INSTANCE = 0x0112
STATUS_NO_SUCH_SOP_CLASS = 0x0118
STATUS_MISSING_ATTRIBUTE = 0x0120
STATUS_MISSING_ATTRIBUTE_VALUE = 0x0121
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122


class UndecodableIdentifier(Exception):
    """The identifier holds an element that cannot be read (unknown VR, impossible length).

    The engine ends the association with A-ABORT, as wlmscpfs does. The message names the
    problem only: values may be patient data and must stay out of the logs.
    """


@dataclass(frozen=True)
class AssociationInfo:
    """Who is asking: taken from the TCP peer and the A-ASSOCIATE-RQ."""

    peer_address: str
    peer_port: int
    calling_ae: str
    called_ae: str
    implementation_class_uid: str = ""
    implementation_version_name: str = ""


@dataclass(frozen=True)
class FindResponse:
    """One C-FIND-RSP: a pending match with its identifier, or the final status."""

    status: int
    identifier: Dataset | bytes | None = None  # bytes: already encoded in the negotiated TS
    offending_elements: tuple[BaseTag, ...] = ()  # (0000,0901), only with 0xA900
    error_comment: str | None = None  # (0000,0902)


@dataclass(frozen=True)
class NResponse:
    """One N-CREATE-RSP or N-SET-RSP (PS3.7 §10.1.5, §10.1.3)."""

    status: int
    sop_instance_uid: str = ""  # Affected SOP Instance UID (0000,1000)
    attribute_identifiers: tuple[BaseTag, ...] = ()  # (0000,1005), with 0x0105/0x0106/0x0120/1
    error_comment: str | None = None  # (0000,0902)
    error_id: int | None = None  # (0000,0903)


class ReceivedDataSet:
    """The data set of an N-CREATE or N-SET as received. ``dataset`` is pydicom's reading of
    it, made on first use (about 0.3 ms): an application that stores the bytes as they came
    (``explicit_little``: set when they are explicit VR little endian and read strictly,
    ``wlmd.dicom.rawfile``) may never need it."""

    def __init__(self, decode: Callable[[], Dataset],
                 explicit_little: bytes | None = None) -> None:
        self._decode = decode
        self.explicit_little = explicit_little

    @functools.cached_property
    def dataset(self) -> Dataset:
        return self._decode()

    @classmethod
    def of(cls, dataset: Dataset) -> ReceivedDataSet:
        """A data set decoded already."""
        return cls(lambda: dataset)


class ProcedureStepApplication(Protocol):
    """What the engine needs from a DIMSE-N application (the MPPS service)."""

    sop_class_uid: str

    def create(
        self, assoc: AssociationInfo, sop_instance_uid: str, attributes: ReceivedDataSet
    ) -> NResponse:
        """Answer one N-CREATE; ``sop_instance_uid`` is '' when the SCU left it to the SCP."""

    def set(
        self, assoc: AssociationInfo, sop_instance_uid: str, modifications: ReceivedDataSet
    ) -> NResponse:
        """Answer one N-SET."""

    def forking(self) -> AbstractContextManager[None]:
        """Around the fork of one worker: what it should inherit, made ready."""


@dataclass(frozen=True)
class Admission:
    """The application's answer to "may this calling AE associate with this called AE?".

    ``policy`` names the per-peer policy that applies (or, when refused, the one whose
    allow-list left the caller out); "" when none does. It goes into the association report.
    """

    allowed: bool
    policy: str = ""


class WorklistApplication(Protocol):
    """What the association engine needs from the worklist side."""

    def procedure_steps(self) -> ProcedureStepApplication | None:
        """The MPPS service negotiated next to the worklist, or None when MPPS is off."""

    def knows_called_ae(self, called_ae: str) -> bool:
        """True if ``called_ae`` is a safe AE title with a directory under the data path."""

    def admit(self, called_ae: str, calling_ae: str) -> Admission:
        """Whether ``calling_ae`` may associate with ``called_ae`` (asked once it is known)."""

    def find(
        self, assoc: AssociationInfo, identifier: Dataset, transfer_syntax_uid: str,
        encoded: bytes = b"",
    ) -> Iterator[FindResponse]:
        """Answer one C-FIND: yield the pending responses, then exactly one final response.

        ``encoded`` is the identifier as received (b"" when there is none): identical bytes
        are an identical query, so the application may key what it prepared on them.
        """


class Outcome(enum.StrEnum):
    """How one connection ended: the ``outcome=`` word of its association log line."""

    RELEASED = "released"  # A-RELEASE-RQ answered: the normal end
    ABORTED = "aborted"  # A-ABORT from the peer, or sent for a malformed or unexpected PDU
    REJECTED = "rejected"  # A-ASSOCIATE-RJ: called AE, presentation contexts, --refuse, --reject
    REFUSED_LIMIT = "refused-limit"  # A-ASSOCIATE-RJ 2/3/2: over the association limit
    REFUSED = "refused"  # closed by the access rules (hosts.allow/deny) before anything was read
    TLS_FAILED = "tls-failed"  # the TLS handshake failed or timed out
    CLOSED = "closed"  # the peer closed or broke the connection without releasing
    TIMEOUT = "timeout"  # ACSE, DIMSE or idle timeout
    ERROR = "error"  # the application failed; A-ABORT sent


@dataclass
class AssociationReport:
    """What happened on one association, for the per-association log line."""

    outcome: Outcome
    calling_ae: str = ""
    called_ae: str = ""
    queries: int = 0
    matches: int = 0
    detail: str = ""
    match_counts: list[int] = field(default_factory=list)  # matches of each query, in order
    policy: str = ""  # the per-peer policy that applied ("" when none)
    find_micros: list[int] = field(default_factory=list)  # how long each C-FIND took, in µs
    n_create_statuses: list[int] = field(default_factory=list)  # DIMSE status of each N-CREATE
    n_set_statuses: list[int] = field(default_factory=list)  # DIMSE status of each N-SET
