"""Values between DICOM character sets: decode as stored, re-encode as the peer reads them.

A target is the (0008,0005) value the peer declared or was configured with: one defined term,
or the ISO 2022 forms pydicom handles ('ISO 2022 IR 6\\ISO 2022 IR 87' and the like). A
character the target cannot hold goes through the configured fallback; ``Conversion`` says
whether that happened, so the caller can log it once per entry.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from anyascii import anyascii
from pydicom.charset import convert_encodings, decode_bytes, encode_string

from wlmd.policy.model import Fallback

PN_DELIMITERS = {0x5C, 0x3D, 0x5E}  # '\\', '=', '^': not part of a component
TEXT_DELIMITERS = {0x5C}
_DEFAULT_REPERTOIRE = ("", "ISO_IR 6", "ISO 2022 IR 6")


@dataclass(frozen=True)
class Charset:
    """A parsed (0008,0005) value."""

    terms: tuple[str, ...]

    @classmethod
    @functools.lru_cache(maxsize=256)
    def of(cls, raw: bytes | str) -> Charset:
        """From the element's value (bytes as stored, or text): terms split at '\\'."""
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        terms = tuple(term.strip(" \0") for term in text.split("\\"))
        return cls(terms if any(terms) else ("",))

    @property
    def value(self) -> bytes:
        """The (0008,0005) value to send."""
        return "\\".join(self.terms).encode("ascii")

    @property
    def is_default(self) -> bool:
        return all(term in _DEFAULT_REPERTOIRE for term in self.terms)

    @functools.cached_property
    def codecs(self) -> list[str]:
        """pydicom's Python codec names (the default repertoire reads as pydicom reads it)."""
        return list(convert_encodings(list(self.terms)))

    def decode(self, raw: bytes, person_name: bool) -> str:
        return decode_bytes(raw, self.codecs, PN_DELIMITERS if person_name else TEXT_DELIMITERS)

    def can_hold(self, ch: str) -> bool:
        """True if some term of this set encodes ``ch`` (the default repertoire is ASCII)."""
        return _can_hold(self.terms, ch)

    def encode(self, text: str) -> bytes:
        """``text`` (every character already representable) in this set, escapes included."""
        if text.isascii():
            return text.encode("ascii")
        return encode_string(text, self.codecs)


@functools.lru_cache(maxsize=65536)
def _can_hold(terms: tuple[str, ...], ch: str) -> bool:
    if ch.isascii():
        return True
    for term, codec in zip(terms, convert_encodings(list(terms)), strict=True):
        if term in _DEFAULT_REPERTOIRE:
            continue
        try:
            ch.encode(codec)  # strict: pydicom's encode_string would replace, not fail
        except (UnicodeError, LookupError):
            continue
        return True
    return False


@dataclass
class Conversion:
    """The outcome of converting the values of one entry."""

    fallback_used: bool = False
    omitted: bool = False


def convert_text(text: str, target: Charset, fallback: Fallback, person_name: bool,
                 outcome: Conversion) -> str | None:
    """``text`` with every character ``target`` cannot hold replaced; None to omit the entry."""
    if all(target.can_hold(ch) for ch in text):
        return text
    outcome.fallback_used = True
    if fallback is Fallback.OMIT:
        outcome.omitted = True
        return None
    out = []
    for ch in text:
        if target.can_hold(ch):
            out.append(ch)
        elif fallback is Fallback.TRANSLITERATE:
            out.append(_transliterated(ch, person_name))
        else:
            out.append("?")
    return "".join(out)


def _transliterated(ch: str, person_name: bool) -> str:
    """anyascii's Latin spelling, without characters that would split values or names."""
    latin = anyascii(ch)
    forbidden = "\\^=" if person_name else "\\"
    latin = "".join(c for c in latin if c not in forbidden and c.isprintable())
    return latin or "?"


def is_plain_ascii(raw: bytes) -> bool:
    """ASCII without ISO 2022 escapes: reads the same in every character set wlmd answers in."""
    return raw.isascii() and b"\x1b" not in raw
