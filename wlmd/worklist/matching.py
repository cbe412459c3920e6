"""Does a worklist record match a prepared query? (docs/compat.md §4; DCMTK wlfsim.cc, dcmatch.cc)

The query is compiled once into small predicates (regexes, pre-parsed date and time ranges)
and cached on the ``PreparedQuery``; each record then costs a few dictionary lookups. Values
are compared as DCMTK compares them: raw byte strings split at backslashes, normalised per VR
(leading and trailing spaces for AE/CS/LO/SH, trailing only for PN/DA/TM), case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from pydicom import Dataset

from wlmd.worklist.keys import ROOT_MATCHING_KEYS, MatchingKeys
from wlmd.worklist.query import Elements, PreparedQuery, element_vr, value_of

Predicate = Callable[[Elements], bool]
ValueTest = Callable[[bytes], object]  # truthy if the value matches (a regex's fullmatch, too)
Date = tuple[int, int, int]


class _Comparable(Protocol):
    def __le__(self, other: Any, /) -> bool: ...
    def __ge__(self, other: Any, /) -> bool: ...


Ordered = TypeVar("Ordered", bound=_Comparable)  # a parsed date, time or date and time


@dataclass(frozen=True)
class _VRRule:
    """How DCMTK treats one VR: non-significant characters, normalisation, wildcards."""

    nonsignificant: frozenset[int]
    strip_leading: bool
    wildcards: bool  # DcmCharString, CS and AE honour '*' and '?'
    kind: str = "string"  # "string", "date" or "time"

    def values(self, raw: bytes) -> list[bytes]:
        """The normalised values of a raw string (none for an empty one: VM 0)."""
        if not raw:
            return []
        parts = raw.split(b"\\")
        if self.strip_leading:
            return [part.strip(b" ") for part in parts]
        return [part.rstrip(b" ") for part in parts]

    def is_universal(self, raw: bytes, wildcards: bool) -> bool:
        """``isUniversalMatch``: empty, only non-significant characters, or (wildcards) only '*'."""
        if all(byte in self.nonsignificant for byte in raw):
            return True
        if not (wildcards and self.wildcards):
            return False
        return all(not value.strip(b"*") for value in self.values(raw))


_TEXT = _VRRule(frozenset(b" \\"), strip_leading=True, wildcards=True)
_RULES = {
    "AE": _TEXT,
    "CS": _TEXT,
    "LO": _TEXT,
    "SH": _TEXT,
    "PN": _VRRule(frozenset(b" \\^="), strip_leading=False, wildcards=True),
    "DA": _VRRule(frozenset(b"\\"), strip_leading=False, wildcards=False, kind="date"),
    "TM": _VRRule(frozenset(b"\\"), strip_leading=False, wildcards=False, kind="time"),
    "DS": _VRRule(frozenset(b" \\"), strip_leading=True, wildcards=False),
}
# Anything else a client may declare for a key: universal only when empty, literal compare.
_OTHER = _VRRule(frozenset(), strip_leading=False, wildcards=False)


def rule_for(vr: str) -> _VRRule:
    """The matching rule for a VR."""
    return _RULES.get(vr, _OTHER)


def matches(query: PreparedQuery, record: Elements) -> bool:
    """True if ``record`` matches every non-universal key of ``query`` (keys are ANDed)."""
    matcher = query.compiled
    if matcher is None:
        matcher = query.compiled = compile_matcher(query)
    return matcher(record)


def compile_matcher(query: PreparedQuery) -> Predicate:
    """Turn the query's search mask into one predicate over records."""
    return _compile_level(query.mask, ROOT_MATCHING_KEYS)


class KeyCheck(NamedTuple):
    """One of the ANDed tests of a search-mask level, labelled so a failure can be explained.

    ``tags`` is the key, or the date and time pair matched as one interval; ``query`` holds
    the query's raw value of each. A sequence key has ``items``: the checks of each query item.
    """

    tags: tuple[int, ...]
    query: tuple[bytes, ...]
    predicate: Predicate
    items: tuple[tuple[KeyCheck, ...], ...] = ()


def compile_checks(mask: Dataset, keys: MatchingKeys = ROOT_MATCHING_KEYS) -> list[KeyCheck]:
    """``DatasetMatchesSearchMask`` for one level: plain keys, date/time pairs, sequences.

    A record matches the level when every check's predicate holds.
    """
    checks: list[KeyCheck] = []
    for tag, wildcards in keys.keys:
        query = _query_value(mask, tag)
        if query is not None:
            checks.append(KeyCheck((tag,), (query[1],), _key_predicate(tag, *query, wildcards)))
    for date_tag, time_tag in keys.combined:
        check = _combined_check(mask, date_tag, time_tag)
        if check is not None:
            checks.append(check)
    for sequence_tag, item_keys in keys.sequences:
        check = _sequence_check(mask, sequence_tag, item_keys)
        if check is not None:
            checks.append(check)
    return checks


def required_fragments(query: PreparedQuery) -> tuple[frozenset[bytes], ...]:
    """Byte strings the raw values of every record ``query`` matches contain: one of each set.

    Derived from the checks the matcher runs (so never stricter than it): an exact value is
    itself such a string, a wildcard value its longest literal run, a single date both of its
    spellings; a key this cannot express (ranges, times, date and time pairs) adds no set. An
    empty set: the key matches no record at all.
    """
    return tuple(_level_fragments(query.mask, ROOT_MATCHING_KEYS))


def _level_fragments(mask: Dataset, keys: MatchingKeys) -> list[frozenset[bytes]]:
    found: list[frozenset[bytes]] = []
    flags: dict[int, bool] = dict(keys.keys)
    nested: dict[int, MatchingKeys] = dict(keys.sequences)
    for check in compile_checks(mask, keys):
        if check.items:
            if len(check.items) == 1:  # any record item must match the one query item
                (item,) = mask[check.tags[0]].value
                found.extend(_level_fragments(item, nested[check.tags[0]]))
            continue
        if len(check.tags) != 1:
            continue
        vr, raw = value_of(mask, check.tags[0]) or ("", b"")
        rule = rule_for(vr)
        alternatives: set[bytes] = set()
        for value in rule.values(raw):
            fragments = _value_fragments(rule, value, flags.get(check.tags[0], True))
            if fragments is None:
                break
            alternatives.update(fragments)
        else:
            found.append(frozenset(alternatives))
    return found


def _value_fragments(rule: _VRRule, key: bytes, wildcards: bool) -> frozenset[bytes] | None:
    """What every record value that ``_value_test`` accepts contains; None: anything may."""
    if not key or rule.kind == "time" or (rule.kind == "date" and b"-" in key):
        return None
    if rule.kind == "date":
        date = parse_date(key)
        return frozenset() if date is None else frozenset(
            (b"%04d%02d%02d" % date, b"%04d.%02d.%02d" % date))
    if wildcards and rule.wildcards and (b"*" in key or b"?" in key):
        longest = max(re.split(rb"[*?]", key), key=len)
        return frozenset((longest,)) if longest else None
    return frozenset((key,))


def _all(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return lambda record: True
    return lambda record: all(predicate(record) for predicate in predicates)


def _compile_level(mask: Dataset, keys: MatchingKeys) -> Predicate:
    return _all([check.predicate for check in compile_checks(mask, keys)])


def _query_value(mask: Dataset, tag: int, wildcards: bool = True) -> tuple[str, bytes] | None:
    """The ``(VR, raw)`` of a non-universal key of the mask, or None if it is absent/universal."""
    query = value_of(mask, tag)
    if query is None or query[0] == "SQ" or rule_for(query[0]).is_universal(query[1], wildcards):
        return None
    return query


def _key_predicate(tag: int, vr: str, raw: bytes, wildcards: bool) -> Predicate:
    """``DcmByteString::matches``: same VR, any query value against any record value."""
    rule = rule_for(vr)
    tests = [_value_test(rule, value, wildcards) for value in rule.values(raw)]

    def predicate(record: Elements) -> bool:
        candidate = value_of(record, tag)
        if candidate is None or candidate[0] != vr:
            return False
        return any(test(value) for value in rule.values(candidate[1]) for test in tests)

    return predicate


def _value_test(rule: _VRRule, key: bytes, wildcards: bool) -> ValueTest:
    """One query value as a test on one normalised record value; an empty key matches all."""
    if not key:
        return lambda value: True
    if rule.kind == "date":
        return _range_test(key, parse_date)
    if rule.kind == "time":
        return _range_test(key, parse_time)
    if wildcards and rule.wildcards and (b"*" in key or b"?" in key):
        return re.compile(_glob_pattern(key), re.DOTALL).fullmatch
    return key.__eq__


def _glob_pattern(key: bytes) -> bytes:
    """DCMTK's ``WildCardMatcher`` as a regex: '*' any run of bytes, '?' exactly one byte."""
    return b"".join(
        b".*" if byte == 0x2A else b"." if byte == 0x3F else re.escape(bytes([byte]))
        for byte in key
    )


# --- dates and times (dcmatch.cc) ------------------------------------------------------------


def parse_date(text: bytes) -> Date | None:
    """``DcmDate::getOFDateFromString``: YYYYMMDD (or old YYYY.MM.DD), month 1-12, day 1-31."""
    if len(text) == 10 and text[4:5] == b"." and text[7:8] == b".":
        text = text[:4] + text[5:7] + text[8:]
    if len(text) != 8 or not text.isdigit():
        return None
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return year, month, day


_TIME = re.compile(rb"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]+))?)?)?")
_OLD_TIME = re.compile(rb"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?")


def parse_time(text: bytes) -> float | None:
    """``DcmTime::getOFTimeFromString``: HH[MM[SS[.F+]]] (or HH:MM[:SS[.F+]]) in seconds."""
    found = _TIME.fullmatch(text) or _OLD_TIME.fullmatch(text)
    if found is None:
        return None
    hours, minutes, seconds, fraction = found.groups()
    second = int(seconds or 0) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    if int(hours) >= 24 or int(minutes or 0) >= 60 or second > 60:
        return None
    return int(hours) * 3600 + int(minutes or 0) * 60 + second


@dataclass(frozen=True)
class _Range:
    """``DcmAttributeMatching::Range``: a value split at its first '-'."""

    first: bytes
    second: bytes
    is_range: bool

    @classmethod
    def of(cls, text: bytes) -> _Range:
        first, dash, second = text.partition(b"-")
        return cls(first, second if dash else text, bool(dash))

    @property
    def open_beginning(self) -> bool:
        return not self.first

    @property
    def open_end(self) -> bool:
        return not self.second


def _range_test(key: bytes, parse: Callable[[bytes], Ordered | None]) -> ValueTest:
    """``rangeMatchingTemplate``: parsed equality or an inclusive range with open ends."""
    within = _range_within(_Range.of(key), parse)

    def test(value: bytes) -> bool:
        parsed = parse(value)
        return parsed is not None and within(parsed)

    return test


def _range_within(query: _Range, parse: Callable[[bytes], Ordered | None]
                  ) -> Callable[[Ordered], bool]:
    """The check of an already parsed candidate against a parsed query range."""
    first = None if query.open_beginning else parse(query.first)
    if not query.open_beginning and first is None:
        return lambda candidate: False
    if not query.is_range:
        return lambda candidate: candidate == first
    second = None if query.open_end else parse(query.second)
    if not query.open_end and second is None:
        return lambda candidate: False
    return lambda candidate: (first is None or first <= candidate) and (
        second is None or second >= candidate
    )


def _combined_check(mask: Dataset, date_tag: int, time_tag: int) -> KeyCheck | None:
    """StudyDate/Time or SPS start date/time: one interval when both halves are given."""
    date_query = _query_value(mask, date_tag)
    time_query = _query_value(mask, time_tag)
    if date_query is None:
        if time_query is None:
            return None
        return KeyCheck((time_tag,), (time_query[1],),
                        _key_predicate(time_tag, *time_query, True))
    if time_query is None:
        return KeyCheck((date_tag,), (date_query[1],),
                        _key_predicate(date_tag, *date_query, True))
    return KeyCheck((date_tag, time_tag), (date_query[1], time_query[1]),
                    _combined_predicate(date_tag, date_query, time_tag, time_query))


def _combined_predicate(date_tag: int, date_query: tuple[str, bytes], time_tag: int,
                        time_query: tuple[str, bytes]) -> Predicate:
    if date_query[0] != "DA" or time_query[0] != "TM":
        return lambda record: False  # DcmElement::combinationMatches
    test = _datetime_test(_first(date_query[1]), _first(time_query[1]))

    def predicate(record: Elements) -> bool:
        date = value_of(record, date_tag)
        time = value_of(record, time_tag)
        if date is None or time is None or date[0] != "DA" or time[0] != "TM":
            return False
        return test(_first(date[1]), _first(time[1]))

    return predicate


def _first(raw: bytes) -> bytes:
    """The first value, trailing spaces removed (``getOFString(…, 0, normalize)`` for DA/TM)."""
    return raw.split(b"\\", 1)[0].rstrip(b" ")


def _datetime_test(date_key: bytes, time_key: bytes) -> Callable[[bytes, bytes], bool]:
    """``DcmAttributeMatching::rangeMatchingDateTime`` with the query parsed once."""
    if not date_key:
        time_test = _value_test(_RULES["TM"], time_key, False)
        return lambda date, time: bool(time_test(time))
    if not time_key:
        date_test = _value_test(_RULES["DA"], date_key, False)
        return lambda date, time: bool(date_test(date))
    dates, times = _Range.of(date_key), _Range.of(time_key)
    within: Callable[[tuple[Date, float]], bool]
    if (
        dates.is_range != times.is_range
        or (dates.open_beginning and not times.open_beginning)
        or (dates.open_end and not times.open_end)
    ):
        date_within = _range_within(dates, parse_date)
        time_within = _range_within(times, parse_time)
        within = lambda candidate: date_within(candidate[0]) and time_within(candidate[1])  # noqa: E731
    else:
        within = _range_within(_joined_range(dates, times), _parse_datetime)

    def test(date: bytes, time: bytes) -> bool:
        candidate = _parse_datetime(date + b" " + time)
        return candidate is not None and within(candidate)

    return test


def _joined_range(dates: _Range, times: _Range) -> _Range:
    """Date and time ranges of the same shape as one date-time range ("DATE TIME" ends)."""
    first = dates.first + b" " + times.first if dates.first else b""
    second = dates.second + b" " + times.second if dates.second else b""
    return _Range(first, second, dates.is_range)


def _parse_datetime(text: bytes) -> tuple[Date, float] | None:
    """"DATE TIME" as (date, seconds); a missing time is midnight, as in an ``OFDateTime``."""
    date_text, _, time_text = text.partition(b" ")
    date = parse_date(date_text)
    time = parse_time(time_text) if time_text else 0.0
    if date is None or time is None:
        return None
    return date, time


def _sequence_check(mask: Dataset, tag: int, keys: MatchingKeys) -> KeyCheck | None:
    """The SPS: any query item must match any record item, unless the query is universal."""
    element = mask.get_item(tag)
    if element is None or element_vr(element) != "SQ":
        return None
    items = list(mask[tag].value)
    if _sequence_is_universal(items, keys):
        return None
    item_checks = tuple(tuple(compile_checks(item, keys)) for item in items)
    item_predicates = [_all([check.predicate for check in checks]) for checks in item_checks]

    def predicate(record: Elements) -> bool:
        candidate = record.get_item(tag)
        if candidate is None or element_vr(candidate) != "SQ":
            return False
        record_items = record[tag].value or []
        return any(match(item) for match in item_predicates for item in record_items)

    return KeyCheck((tag,), (b"",), predicate, item_checks)


def _sequence_is_universal(items: list[Dataset], keys: MatchingKeys) -> bool:
    """``wlfsim IsUniversalMatch``: judged on the first item with the *per-key* wildcard flag."""
    if not items:
        return True
    first = items[0]
    if any(_query_value(first, tag, wildcards) is not None for tag, wildcards in keys.keys):
        return False
    if any(_query_value(first, tag) is not None for pair in keys.combined for tag in pair):
        return False
    return all(
        _sequence_is_universal(list(first[tag].value), nested)
        for tag, nested in keys.sequences
        if tag in first and element_vr(first.get_item(tag)) == "SQ"
    )
