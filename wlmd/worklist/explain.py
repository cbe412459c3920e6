"""Why a worklist entry does not match a query: the first key that excluded it, and how.

"The patient is not on my worklist" is answered by running wlmd's own matcher
(``matching.matches``) once per matching key of the query, in the order the matcher checks
them, on a search mask that holds that key alone: the first mask the entry fails names the key
that excluded it. So the explanation can never disagree with what the server answers.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from wlmd.worklist.keys import ROOT_MATCHING_KEYS, MatchingKeys
from wlmd.worklist.matching import matches, rule_for
from wlmd.worklist.query import PreparedQuery, value_of

SubMask = tuple[Dataset, str, tuple[BaseTag, ...], BaseTag | None]  # mask, path, keys, sequence


def explain(query: PreparedQuery, record: Dataset) -> str | None:
    """None if ``record`` matches ``query``; else the first key that excluded it and why,
    e.g. ``ScheduledProcedureStepSequence>ScheduledProcedureStepStartDate 20240305 is
    outside 20240306-20240307``."""
    if matches(query, record):
        return None
    for mask, path, tags, sequence in _single_key_masks(query.mask, ROOT_MATCHING_KEYS):
        if not matches(PreparedQuery(mask, False), record):
            return _why(query.mask, record, path, tags, sequence)
    return ("no ScheduledProcedureStepSequence item matches all the query's step keys "
            "together")


def _single_key_masks(mask: Dataset, keys: MatchingKeys) -> Iterator[SubMask]:
    """One mask per non-universal matching key (a date/time pair counts as one), in order."""
    for tag, wildcards in keys.keys:
        if _given(mask, tag, wildcards):
            yield _only(mask, (tag,)), _name(tag), (tag,), None
    for pair in keys.combined:
        present = tuple(tag for tag in pair if _given(mask, tag, True))
        if present:
            yield _only(mask, present), "/".join(_name(t) for t in present), present, None
    for sequence_tag, item_keys in keys.sequences:
        element = mask.get_item(sequence_tag)
        if element is None or not mask[sequence_tag].value:
            continue
        item = mask[sequence_tag].value[0]
        for sub, path, tags, _ in _single_key_masks(item, item_keys):
            outer = Dataset()
            outer.add(DataElement(sequence_tag, "SQ", Sequence([sub])))
            yield outer, f"{_name(sequence_tag)}>{path}", tags, sequence_tag


def _given(mask: Dataset, tag: BaseTag, wildcards: bool) -> bool:
    query = value_of(mask, tag)
    return query is not None and query[0] != "SQ" and not rule_for(query[0]).is_universal(
        query[1], wildcards)


def _only(mask: Dataset, tags: tuple[BaseTag, ...]) -> Dataset:
    """A mask with the raw elements ``tags`` of ``mask`` and nothing else."""
    only = Dataset()
    for tag in tags:
        only[tag] = mask.get_item(tag)
    return only


def _why(mask: Dataset, record: Dataset, path: str, tags: tuple[BaseTag, ...],
         sequence: BaseTag | None) -> str:
    """``path <entry value> is outside|does not match <query value>``."""
    query_level, record_level = mask, record
    if sequence is not None:
        query_level = mask[sequence].value[0]
        items = record[sequence].value if record.get_item(sequence) is not None else None
        if not items:
            return f"{path}: the entry has no {_name(sequence)}"
        record_level = items[0]
    wanted = " ".join(_shown(value_of(query_level, tag)) for tag in tags)
    found = [value_of(record_level, tag) for tag in tags]
    if any(value is None for value in found):
        return f"{path} is absent from the entry (query: {wanted})"
    have = " ".join(_shown(value) for value in found)
    ranged = any("-" in _shown(value_of(query_level, tag)) and
                 (value_of(query_level, tag) or ("", b""))[0] in ("DA", "TM") for tag in tags)
    return f"{path} {have} {'is outside' if ranged else 'does not match'} {wanted}"


def _shown(value: tuple[str, bytes] | None) -> str:
    """A raw value as text for a message (UTF-8 if it is that, else Latin-1), unpadded."""
    if value is None:
        return ""
    raw = value[1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip(" \0") or '""'


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04x},{tag.element:04x})"
