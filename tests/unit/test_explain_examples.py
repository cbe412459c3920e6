"""The explanation of a mismatch never disagrees with the matcher, on the example worklists."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset

from wlmd.findscu.keys import apply_key, parse_key
from wlmd.worklist.explain import first_mismatch as explain
from wlmd.worklist.matching import matches
from wlmd.worklist.query import PreparedQuery, prepare_query
from wlmd.worklist.store import WorklistStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"
SPS = "ScheduledProcedureStepSequence[0]."
QUERIES = [
    [],
    ["PatientName=*"],
    ["PatientName=I*"],
    ["PatientID=PID163352"],
    [f"{SPS}Modality=CT"],
    [f"{SPS}Modality=MR", "PatientSex=F"],
    [f"{SPS}ScheduledProcedureStepStartDate=20240304-20240305"],
    [f"{SPS}ScheduledProcedureStepStartDate=20240304",
     f"{SPS}ScheduledProcedureStepStartTime=0800-1200"],
    [f"{SPS}ScheduledStationAETitle=CT01", f"{SPS}ScheduledPerformingPhysicianName=K*"],
    ["AccessionNumber=A24030*", "RequestedProcedurePriority=STAT"],
    ["StudyDate=20240301-"],
]


def query(*keys: str) -> PreparedQuery:
    identifier = Dataset()
    for key in keys:
        apply_key(identifier, parse_key(key))
    return prepare_query(identifier, no_fail=True, expand_sequences=True)


@pytest.fixture(scope="module")
def records() -> list[Dataset]:
    store = WorklistStore(EXAMPLES, file_reject=True)
    found = [r.dataset for ae in ("CT01", "MR01", "US01", "WORKLIST")
             if store.knows_called_ae(ae) for r in store.query(ae, None)]
    assert len(found) > 20
    return found


@pytest.mark.parametrize("keys", QUERIES, ids=lambda keys: "&".join(keys) or "universal")
def test_explain_agrees_with_the_matcher(records: list[Dataset], keys: list[str]) -> None:
    prepared = query(*keys)
    for record in records:
        reason = explain(prepared, record)
        assert (reason is None) == matches(prepared, record), reason


def test_the_first_excluding_key_and_why(records: list[Dataset]) -> None:
    record = next(r for r in records if r.ScheduledProcedureStepSequence[0].Modality == "CT"
                  and r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate
                  == "20240303")
    assert explain(query(f"{SPS}ScheduledProcedureStepStartDate=20240306-20240307"), record) \
        == "ScheduledProcedureStepStartDate '20240303' is outside '20240306-20240307'"
    assert explain(query(f"{SPS}Modality=MR", "PatientID=NOBODY"), record) == (
        f"PatientID '{record.PatientID}' does not match 'NOBODY'")  # root keys come first
    assert explain(query("PatientBirthDate=19000101", "ResponsiblePerson=X*"), record) == (
        "ResponsiblePerson is missing (query asks 'X*')")


def test_a_step_that_matches_each_key_but_not_all_together() -> None:
    def step(modality: str, station: str) -> Dataset:
        item = Dataset()
        item.Modality = modality
        item.ScheduledStationAETitle = station
        return item

    record = Dataset()
    record.ScheduledProcedureStepSequence = [step("CT", "MR01"), step("MR", "CT01")]
    prepared = query(f"{SPS}Modality=CT", f"{SPS}ScheduledStationAETitle=CT01")
    assert not matches(prepared, record)
    assert explain(prepared, record) == (
        "no item of ScheduledProcedureStepSequence matches (item 1: ScheduledStationAETitle "
        "'MR01' does not match 'CT01')")
