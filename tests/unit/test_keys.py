"""The key tables against the wlmscpfs(1) man page (docs/compat.md §4.1, §5.1, §5.4, §11)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from pydicom.tag import Tag

from tests.support.processes import missing_tool
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

# The reference's own manual, installed with DCMTK 3.6.7 (the dcmtk package .ci/run installs).
MAN_PAGE = Path("/usr/share/man/man1/wlmscpfs.1.gz")
# Return keys of the 3.7.0 manual that the 3.6.7 one lacks (docs/compat.md §11, §12.10).
RETURN_KEYS_ADDED_IN_3_7_0 = {None: {Tag(0x0008, 0x1040)}}


def _man_section(start: str, end: str) -> list[tuple[int, Tag]]:
    """(nesting depth, tag) for each attribute line of one list of the installed man page."""
    if not MAN_PAGE.is_file():
        missing_tool(f"{MAN_PAGE} missing (apt-get install -y dcmtk)")
    text = gzip.decompress(MAN_PAGE.read_bytes()).decode("latin-1")
    first = text.index(start)
    body = text[first:re.compile(end).search(text, first).start()]
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


def test_return_keys_are_those_of_the_man_page():
    """§5.1, §11: exactly the 3.7.0 return keys (the installed 3.6.7 list plus 0008,1040)."""
    expected = _by_parent(_man_section("As return keys", r"The\s+attribute\s+\(0008,0005\)"))
    for parent, tags in RETURN_KEYS_ADDED_IN_3_7_0.items():
        expected[parent] |= tags
    assert {parent: set(tags) for parent, tags in RETURN_KEY_TAGS.items()} == expected


def test_institutional_department_name_is_a_return_key():
    """§12.10 departure: (0008,1040) is a 3.7.0 return key."""
    assert is_return_key(Tag(0x0008, 0x1040), None)


def test_matching_keys_are_those_of_the_man_page():
    """§4.1: the matching keys of the man page, top level and inside the SPS."""
    expected = _by_parent(_man_section("as matching keys", r"As return keys"))
    assert {parent: set(tags) for parent, tags in MATCHING_KEY_TAGS.items()} == expected


@pytest.mark.parametrize(
    ("tag", "wildcards"),
    [
        (Tag(0x0010, 0x0020), False),  # PatientID
        (Tag(0x0010, 0x0010), True),  # PatientName
        (Tag(0x0008, 0x0050), True),  # AccessionNumber
    ],
)
def test_patient_id_is_the_one_literal_top_level_key(tag, wildcards):
    """§4.1: PatientID is the one top-level key without wildcards."""
    assert dict(ROOT_MATCHING_KEYS.keys)[tag] is wildcards


def test_station_and_modality_are_literal_inside_the_step():
    """§4.1: ScheduledStationAETitle and Modality match literally, the physician with wildcards."""
    assert dict(SPS_MATCHING_KEYS.keys) == {
        Tag(0x0040, 0x0001): False,
        Tag(0x0008, 0x0060): False,
        Tag(0x0040, 0x0006): True,
    }


def test_modality_is_a_key_inside_the_step_only():
    """§4.1: Modality is a key inside the SPS only."""
    assert is_matching_key(Tag(0x0008, 0x0060), SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    assert not is_matching_key(Tag(0x0008, 0x0060), None)
    assert not is_return_key(Tag(0x0008, 0x0060), None)


def test_every_supported_sequence_has_expansion_contents():
    """§5.4: every sequence a query may carry has expansion contents."""
    sequences = {tag for tags in RETURN_KEY_TAGS.values() for tag in tags if tag in RETURN_KEY_TAGS}
    assert sequences == set(SEQUENCE_EXPANSION)


def test_step_sequence_expansion_contents():
    """§5.4: the SPS expands to 15 attributes plus the protocol code sequence with 4 codes."""
    contents = dict(SEQUENCE_EXPANSION[SCHEDULED_PROCEDURE_STEP_SEQUENCE])
    assert len(contents) == 16
    assert contents[Tag(0x0040, 0x0400)] == "LT"
    assert {tag for tag, _ in contents[Tag(0x0040, 0x0008)]} == {
        Tag(0x0008, 0x0100), Tag(0x0008, 0x0102), Tag(0x0008, 0x0103), Tag(0x0008, 0x0104)
    }
