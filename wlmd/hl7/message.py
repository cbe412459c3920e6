"""An order message: decoded per MSH-18, parsed by python-hl7, split into order groups.

Every refusal is an ``Hl7Error`` that names the field at fault, so that the ACK's ERR segment
can tell the RIS what to fix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import hl7  # type: ignore[import-untyped]
import hl7.util  # type: ignore[import-untyped]
from hl7.containers import Message, Segment  # type: ignore[import-untyped]

from wlmd.hl7.charsets import Charset, by_hl7_name, msh18_of

# python-hl7 logs the field text of a bad escape sequence at ERROR, under a logger named by its
# file path: patient data must stay out of the default log, and the ACK already says what failed.
logging.getLogger(hl7.util.__file__).setLevel(logging.CRITICAL)

SUPPORTED = {("ORM", "O01"), ("OMI", "O23"), ("OMG", "O19")}
GROUP_SEGMENTS = {"ORC", "OBR", "TQ1", "TQ2", "IPC", "ZDS", "NTE", "OBX", "DG1"}
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$")

# HL7 table 0357 (message error condition codes) used in ERR segments
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT = "201"
UNSUPPORTED_VERSION = "203"
UNKNOWN_KEY = "204"
DUPLICATE_KEY = "205"
RECORD_LOCKED = "206"
INTERNAL_ERROR = "207"
CODE_TEXT = {
    "100": "Segment sequence error", "101": "Required field missing",
    "102": "Data type error", "103": "Table value not found",
    "200": "Unsupported message type", "201": "Unsupported event code",
    "203": "Unsupported version id", "204": "Unknown key identifier",
    "205": "Duplicate key identifier", "206": "Application record locked",
    "207": "Application internal error",
}


class Hl7Error(Exception):
    """A message that cannot be applied: ``ack`` is AE (error) or AR (reject)."""

    def __init__(self, reason: str, *, location: str = "", code: str = INTERNAL_ERROR,
                 ack: str = "AE") -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location  # "PID-5", "ORC-1" ... ("" when no field is at fault)
        self.code = code
        self.ack = ack


@dataclass(frozen=True)
class Location:
    """``SEG-field[.component[.subcomponent]]``, 1-based as HL7 counts."""

    segment: str
    field: int
    component: int = 0  # 0: the whole field
    subcomponent: int = 0

    @classmethod
    def parse(cls, text: str) -> Location:
        match = _LOCATION.match(text.strip().upper())
        if match is None:
            raise ValueError(f"not an HL7 field location (like PID-3.1): {text!r}")
        segment, field, component, subcomponent = match.groups()
        return cls(segment, int(field), int(component or 0), int(subcomponent or 0))

    def __str__(self) -> str:
        parts = [f"{self.segment}-{self.field}"]
        if self.component:
            parts.append(str(self.component))
        if self.subcomponent:
            parts.append(str(self.subcomponent))
        return ".".join(parts)


@dataclass
class OrderGroup:
    """One ORC and the segments that follow it up to the next ORC."""

    segments: dict[str, list[Segment]]

    def first(self, segment_id: str) -> Segment | None:
        found = self.segments.get(segment_id)
        return found[0] if found else None


class OrderMessage:
    """A parsed order message with the header values intake needs.

    Field values are looked up once: the mapping reads some fields for several attributes and
    tries several locations per attribute, and python-hl7's look-ups walk the whole message.
    """

    def __init__(self, raw: bytes, charset: Charset, message: Message) -> None:
        self.raw = raw
        self.charset = charset
        self.message = message
        self.groups = _order_groups(message)
        self._first: dict[str, Segment] = {}
        for segment in message:
            self._first.setdefault(str(segment[0][0]), segment)
        self._values: dict[tuple[Location, int, int], str] = {}

    @classmethod
    def decode(cls, raw: bytes, default_charset: str = "ASCII") -> OrderMessage:
        """Decode ``raw`` with its MSH-18 charset and parse it; Hl7Error (AR) if it cannot be."""
        raw = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
        if not raw.startswith(b"MSH") or len(raw) < 8:
            raise Hl7Error("not an HL7 v2 message (no MSH segment)", location="MSH-1",
                           code=REQUIRED_FIELD_MISSING, ack="AR")
        name = msh18_of(raw) or default_charset
        charset = by_hl7_name(name)
        if charset is None:
            raise Hl7Error(f"character set {name!r} is not supported", location="MSH-18",
                           code=TABLE_VALUE_NOT_FOUND, ack="AR")
        try:
            text = raw.decode(charset.codec)
        except UnicodeDecodeError as exc:
            raise Hl7Error(f"bytes not valid in character set {charset.hl7} at offset "
                           f"{exc.start}", location="MSH-18", code=DATA_TYPE_ERROR,
                           ack="AR") from None
        try:
            message = hl7.parse(text)
            message.segment("MSH")
        except (ValueError, IndexError, KeyError, AttributeError, AssertionError) as exc:
            raise Hl7Error(f"message cannot be parsed: {exc}", location="MSH-1",
                           code=DATA_TYPE_ERROR, ack="AR") from None
        return cls(raw, charset, message)

    def header(self, field: int, component: int = 1) -> str:
        return self.value(Location("MSH", field, component))

    @property
    def control_id(self) -> str:
        return self.header(10)

    @property
    def version(self) -> str:
        return self.header(12)

    @property
    def message_type(self) -> tuple[str, str]:
        return self.header(9, 1).upper(), self.header(9, 2).upper()

    @property
    def sender(self) -> tuple[str, str]:
        """(MSH-3 sending application, MSH-4 sending facility), namespace IDs."""
        return self.header(3), self.header(4)

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15/16 present: enhanced acknowledgement mode."""
        return bool(self.header(15) or self.header(16))

    def check_type(self) -> None:
        kind, event = self.message_type
        if not kind:
            raise Hl7Error("MSH-9 message type is empty", location="MSH-9",
                           code=REQUIRED_FIELD_MISSING, ack="AR")
        if kind not in {k for k, _ in SUPPORTED}:
            raise Hl7Error(f"message type {kind} is not an order message", location="MSH-9",
                           code=UNSUPPORTED_MESSAGE_TYPE, ack="AR")
        if (kind, event) not in SUPPORTED:
            raise Hl7Error(f"event {kind}^{event} is not supported", location="MSH-9.2",
                           code=UNSUPPORTED_EVENT, ack="AR")
        if not self.version.startswith("2."):
            raise Hl7Error(f"HL7 version {self.version!r} is not supported", location="MSH-12",
                           code=UNSUPPORTED_VERSION, ack="AR")
        if not self.control_id:
            raise Hl7Error("MSH-10 message control ID is empty", location="MSH-10",
                           code=REQUIRED_FIELD_MISSING, ack="AR")
        if not self.groups:
            raise Hl7Error("no ORC segment", location="ORC-1", code=REQUIRED_FIELD_MISSING)

    def segment(self, segment_id: str, group: OrderGroup | None = None) -> Segment | None:
        """The group's segment for order segments, else the message's first of that kind."""
        if group is not None and segment_id in GROUP_SEGMENTS:
            return group.first(segment_id)
        return self._first.get(segment_id)

    def value(self, location: Location, group: OrderGroup | None = None,
              repetition: int = 1) -> str:
        """The unescaped text at ``location`` ("" when absent); a whole field's first component
        when no component is named."""
        segment = self.segment(location.segment, group)
        if segment is None:
            return ""
        key = (location, id(segment), repetition)
        found = self._values.get(key)
        if found is None:
            try:
                found = str(segment.extract_field(1, location.field, repetition,
                                                  location.component or 1,
                                                  location.subcomponent or 1))
            except (IndexError, TypeError):
                found = ""
            self._values[key] = found
        return found

    def components(self, location: Location, group: OrderGroup | None = None) -> list[str]:
        """Every component of the field's first repetition (for names and codes)."""
        count = _component_count(self.segment(location.segment, group), location.field)
        return [self.value(Location(location.segment, location.field, n), group)
                for n in range(1, count + 1)]


def _component_count(segment: Segment | None, field: int) -> int:
    if segment is None:
        return 0
    if field >= len(segment):  # python-hl7 numbers MSH fields as HL7 does
        return 0
    value = segment[field]
    if isinstance(value, str):
        return 1
    first = value[0] if len(value) else ""
    return 1 if isinstance(first, str) else len(first)


def _order_groups(message: Message) -> list[OrderGroup]:
    groups: list[OrderGroup] = []
    for segment in message:
        name = str(segment[0][0])
        if name == "ORC":
            groups.append(OrderGroup({}))
        if groups and name in GROUP_SEGMENTS:
            groups[-1].segments.setdefault(name, []).append(segment)
    return groups
