"""One received message from raw bytes to its acknowledgement, journal first.

received → journal (fsync) → decode and check → map → plan (nothing written yet) → apply
through the writer (fsync) → journal ``done`` → ACK. So AA is only ever sent for a change that
is on disk, and a message that fails at any step changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from wlmd.hl7.ack import Header, acknowledgement, application_acknowledgement
from wlmd.hl7.charsets import by_hl7_name, msh18_of
from wlmd.hl7.journal import Journal, Received
from wlmd.hl7.mapping import Entry, Mapping
from wlmd.hl7.message import INTERNAL_ERROR, Hl7Error, OrderMessage
from wlmd.hl7.orders import OrderBook, Outcome
from wlmd.worklist.writer import WorklistWriter

LOGGER = logging.getLogger("wlmd.hl7")


@dataclass(frozen=True)
class ApplicationRule:
    """An allowed MSH-3 sending application, optionally with its MSH-4 facility."""

    application: str
    facility: str = "*"

    @classmethod
    def parse_list(cls, text: str | None) -> tuple[ApplicationRule, ...]:
        """``"RIS, PACS^HOSPITAL"`` → rules; None or "" allows every sender."""
        rules = []
        for item in (text or "").split(","):
            if item.strip():
                application, _, facility = item.strip().partition("^")
                rules.append(cls(application.upper(), facility.upper() or "*"))
        return tuple(rules)

    def allows(self, application: str, facility: str) -> bool:
        return self.application == application.upper() and self.facility in ("*",
                                                                            facility.upper())


@dataclass(frozen=True)
class Result:
    """What became of one message."""

    ack_code: str
    reply: bytes | None  # original mode's ACK, or enhanced mode's accept ACK if asked for
    outcomes: tuple[Outcome, ...] = ()
    error: Hl7Error | None = None
    application_ack: bytes | None = None  # enhanced mode's application ACK if MSH-16 asks


class Intake:
    """Applies order messages; used by the MLLP child, ``test`` and ``replay``."""

    def __init__(self, root: Path, mapping: Mapping, journal: Journal | None = None,
                 applications: tuple[ApplicationRule, ...] = (), *,
                 replaying: bool = False) -> None:
        self.mapping = mapping
        self.journal = journal
        self.applications = applications
        self.replaying = replaying  # ``replay``: messages applied before, in journal order
        self.book = OrderBook(WorklistWriter(root))

    def recover(self) -> int:
        """Apply the messages a crash left between receipt and ACK; returns how many."""
        if self.journal is None:
            return 0
        pending = self.journal.pending()
        for record in pending:
            if self.journal.accepted(record.key):  # a resend of what was applied before it
                self.journal.done(record, "AA", "duplicate")
                continue
            result = self._process(record.raw, reapplying=True)
            self.journal.done(record, result.ack_code, _detail(result.error))
            LOGGER.warning("applied journal message %d left unfinished by a crash: %s",
                           record.seq, result.ack_code)
        return len(pending)

    def handle(self, raw: bytes, peer: str) -> Result:
        """Journal, apply and acknowledge one message (never raises for bad input)."""
        record: Received | None = None
        if self.journal is not None:
            record = self.journal.received(raw, peer, _key(raw))
            if self.journal.accepted(record.key):
                result = self._reply(raw, "AA", None, ())
                self.journal.done(record, "AA", "duplicate")
                LOGGER.info("HL7 %s from %s: duplicate of an accepted message, not applied",
                            _control_id(raw), peer)
                return result
        result = self._process(raw, reapplying=self.replaying)
        if record is not None and self.journal is not None:
            self.journal.done(record, result.ack_code, _detail(result.error))
        return result

    def entries(self, raw: bytes) -> list[Entry]:
        """What the message would produce, without writing (``test``)."""
        message = self._decode(raw)
        return [entry for _group, entry in self.mapping.entries(message)]

    def _process(self, raw: bytes, *, reapplying: bool) -> Result:
        try:
            message = self._decode(raw)
            actions = self.book.plan(message, self.mapping.entries(message),
                                     reapplying=reapplying)
            outcomes = tuple(self.book.apply(actions))
        except Hl7Error as error:
            LOGGER.info("HL7 %s refused (%s): %s %s", _control_id(raw), error.ack,
                        error.location or "-", error.code)
            LOGGER.debug("HL7 %s refused: %s", _control_id(raw), error.reason)
            return self._reply(raw, error.ack, error, ())
        except Exception as exc:  # a bug must not take the listener down: AE, nothing lost
            LOGGER.exception("HL7 %s: internal error", _control_id(raw))
            internal = Hl7Error(f"internal error: {type(exc).__name__}", code=INTERNAL_ERROR)
            return self._reply(raw, "AE", internal, ())
        LOGGER.info("HL7 %s %s: %s", _control_id(raw), "^".join(message.message_type),
                    ", ".join(o.value for o in outcomes))
        return self._reply(raw, "AA", None, outcomes)

    def _decode(self, raw: bytes) -> OrderMessage:
        message = OrderMessage.decode(raw, self.mapping.default_charset)
        application, facility = message.sender
        if self.applications and not any(rule.allows(application, facility)
                                         for rule in self.applications):
            raise Hl7Error("sending application/facility not allowed", location="MSH-3",
                           code=INTERNAL_ERROR, ack="AR")
        message.check_type()
        return message

    def _reply(self, raw: bytes, code: str, error: Hl7Error | None,
               outcomes: tuple[Outcome, ...]) -> Result:
        charset = by_hl7_name(msh18_of(raw) or self.mapping.default_charset)
        codec, header = charset.codec if charset else "ascii", Header.of(raw)
        return Result(code, acknowledgement(header, code, error, codec), outcomes, error,
                      application_acknowledgement(header, code, error, codec))


def _key(raw: bytes) -> str:
    """MSH-3|MSH-4|MSH-10: what makes a resent message recognisable."""
    header = Header.of(raw)
    control_id = header.get(10)
    return f"{header.get(3)}|{header.get(4)}|{control_id}" if control_id else ""


def _control_id(raw: bytes) -> str:
    return Header.of(raw).get(10)[:40] or "(no MSH-10)"


def _detail(error: Hl7Error | None) -> str:
    return "" if error is None else f"{error.location} {error.code}: {error.reason}"
