"""Read and check the ``[[policy]]`` tables of wlmd.conf (``--check-config`` runs this too).

Every mistake is refused with the table's position and the key, so that a policy never half
applies: an unknown key, a pattern or title that cannot be an AE title, a key path findscu
would refuse, an attribute wlmd can neither match on nor return, an unknown character set.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

from pydicom.charset import python_encoding

from wlmd.findscu.keys import BadKeyPath, OverrideKey, parse_key
from wlmd.policy.model import (
    QUERY_CHARSET,
    Fallback,
    LimitAction,
    NameMatching,
    Pattern,
    PeerPolicy,
    PolicySet,
)
from wlmd.worklist.keys import is_matching_key, is_return_key

MAX_AE_LENGTH = 16
Choice = TypeVar("Choice", bound=enum.Enum)


class PolicyError(ValueError):
    """A ``[[policy]]`` table wlmd refuses; the message names the table and the key.

    ``table`` is the table's 1-based position (0: not about one table), for the line number.
    """

    def __init__(self, message: str, table: int = 0) -> None:
        super().__init__(message)
        self.table = table


def parse_policies(raw: object) -> PolicySet:
    """The ``policy`` value of a parsed TOML document (an array of tables) as a PolicySet."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise PolicyError("expected [[policy]] tables")
    policies = tuple(_policy(table, n) for n, table in enumerate(raw, 1))
    names = [p.name for p in policies]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise PolicyError(f"two policies are named {duplicate!r}")
    return PolicySet(policies)


def _policy(table: dict[str, Any], number: int) -> PeerPolicy:
    name = table.get("name", f"policy-{number}")
    where = f"[[policy]] #{number} ({name})" if "name" in table else f"[[policy]] #{number}"
    unknown = sorted(set(table) - set(_READERS))
    if unknown:
        raise PolicyError(f"{where}: unknown setting {unknown[0]!r}", number)
    values: dict[str, object] = {}
    for key, value in table.items():
        try:
            values[key] = _READERS[key](value)
        except (PolicyError, ValueError) as exc:
            raise PolicyError(f"{where}: {key}: {exc}", number) from None
    if values.get("allow_calling") is not None and "calling_ae" in values:
        raise PolicyError(f"{where}: allow_calling is per called AE: leave calling_ae out",
                          number)
    values["name"] = name if isinstance(name, str) and name else _text(name)
    return PeerPolicy(**values)  # type: ignore[arg-type]


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError("expected a non-empty string")
    return value


def _ae(value: object) -> str:
    text = _text(value)
    if len(text) > MAX_AE_LENGTH or "\\" in text or any(ord(c) < 0x20 or ord(c) > 0x7E
                                                        for c in text):
        raise PolicyError(f"{text!r} is not an AE title (1-16 ASCII characters, no backslash)")
    return text


def _pattern(value: object) -> Pattern:
    text = _text(value)
    if "\\" in text or any(ord(c) < 0x20 or ord(c) > 0x7E for c in text):
        raise PolicyError(f"{text!r} is not an AE title pattern")
    return Pattern(text)


def _patterns(value: object) -> tuple[Pattern, ...]:
    return tuple(_pattern(v) for v in _list(value))


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise PolicyError("expected a list")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise PolicyError("expected true or false")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError("expected an integer >= 0")
    return value


def _choice(kind: type[Choice]) -> Callable[[object], Choice]:
    def read(value: object) -> Choice:
        for member in kind:
            if member.value == value:
                return member
        raise PolicyError("expected one of " + ", ".join(repr(m.value) for m in kind))
    return read


def _keys(*, with_value: bool) -> Callable[[object], tuple[OverrideKey, ...]]:
    """findscu ``-k`` paths to worklist keys, with ``=value`` (coercion) or without."""
    def read(value: object) -> tuple[OverrideKey, ...]:
        keys = []
        for item in _list(value):
            try:
                key = parse_key(_text(item))
            except BadKeyPath as exc:
                raise PolicyError(f"{item!r}: {exc}") from None
            if with_value and key.value is None:
                raise PolicyError(f"{item!r}: expected KEY=VALUE")
            if not with_value and key.value is not None:
                raise PolicyError(f"{item!r}: a return key takes no value")
            _check_worklist_key(key, matching=with_value)
            keys.append(key)
        return tuple(keys)
    return read


def _check_worklist_key(key: OverrideKey, *, matching: bool) -> None:
    """Only keys wlmd matches on (coercion) or returns (return keys), at their level."""
    parent = None
    for step in key.steps:
        last = step is key.steps[-1]
        known = is_matching_key(step.tag, parent) if matching and last else (
            is_matching_key(step.tag, parent) or is_return_key(step.tag, parent))
        if not known:
            what = "matching" if matching and last else "worklist"
            raise PolicyError(f"{key.text!r}: not a {what} key at this level")
        if not last and step.item not in (None, 0):
            raise PolicyError(f"{key.text!r}: only item [0] of a sequence can be set")
        parent = step.tag


def _charset(value: object) -> str:
    """``query`` or a (0008,0005) value pydicom can encode (ISO 2022 forms with '\\')."""
    text = _text(value)
    if text == QUERY_CHARSET:
        return text
    for term in text.split("\\"):
        if term.strip() and python_encoding.get(term.strip()) is None:
            raise PolicyError(f"unknown character set {term.strip()!r}")
    return text


def _stations(value: object) -> tuple[str, ...]:
    return tuple(_ae(v) for v in _list(value))


_READERS: dict[str, Callable[[object], object]] = {
    "name": _text,
    "called_ae": _pattern,
    "calling_ae": _pattern,
    "allow_calling": _patterns,
    "station_from_caller": _bool,
    "stations": _stations,
    "set_keys": _keys(with_value=True),
    "override_keys": _keys(with_value=True),
    "date_window_days": _count,
    "add_return_keys": _keys(with_value=False),
    "drop_return_keys": _keys(with_value=False),
    "max_answers": _count,
    "on_too_many": _choice(LimitAction),
    "name_matching": _choice(NameMatching),
    "charset": _charset,
    "charset_fallback": _choice(Fallback),
}


# The commented example the shipped wlmd.conf ends with (TOML tables come after plain keys).
EXAMPLE = """
# Per-peer policy (wlmd.conf(5), POLICY): [[policy]] tables, tried in file order; the first
# whose called_ae and calling_ae patterns (*, ?, [...]) match an association applies to it.
# No table: every peer is answered exactly as wlmscpfs answers.
# policy = (not set)
#
#[[policy]]
#name = "ct-room-1"                  # named in the association log line (policy=ct-room-1)
#called_ae = "WLMD"                  # default "*"
#calling_ae = "CT*"                  # default "*"
#station_from_caller = true          # no ScheduledStationAETitle (or "*"): the caller's
#stations = ["CT1", "CT1B"]          # ... or these station AE titles instead
#set_keys = ["ScheduledProcedureStepSequence[0].Modality=CT"]   # when the query has none
#override_keys = []                  # whatever the query says
#date_window_days = 1                # no SPS start date in the query: today -1 .. today +1
#add_return_keys = ["PatientWeight"]
#drop_return_keys = ["PatientBirthDate"]
#max_answers = 200
#on_too_many = "partial"             # "refuse" (0xA700), "partial" (N, then 0xA700), "truncate"
#name_matching = "fold"              # "exact", "fold" (case, accents), "phonetic"
#charset = "query"                   # answer in the query's (0008,0005), or e.g. "ISO_IR 100"
#charset_fallback = "transliterate"  # or "replace" ('?') or "omit" (leave the entry out)
#
#[[policy]]
#called_ae = "MRWL"
#allow_calling = ["MR1", "MR2"]      # other callers: A-ASSOCIATE-RJ 1/1/3
"""
