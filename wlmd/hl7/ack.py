"""Acknowledgements: MSA with AA/AE/AR (original mode) or CA/CE/CR (enhanced mode), and an ERR
segment naming the field at fault, in the form of the message's own HL7 version.

In enhanced mode MSH-15 asks for the accept (commit) acknowledgement and MSH-16 for the
application acknowledgement. A message is applied before either is sent, so both are known at
once: the application acknowledgement follows the accept acknowledgement on the same
connection, and asks for no acknowledgement back (its MSH-15 and MSH-16 are NE).

Built from the received header bytes, not from a parse, so that even a message that cannot be
parsed gets a NAK its sender can match (MSA-2 is its MSH-10 whenever that can be read).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from wlmd.hl7.message import CODE_TEXT, Hl7Error

ENHANCED_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Header:
    """The received MSH as raw (still escaped) field values."""

    fields: list[str]  # fields[n] is MSH-n (fields[1] the field separator)

    @classmethod
    def of(cls, raw: bytes) -> Header:
        segment = raw.replace(b"\n", b"\r").split(b"\r", 1)[0].decode("latin-1")
        default = cls(["MSH", "|", "^~\\&"])
        if not segment.startswith("MSH") or len(segment) < 8:
            return default
        separator = segment[3]
        fields = ["MSH", separator, *segment[4:].split(separator)]
        if not (_is_delimiter(separator) and 2 <= len(fields[2]) <= 5
                and all(map(_is_delimiter, fields[2]))
                and len(set(separator + fields[2])) == len(fields[2]) + 1):
            return default  # not a usable header: answer in the standard delimiters
        return cls(fields)

    def get(self, number: int) -> str:
        return self.fields[number] if number < len(self.fields) else ""

    @property
    def version(self) -> str:
        return self.get(12).split(self.component_separator)[0] or "2.5.1"

    @property
    def component_separator(self) -> str:
        return (self.get(2) or "^")[0]

    def accept_ack_type(self) -> str:
        """MSH-15 in enhanced mode ("AL" when only MSH-16 was sent); "" in original mode."""
        if not (self.get(15) or self.get(16)):
            return ""
        return (self.get(15) or "AL").upper()

    def application_ack_type(self) -> str:
        """MSH-16 in enhanced mode ("NE" when only MSH-15 was sent); "" in original mode."""
        if not (self.get(15) or self.get(16)):
            return ""
        return (self.get(16) or "NE").upper()


def _wanted(ack_type: str, success: bool) -> bool:
    """Whether an enhanced-mode acknowledgement of type ``ack_type`` (table 0155) is due.

    Only NE, and ER or SU for the other outcome, ask for none: an unknown type gets one.
    """
    return not (ack_type == "NE" or (ack_type == "ER" and success)
                or (ack_type == "SU" and not success))


def acknowledgement(header: Header, code: str, error: Hl7Error | None, codec: str) -> bytes | None:
    """The ACK to send for ``code`` (AA/AE/AR); None when enhanced mode asked for none."""
    accept = header.accept_ack_type()
    if not accept:
        return _message(header, code, error, codec)
    if not _wanted(accept, code == "AA"):
        return None
    return _message(header, ENHANCED_CODES[code], error, codec)


def application_acknowledgement(header: Header, code: str, error: Hl7Error | None,
                                codec: str) -> bytes | None:
    """Enhanced mode's application ACK (AA/AE/AR) if MSH-16 asks for it for ``code``.

    Unlike the accept ACK, an unknown MSH-16 gets none: this is a second, unsolicited message.
    """
    ack_type = header.application_ack_type()
    if ack_type not in ("AL", "ER", "SU") or not _wanted(ack_type, code == "AA"):
        return None
    return _message(header, code, error, codec, no_ack_back=True)


def _message(header: Header, code: str, error: Hl7Error | None, codec: str,
             no_ack_back: bool = False) -> bytes:
    """An ACK message answering ``header`` with MSA-1 ``code``."""
    separator = header.get(1) or "|"
    encoding = header.get(2) or "^~\\&"
    component = encoding[0]
    trigger = header.get(9).split(component)[1] if component in header.get(9) else ""
    msh = ["MSH", encoding, header.get(5) or "WLMD", header.get(6), header.get(3),
           header.get(4), time.strftime("%Y%m%d%H%M%S", time.gmtime()), "",
           component.join(["ACK", trigger, "ACK"]), "WLMD" + secrets.token_hex(8).upper(),
           header.get(11) or "P", header.get(12) or "2.5.1", "", "",
           *(("NE", "NE") if no_ack_back else ("", "")), "", header.get(18)]
    msa = ["MSA", code, header.get(10)]
    if error is not None:
        msa.append(_escape(error.reason))
    segments = [separator.join(msh).rstrip(separator), separator.join(msa)]
    if error is not None:
        segments.append(separator.join(_err(header, error, encoding)))
    return ("\r".join(segments) + "\r").encode(codec, "replace")


def _err(header: Header, error: Hl7Error, encoding: str) -> list[str]:
    component, subcomponent = encoding[0], encoding[3] if len(encoding) > 3 else "&"
    match = _LOCATION.match(error.location)
    where = [match.group(1), "1", match.group(2)] if match else []
    if match and match.group(3):
        where += ["1", match.group(3)]
    text = CODE_TEXT.get(error.code, "")
    if _before_25(header.version):  # ERR-1: segment^seq^field^code&text (ELD)
        eld = [*where[:3], subcomponent.join([error.code, text])] if where else [
            "", "", "", subcomponent.join([error.code, text])]
        return ["ERR", component.join(eld)]
    severity = "E"
    return ["ERR", "", component.join(where), component.join([error.code, text, "HL70357"]),
            severity, "", "", "", _escape(error.reason)]


def _is_delimiter(character: str) -> bool:
    return character.isascii() and character.isprintable() and not character.isalnum() \
        and character != " "


def _before_25(version: str) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1] if len(parts) > 1 else 0)) < (2, 5)
    except ValueError:
        return False


def _escape(text: str) -> str:
    text = " ".join(text.split())
    for plain, escaped in _ESCAPES:
        text = text.replace(plain, escaped)
    return text
