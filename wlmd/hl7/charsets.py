"""MSH-18 (HL7 table 0211) to a Python codec and a DICOM Specific Character Set.

Only single-byte and UTF-8 sets are taken: ISO 2022 code extensions (several MSH-18 values)
need escape handling that neither the RIS side nor most modalities get right.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Charset:
    """One character set as both sides name it."""

    hl7: str  # MSH-18 value
    codec: str  # Python codec
    dicom: str  # (0008,0005) value; "" for the default repertoire


CHARSETS = (
    Charset("ASCII", "ascii", ""),
    Charset("8859/1", "iso8859_1", "ISO_IR 100"),
    Charset("8859/2", "iso8859_2", "ISO_IR 101"),
    Charset("8859/3", "iso8859_3", "ISO_IR 109"),
    Charset("8859/4", "iso8859_4", "ISO_IR 110"),
    Charset("8859/5", "iso8859_5", "ISO_IR 144"),
    Charset("8859/6", "iso8859_6", "ISO_IR 127"),
    Charset("8859/7", "iso8859_7", "ISO_IR 126"),
    Charset("8859/8", "iso8859_8", "ISO_IR 138"),
    Charset("8859/9", "iso8859_9", "ISO_IR 148"),
    Charset("8859/15", "iso8859_15", "ISO_IR 203"),
    Charset("UNICODE UTF-8", "utf_8", "ISO_IR 192"),
)
BY_HL7 = {c.hl7: c for c in CHARSETS}
BY_DICOM = {c.dicom: c for c in CHARSETS}
ALIASES = {"UTF-8": "UNICODE UTF-8", "UTF8": "UNICODE UTF-8", "": "ASCII",
           "ISO_IR 6": "ASCII"}


def by_hl7_name(name: str) -> Charset | None:
    """The charset MSH-18 names (None: not supported)."""
    key = name.strip().upper()
    return BY_HL7.get(ALIASES.get(key, key))


def by_dicom_name(name: str) -> Charset | None:
    """The charset a (0008,0005) value names (None: not supported)."""
    key = name.strip().upper()
    return BY_DICOM.get("" if key == "ISO_IR 6" else key)


def msh18_of(raw: bytes) -> str:
    """MSH-18 read from the undecoded bytes (the header is ASCII whatever the body's charset).

    MSH-1 is the character after ``MSH``; MSH-18 is the 17th field after it.
    """
    segment = raw.split(b"\r", 1)[0]
    if not segment.startswith(b"MSH") or len(segment) < 4:
        return ""
    fields = segment[4:].split(segment[3:4])
    value = fields[16] if len(fields) > 16 else b""
    repetition = segment[5:6] or b"~"
    return value.split(repetition, 1)[0].decode("ascii", "replace")
