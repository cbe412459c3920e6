"""Why a worklist record does not match a query: the first key that decided it.

``wlmd -v`` adds this to wlmscpfs's "does not match query" line, and ``wlmctl explain`` prints
it. It runs the checks of ``wlmd.worklist.matching`` themselves, in the order matching runs
them, so the explanation can never disagree with the outcome.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.datadict import dictionary_VR as dictionary_vr
from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag

from wlmd.dicom.dump import ENCODING, ESCAPE
from wlmd.worklist.matching import KeyCheck, compile_checks
from wlmd.worklist.query import PreparedQuery, element_vr, value_of

RANGED_VRS = ("DA", "TM", "DT")  # a query value with "-" is a range there


class Explainer:
    """Explains mismatches of many records against one query (compiled once)."""

    def __init__(self, query: PreparedQuery) -> None:
        self._checks = compile_checks(query.mask)

    def first_mismatch(self, record: Dataset) -> str | None:
        """The first failing key of ``record``, e.g. ``ScheduledStationAETitle 'CT02' does
        not match 'CT01'``; None when the record matches."""
        return _first_failure(self._checks, record)


def first_mismatch(query: PreparedQuery, record: Dataset) -> str | None:
    """The first failing key of ``record`` against ``query``; None when it matches."""
    return Explainer(query).first_mismatch(record)


def _first_failure(checks: list[KeyCheck] | tuple[KeyCheck, ...], record: Dataset) -> str | None:
    for check in checks:
        if not check.predicate(record):
            return _describe(check, record)
    return None


def _describe(check: KeyCheck, record: Dataset) -> str:
    if check.items:
        return _describe_sequence(check, record)
    names = " ".join(_name(tag) for tag in check.tags)
    values = [value_of(record, Tag(tag)) for tag in check.tags]
    wanted = " ".join(_quoted(raw) for raw in check.query)
    if any(value is None for value in values):
        return f"{names} is missing (query asks {wanted})"
    found = " ".join(_quoted(value[1]) for value in values if value is not None)
    ranged = any(dictionary_vr(tag) in RANGED_VRS and b"-" in raw
                 for tag, raw in zip(check.tags, check.query, strict=False))
    return f"{names} {found} {'is outside' if ranged else 'does not match'} {wanted}"


def _describe_sequence(check: KeyCheck, record: Dataset) -> str:
    tag = check.tags[0]
    element = record.get_item(tag)
    if element is None or element_vr(element) != "SQ":
        return f"{_name(tag)} is missing"
    items = list(record[tag].value or [])
    if not items:
        return f"{_name(tag)} has no item"
    reason = _first_failure(check.items[0], items[0]) or "no query item matches"
    if len(items) == 1 and len(check.items) == 1:
        return reason
    return f"no item of {_name(tag)} matches (item 1: {reason})"


def _name(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04x},{tag & 0xFFFF:04x})"


def _quoted(raw: bytes) -> str:
    """The value as its bytes spell it (padding removed), as the dumps print values."""
    return "'" + raw.rstrip(b" \0").decode(ENCODING, ESCAPE) + "'"
