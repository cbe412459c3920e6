"""The messages ``wlmscpfs -v`` logs for a C-FIND, in its words, for ``wlmd -v`` and ``-d``.

Administrators debug with these (and diff them against wlmscpfs's), so texts, dumps and
separators are DCMTK's (``wlmactmg.cc``, ``wldsfs.cc``, ``wlfsim.cc``). wlmd adds one thing:
for a file that does not match, the first key that decided it. The callers build these only
when information level is enabled: they hold patient data and cost time.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from wlmd.dicom.dimse import decode_dataset
from wlmd.dicom.dump import dump_dataset, dump_elements
from wlmd.dicom.types import FindResponse
from wlmd.worklist.explain import Explainer
from wlmd.worklist.query import PreparedQuery
from wlmd.worklist.records import WorklistRecord

LOGGER = logging.getLogger(__name__)
RULE = "=" * 29  # between the steps of a C-FIND
RESPONSE_RULE = "-" * 29  # after each response dump
# DCMTK's DU_cfindStatusString
STATUS_TEXTS = {
    0x0000: "Success",
    0xFF00: "Pending",
    0xFF01: "Pending: WarningUnsupportedOptionalKeys",
    0xFE00: "Cancel: MatchingTerminatedDueToCancelRequest",
    0xA700: "Refused: OutOfResources",
    0xA800: "Refused: SOPClassNotSupported",
    0xA900: "Error: DataSetDoesNotMatchSOPClass",
}


def enabled() -> bool:
    """True when these messages are to be built (information level or below)."""
    return LOGGER.isEnabledFor(logging.INFO)


def status_text(status: int) -> str:
    """DCMTK's name of a C-FIND status."""
    if status in STATUS_TEXTS:
        return STATUS_TEXTS[status]
    if status & 0xF000 == 0xC000:
        return "Failed: UnableToProcess"
    return f"Unknown Status: 0x{status:x}"


class FindLog:
    """The messages of one C-FIND, step by step."""

    def __init__(self, transfer_syntax: str) -> None:
        self._transfer_syntax = transfer_syntax

    def request(self, identifier: Dataset) -> None:
        """The identifier as received."""
        LOGGER.info("Find SCP Request Identifiers:\n\n%s\n\n%s",
                    "\n".join(dump_dataset(identifier, self._transfer_syntax)), RULE)

    def expanded(self, query: PreparedQuery) -> None:
        """The search mask once checked, cleaned and expanded."""
        LOGGER.info("Expanded Find SCP Request Identifiers:\n\n%s\n\n%s",
                    "\n".join(dump_dataset(query.mask, self._transfer_syntax)), RULE)

    def candidates(self, directory: str, query: PreparedQuery, records: list[WorklistRecord],
                   matched: int) -> None:
        """One pair of lines per worklist file, the reason of each mismatch, the results."""
        LOGGER.info("Determining matching records from worklist files")
        if not records:
            LOGGER.info("<no files found>")
        explainer = Explainer(query)
        for record in records:
            path = os.path.join(directory, record.name)
            LOGGER.info('Checking whether worklist file "%s" is complete', path)
            LOGGER.debug("Checking whether dataset is complete ...")
            reason = explainer.first_mismatch(record.dataset)
            if reason is None:
                LOGGER.info('Information from worklist file "%s" matches query', path)
            else:
                LOGGER.info('Information from worklist file "%s" does not match query: %s',
                            path, reason)
        LOGGER.info("Matching results: %d matching records found in worklist files", matched)
        for number in range(matched):
            LOGGER.info("  Processing matching result no. %d", number)

    def responses(self, responses: Iterator[FindResponse]) -> Iterator[FindResponse]:
        """``responses``, each logged as it is handed out: status, dataset, status detail."""
        try:
            for number, response in enumerate(responses, 1):
                if number == 1:
                    LOGGER.info("%s", RULE)
                LOGGER.info("Worklist Find SCP Response %d (%s)", number,
                            status_text(response.status))
                if response.identifier is not None:
                    LOGGER.info("%s\n%s", self._dump_response(response.identifier),
                                RESPONSE_RULE)
                _log_status_detail(response)
                yield response
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()

    def _dump_response(self, identifier: Dataset | bytes) -> str:
        if isinstance(identifier, bytes):
            limit = max(1 << 20, len(identifier) * 1024)  # inflating wlmd's own deflated bytes
            identifier = decode_dataset(identifier, self._transfer_syntax, limit)
        lines = dump_dataset(identifier, self._transfer_syntax, response=True)
        return "\n" + "\n".join(lines) + "\n"


def _log_status_detail(response: FindResponse) -> None:
    """What wlmscpfs warns with a failed status: offending elements, then the comment."""
    if response.status == 0xA900:
        offending = b"".join(struct.pack("<HH", tag >> 16, tag & 0xFFFF)
                             for tag in response.offending_elements)
        _warn_detail(0x00000901, "AT", offending)
    if response.status in (0xA900, 0xA700):
        comment = (response.error_comment or "").encode("latin-1", "replace")
        _warn_detail(0x00000902, "LO", comment + b" " * (len(comment) % 2))


def _warn_detail(tag: int, vr: str, value: bytes) -> None:
    if not value:  # wlmscpfs logs an empty warning for a detail it does not have
        LOGGER.warning("")
        return
    detail = Dataset()
    detail[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    lines = dump_elements(detail, ExplicitVRLittleEndian)
    LOGGER.warning("Status Detail:\n%s\n", "\n".join(lines))
