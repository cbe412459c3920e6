"""The configured policies and the choice of one for a peer.

Policies are tried in the order of the configuration file; the first whose ``called_ae`` and
``calling_ae`` patterns both match the association applies to all its queries. Patterns are
shell-style (``*``, ``?``, ``[...]``), case-sensitive as AE titles are. With no policy
configured nothing changes: wlmd answers exactly as wlmscpfs does.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from fnmatch import translate

from wlmd.dicom.types import Admission
from wlmd.findscu.keys import OverrideKey


class LimitAction(enum.Enum):
    """What to do when a query matches more than ``max_answers`` entries."""

    REFUSE = "refuse"  # no answers, final 0xA700 (what --max-responses does)
    PARTIAL = "partial"  # the first max_answers, then final 0xA700 saying how many were left out
    TRUNCATE = "truncate"  # the first max_answers, then success; a warning is logged


class NameMatching(enum.Enum):
    """How person-name (PN) matching keys compare."""

    EXACT = "exact"  # as wlmscpfs: byte for byte, case-sensitive
    FOLD = "fold"  # case- and accent-insensitive
    PHONETIC = "phonetic"  # FOLD, or every name component sounds alike (Metaphone)


class Fallback(enum.Enum):
    """What to do with a character the peer's character set cannot represent."""

    TRANSLITERATE = "transliterate"  # a Latin look-alike (anyascii), else '?'
    REPLACE = "replace"  # '?'
    OMIT = "omit"  # leave the whole entry out of the answers


QUERY_CHARSET = "query"  # answer in the character set the query declares


@dataclass(frozen=True)
class Pattern:
    """An AE title pattern, compiled once."""

    text: str

    def matches(self, title: str) -> bool:
        return _compiled(self.text).match(title) is not None


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(text: str) -> re.Pattern[str]:
    found = _PATTERNS.get(text)
    if found is None:
        found = _PATTERNS[text] = re.compile(translate(text))
    return found


ANY = Pattern("*")


@dataclass(frozen=True)
class PeerPolicy:
    """One ``[[policy]]`` table of wlmd.conf."""

    name: str
    called_ae: Pattern = ANY
    calling_ae: Pattern = ANY
    allow_calling: tuple[Pattern, ...] | None = None  # None: every caller may associate
    station_from_caller: bool = False
    stations: tuple[str, ...] = ()  # station AE titles that stand for the caller
    set_keys: tuple[OverrideKey, ...] = ()  # applied when the query leaves the key universal
    override_keys: tuple[OverrideKey, ...] = ()  # always applied
    date_window_days: int | None = None  # SPS start date today ± N when the query has none
    add_return_keys: tuple[OverrideKey, ...] = ()
    drop_return_keys: tuple[OverrideKey, ...] = ()
    max_answers: int = 0  # 0: no limit
    on_too_many: LimitAction = LimitAction.REFUSE
    name_matching: NameMatching = NameMatching.EXACT
    charset: str | None = None  # None: values as stored; QUERY_CHARSET or a (0008,0005) value
    charset_fallback: Fallback = Fallback.TRANSLITERATE

    def applies_to(self, called_ae: str, calling_ae: str) -> bool:
        return self.called_ae.matches(called_ae) and self.calling_ae.matches(calling_ae)

    def allows(self, calling_ae: str) -> bool:
        return self.allow_calling is None or any(p.matches(calling_ae) for p in self.allow_calling)


@dataclass(frozen=True)
class PolicySet:
    """Every configured policy, in file order."""

    policies: tuple[PeerPolicy, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.policies)

    def for_peer(self, called_ae: str, calling_ae: str) -> PeerPolicy | None:
        """The first policy whose patterns match, or None."""
        return next((p for p in self.policies if p.applies_to(called_ae, calling_ae)), None)

    def admit(self, called_ae: str, calling_ae: str) -> Admission:
        """Every allow-list of a policy for ``called_ae`` must name the caller."""
        for policy in self.policies:
            if policy.called_ae.matches(called_ae) and not policy.allows(calling_ae):
                return Admission(False, policy.name)
        chosen = self.for_peer(called_ae, calling_ae)
        return Admission(True, "" if chosen is None else chosen.name)


NO_POLICY = PolicySet()
