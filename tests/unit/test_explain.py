"""The first key that decides a mismatch, for ``-v`` and ``wlmctl explain``."""

from __future__ import annotations

from pydicom import Dataset

from tests.support.datasets import dataset, raw, sequence
from wlmd.worklist.explain import Explainer, first_mismatch
from wlmd.worklist.matching import matches
from wlmd.worklist.query import prepare_query


def step(station: bytes, date: bytes = b"20240304", modality: bytes = b"CT") -> Dataset:
    return dataset(raw("Modality", "CS", modality), raw("ScheduledStationAETitle", "AE", station),
                   raw("ScheduledProcedureStepStartDate", "DA", date))


def record(*steps: Dataset, patient_id: bytes = b"PID1 ") -> Dataset:
    return dataset(raw("PatientID", "LO", patient_id),
                   sequence("ScheduledProcedureStepSequence", *steps))


QUERY = dataset(raw("PatientID", "LO", b""),
                sequence("ScheduledProcedureStepSequence",
                         step(b"CT01", date=b"20240304-20240305", modality=b"")))


def explain(query: Dataset, candidate: Dataset) -> str | None:
    prepared = prepare_query(query, no_fail=False, expand_sequences=True)
    reason = first_mismatch(prepared, candidate)
    assert (reason is None) is matches(prepared, candidate)  # never disagrees with matching
    return reason


def test_station_that_does_not_match() -> None:
    assert explain(QUERY, record(step(b"CT02"))) == (
        "ScheduledStationAETitle 'CT02' does not match 'CT01'")


def test_matching_record_has_no_reason() -> None:
    assert explain(QUERY, record(step(b"CT01"))) is None


def test_first_key_in_matching_order_decides() -> None:
    query = dataset(raw("PatientID", "LO", b"PID9"),
                    sequence("ScheduledProcedureStepSequence", step(b"CT01")))
    assert explain(query, record(step(b"CT02"))) == "PatientID 'PID1' does not match 'PID9'"


def test_missing_key_and_missing_sequence() -> None:
    query = dataset(raw("PatientName", "PN", b"DOE*"))
    assert explain(query, record(step(b"CT01"))) == "PatientName is missing (query asks 'DOE*')"
    no_steps = dataset(raw("PatientID", "LO", b"PID1"))
    assert explain(QUERY, no_steps) == "ScheduledProcedureStepSequence is missing"
    assert explain(QUERY, record()) == "ScheduledProcedureStepSequence has no item"


def test_several_items_name_the_first() -> None:
    reason = explain(QUERY, record(step(b"CT02"), step(b"CT03")))
    assert reason == ("no item of ScheduledProcedureStepSequence matches "
                      "(item 1: ScheduledStationAETitle 'CT02' does not match 'CT01')")


def test_date_out_of_range_and_explainer_reuse() -> None:
    explainer = Explainer(prepare_query(QUERY, no_fail=False, expand_sequences=True))
    assert explainer.first_mismatch(record(step(b"CT01", date=b"20240306"))) == (
        "ScheduledProcedureStepStartDate '20240306' is outside '20240304-20240305'")
    assert explainer.first_mismatch(record(step(b"CT01", date=b"20240305"))) is None
