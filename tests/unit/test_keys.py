"""The key tables against the wlmscpfs(1) man page (COMPAT §3, §4, §8)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.tag import Tag

from wlmd.worklist.keys import (
    MATCHING_KEY_TAGS,
    RETURN_KEY_TAGS,
    ROOT_MATCHING_KEYS,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SEQUENCE_EXPANSION,
    SPS_MATCHING_KEYS,
    is_matching_key,
    is_return_key,
)

MAN_PAGE = Path("/work/shared/seeds/wlmscpfs.1.txt")
if not MAN_PAGE.exists():  # the seed lives outside the repository
    pytest.skip("wlmscpfs(1) seed not available", allow_module_level=True)


def _man_section(start: str, end: str) -> list[tuple[int, Tag]]:
    """(nesting depth, tag) for each attribute line of one man page list."""
    text = MAN_PAGE.read_text()
    body = text[text.index(start):text.index(end, text.index(start))]
    rows = []
    for line in body.splitlines():
        found = re.match(r"\s*\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\)\s*((?:> )*)", line)
        if found:
            depth = found.group(3).count(">")
            rows.append((depth, Tag(int(found.group(1), 16), int(found.group(2), 16))))
    return rows


def _by_parent(rows: list[tuple[int, Tag]]) -> dict[Tag | None, set[Tag]]:
    parents: list[Tag | None] = [None]
    table: dict[Tag | None, set[Tag]] = {}
    for depth, tag in rows:
        del parents[depth + 1:]
        table.setdefault(parents[depth], set()).add(tag)
        parents.append(tag)
    return table


def test_s4_return_keys_are_the_man_page_list():
    """§4/§8: exactly the return keys of the 3.7.0 man page, per nesting level."""
    expected = _by_parent(_man_section("As return keys", "The  attribute  (0008,0005)"))
    assert {parent: set(tags) for parent, tags in RETURN_KEY_TAGS.items()} == expected


def test_s8_institutional_department_name_is_a_return_key():
    """§8 departure: (0008,1040) is a 3.7.0 return key."""
    assert is_return_key(Tag(0x0008, 0x1040), None)


def test_s3_matching_keys_are_the_man_page_list():
    """§3: the matching keys of the man page, top level and inside the SPS."""
    expected = _by_parent(_man_section("as matching keys", "As return keys"))
    assert {parent: set(tags) for parent, tags in MATCHING_KEY_TAGS.items()} == expected


@pytest.mark.parametrize(
    ("tag", "wildcards"),
    [
        (Tag(0x0010, 0x0020), False),  # PatientID
        (Tag(0x0010, 0x0010), True),  # PatientName
        (Tag(0x0008, 0x0050), True),  # AccessionNumber
    ],
)
def test_s3_top_level_wildcard_flags(tag, wildcards):
    """§3: PatientID is the one top-level key without wildcards."""
    assert dict(ROOT_MATCHING_KEYS.keys)[tag] is wildcards


def test_s3_sps_wildcard_flags():
    """§3: ScheduledStationAETitle and Modality match literally, the physician with wildcards."""
    assert dict(SPS_MATCHING_KEYS.keys) == {
        Tag(0x0040, 0x0001): False,
        Tag(0x0008, 0x0060): False,
        Tag(0x0040, 0x0006): True,
    }


def test_s3_keys_are_level_specific():
    """§3: Modality is a key inside the SPS only."""
    assert is_matching_key(Tag(0x0008, 0x0060), SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    assert not is_matching_key(Tag(0x0008, 0x0060), None)
    assert not is_return_key(Tag(0x0008, 0x0060), None)


def test_s4_expansion_covers_every_supported_sequence():
    """§4: every sequence a query may carry has expansion contents."""
    sequences = {tag for tags in RETURN_KEY_TAGS.values() for tag in tags if tag in RETURN_KEY_TAGS}
    assert sequences == set(SEQUENCE_EXPANSION)


def test_s4_sps_expansion_contents():
    """§4: the SPS expands to 15 attributes plus the protocol code sequence with 4 codes."""
    contents = dict(SEQUENCE_EXPANSION[SCHEDULED_PROCEDURE_STEP_SEQUENCE])
    assert len(contents) == 16
    assert contents[Tag(0x0040, 0x0400)] == "LT"
    assert {tag for tag, _ in contents[Tag(0x0040, 0x0008)]} == {
        Tag(0x0008, 0x0100), Tag(0x0008, 0x0102), Tag(0x0008, 0x0103), Tag(0x0008, 0x0104)
    }
