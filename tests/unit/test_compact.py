"""Packed matching keys: every query judges a record's MatchView exactly as its decoded dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement

from tests.support.datasets import dataset, raw, sequence
from wlmd.worklist.compact import MatchView, pack, screens
from wlmd.worklist.matching import compile_checks, matches
from wlmd.worklist.query import prepare_query
from wlmd.worklist.records import parse_worklist_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKLISTS = sorted((EXAMPLES / "worklists").rglob("*.wl"))
QUERIES = sorted((EXAMPLES / "queries").glob("*.dcm"))


def _query(*elements) -> Dataset:
    return dataset(*elements)


EDGE_RECORDS = {
    "absent keys": dataset(raw("AccessionNumber", "SH", b"A1")),
    "multi-valued, padded": dataset(
        raw("PatientName", "PN", b"SMITH^JOHN \\DOE^JANE"), raw("PatientID", "LO", b" P1 "),
        raw("StudyDate", "DA", b"20240101"), raw("StudyTime", "TM", b"0830"),
        sequence("ScheduledProcedureStepSequence",
                 dataset(raw("Modality", "CS", b"CT"), raw("ScheduledStationAETitle", "AE", b"S1"),
                         raw("ScheduledProcedureStepStartDate", "DA", b"20240102"),
                         raw("ScheduledProcedureStepStartTime", "TM", b"101500")),
                 dataset(raw("Modality", "CS", b"MR"),
                         raw("ScheduledPerformingPhysicianName", "PN", b"WHO^DR")))),
    "wrong VRs": dataset(raw("PatientName", "LO", b"SMITH"),
                         raw("ScheduledProcedureStepSequence", "LO", b"X"),
                         raw("AccessionNumber", "SQ", b"")),
    "empty sequence": dataset(raw("PatientName", "PN", b"SMITH"),
                              sequence("ScheduledProcedureStepSequence")),
    "latin-1 bytes": dataset(raw("SpecificCharacterSet", "CS", b"ISO_IR 100"),
                             raw("PatientName", "PN", "MÜLLER^JÖRG".encode("latin-1"))),
}

EDGE_QUERIES = [
    _query(raw("PatientName", "PN", b"SMITH*")),
    _query(raw("PatientName", "PN", b"DOE^J?NE")),
    _query(raw("PatientName", "PN", "M?LLER*".encode("latin-1"))),
    _query(raw("PatientName", "LO", b"SMITH")),
    _query(raw("PatientID", "LO", b"P1")),
    _query(raw("AccessionNumber", "SH", b"A*")),
    _query(raw("StudyDate", "DA", b"20240101-"), raw("StudyTime", "TM", b"0800-0900")),
    _query(sequence("ScheduledProcedureStepSequence", dataset(raw("Modality", "CS", b"MR")))),
    _query(sequence("ScheduledProcedureStepSequence",
                    dataset(raw("Modality", "CS", b"MR"),  # both in the same record item
                            raw("ScheduledPerformingPhysicianName", "PN", b"WHO*")))),
    _query(sequence("ScheduledProcedureStepSequence",
                    dataset(raw("ScheduledProcedureStepStartDate", "DA", b"20240102"),
                            raw("ScheduledProcedureStepStartTime", "TM", b"1000-1100")))),
]


def _records() -> list[tuple[str, Dataset]]:
    found = [(path.name, parse_worklist_file(path.read_bytes())[0]) for path in WORKLISTS]
    return found + list(EDGE_RECORDS.items())


def _queries() -> list[Dataset]:
    return [dcmread(path) for path in QUERIES] + EDGE_QUERIES


def test_the_examples_are_there() -> None:
    assert len(WORKLISTS) > 20 and len(QUERIES) > 5


@pytest.mark.parametrize("identifier", _queries(), ids=lambda q: repr(sorted(q.keys()))[:60])
def test_view_matches_as_the_dataset(identifier: Dataset) -> None:
    query = prepare_query(identifier, no_fail=True, expand_sequences=True)
    outcomes = []
    for name, record in _records():
        expected = matches(query, record)
        assert matches(query, MatchView.of(pack(record))) is expected, name
        outcomes.append(expected)
    if identifier in EDGE_QUERIES:
        assert any(outcomes)  # each edge query matches some record: not a vacuous comparison


def test_every_key_check_agrees_on_a_view() -> None:
    """The -v explain lines come from the KeyCheck list: each check holds for both alike."""
    for identifier in _queries():
        query = prepare_query(identifier, no_fail=True, expand_sequences=True)
        checks = compile_checks(query.mask)
        for _, record in _records():
            view = MatchView.of(pack(record))
            assert [c.predicate(view) for c in checks] == [c.predicate(record) for c in checks]


def test_every_match_passes_the_screens() -> None:
    """The screens only drop records the matcher refuses, and they do drop some."""
    dropped = 0
    for identifier in _queries():
        query = prepare_query(identifier, no_fail=True, expand_sequences=True)
        tests = screens(query)
        for _, record in _records():
            packed = pack(record)
            passed = all(test.search(packed) for test in tests)
            assert passed or not matches(query, MatchView.of(packed))
            dropped += not passed
    assert dropped


SCREENED_RECORD = dataset(
    raw("PatientName", "PN", b"SMITH^JOHN \\DOE^JANE"), raw("AccessionNumber", "SH", b"A1"),
    raw("PatientBirthDate", "DA", b"1960.09.05"),
    sequence("ScheduledProcedureStepSequence",
             dataset(raw("ScheduledPerformingPhysicianName", "PN", b"WHO^DR"))))


@pytest.mark.parametrize(("element", "passes"), [
    (raw("AccessionNumber", "SH", b"A1"), True),
    (raw("AccessionNumber", "SH", b"A2"), False),
    (raw("AccessionNumber", "SH", b"A2\\A1"), True),  # any query value
    (raw("PatientName", "PN", b"DOE^J?NE"), True),
    (raw("PatientName", "PN", b"*^JAMES"), False),  # the longest literal run is absent
    (raw("PatientBirthDate", "DA", b"19600905"), True),  # the old spelling is in the record
    (raw("PatientBirthDate", "DA", b"19600906"), False),
    (raw("PatientBirthDate", "DA", b"2024"), False),  # unparseable: matches nothing
    (raw("PatientBirthDate", "DA", b"19600101-19601231"), True),  # ranges: no screen
    (sequence("ScheduledProcedureStepSequence",
              dataset(raw("ScheduledPerformingPhysicianName", "PN", b"WHO*"))), True),
    (sequence("ScheduledProcedureStepSequence",
              dataset(raw("ScheduledPerformingPhysicianName", "PN", b"HOW*"))), False),
])
def test_screens_drop_records_without_the_key_value(element: RawDataElement | DataElement,
                                                    passes: bool) -> None:
    query = prepare_query(dataset(element), no_fail=True, expand_sequences=True)
    packed = pack(SCREENED_RECORD)
    assert all(test.search(packed) for test in screens(query)) is passes
    assert matches(query, MatchView.of(packed)) is passes


def test_packed_keys_are_small_and_carry_no_other_attribute() -> None:
    path = WORKLISTS[0]
    record = parse_worklist_file(path.read_bytes())[0]
    packed = pack(record)
    assert len(packed) < len(path.read_bytes()) / 2
    assert MatchView.of(packed).get_item(0x00100010) is not None  # PatientName: a matching key
    assert MatchView.of(packed).get_item(0x00080080) is None  # InstitutionName: a return key
