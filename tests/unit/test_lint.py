"""The lint rules: what wlmd would skip and what modalities trip on, one finding each."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from tests.support.datasets import raw
from wlmd.worklist.lint import Severity, check_dataset, duplicates, lint_directory
from wlmd.worklist.writer import WorklistWriter, encode_entry


def entry(accession: str = "A1", sps_id: str = "S1", procedure: str = "R1",
          study: str = "1.2.3.4") -> Dataset:
    """A complete entry with every type 2 attribute wlmctl fills in."""
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledStationAETitle = "CT01"
    step.ScheduledProcedureStepStartDate = "20240305"
    step.ScheduledProcedureStepStartTime = "0800"
    step.ScheduledProcedureStepDescription = "CHEST"
    step.ScheduledProcedureStepID = sps_id
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledStationName = ""
    step.ScheduledProcedureStepLocation = ""
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds = Dataset()
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPatientSequence = Sequence()
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "P1"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study
    ds.RequestedProcedureDescription = "CHEST"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.RequestedProcedureID = procedure
    ds.RequestedProcedurePriority = ""
    return ds


def as_read(ds: Dataset) -> Dataset:
    """The dataset as wlmd reads it back from its ``.wl`` bytes (raw elements)."""
    return dcmread(io.BytesIO(encode_entry(ds)))


def lines(ds: Dataset) -> list[tuple[str, str, Severity]]:
    return [(p.attribute, p.reason, p.severity) for p in check_dataset(as_read(ds))]


def test_a_complete_entry_has_no_finding() -> None:
    assert lines(entry()) == []


def test_a_rejected_entry_names_dcmtks_rule_and_the_empty_type1_attribute() -> None:
    ds = entry()
    del ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    assert lines(ds) == [
        ("-", "wlmd and wlmscpfs skip this file (file reject rule): ScheduledProcedureStepID "
              "(0040,0009) is missing or empty", Severity.ERROR),
        ("ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
         "type 1: missing or empty", Severity.ERROR)]


def test_missing_type2_attributes_are_warnings() -> None:
    ds = entry()
    del ds.PatientSex
    del ds.ScheduledProcedureStepSequence[0].ScheduledStationName
    assert [(a, s) for a, _reason, s in lines(ds)] == [
        ("PatientSex", Severity.WARNING),
        ("ScheduledProcedureStepSequence[0].ScheduledStationName", Severity.WARNING)]


@pytest.mark.parametrize(("keyword", "vr", "value", "reason"), [
    ("PatientBirthDate", "DA", b"19991301", "'19991301' is not a date (YYYYMMDD)"),
    ("ScheduledProcedureStepStartTime", "TM", b"2500", "'2500' is not a time"),
    ("AccessionNumber", "SH", b"12345678901234567", "exceeds the maximum length of 16"),
    ("PatientSex", "CS", b"m ", "invalid"),
    ("PatientSex", "CS", "Ö".encode() + b" ", "non-ASCII bytes in a CS value"),
    ("PatientName", "PN", "ÄRGER".encode(), "non-ASCII characters but no SpecificCharacterSet"),
])
def test_values_that_do_not_fit_their_vr_or_charset(keyword: str, vr: str, value: bytes,
                                                   reason: str) -> None:
    ds = as_read(entry())
    target = ds.ScheduledProcedureStepSequence[0] if keyword.startswith("Scheduled") else ds
    element = raw(keyword, vr, value)
    target[element.tag] = element
    found = [(p.attribute, p.reason) for p in check_dataset(ds)]
    assert len(found) == 1, found
    assert found[0][0].endswith(keyword) and reason.lower() in found[0][1].lower(), found


def test_latin1_bytes_are_wrong_in_a_utf8_entry_and_right_in_a_latin1_one() -> None:
    for charset, problems in (("ISO_IR 192", 1), ("ISO_IR 100", 0)):
        ds = as_read(entry())
        ds[0x00080005] = raw("SpecificCharacterSet", "CS", charset.encode())
        ds[0x00100010] = raw("PatientName", "PN", "MÜLLER".encode("latin-1"))
        assert len(check_dataset(ds)) == problems, charset


def test_unknown_status_is_reported() -> None:
    ds = entry()
    ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus = "DONE"
    assert lines(ds)[0][1] == ("'DONE' is not one of SCHEDULED, ARRIVED, READY, STARTED, "
                               "COMPLETED, DISCONTINUED")


def test_duplicate_sps_ids_and_studies_of_other_procedures() -> None:
    first, same_procedure = Path("CT01/a.wl"), Path("CT01/b.wl")
    other_procedure, other_sps = Path("CT01/c.wl"), Path("CT01/d.wl")
    found = duplicates({
        first: entry(sps_id="S1"),
        same_procedure: entry(sps_id="S2"),  # a second step of one requested procedure: fine
        other_procedure: entry(sps_id="S1", procedure="R2"),
        other_sps: entry(sps_id="S3", study="9.9"),
    })
    assert [(f.path, f.attribute, f.reason) for f in found] == [
        (other_procedure, "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
         "S1 is also used by a.wl"),
        (other_procedure, "StudyInstanceUID",
         "1.2.3.4 is also the study of another requested procedure (a.wl)")]


def test_directory_findings_include_unreadable_files_and_a_missing_lockfile(
        tmp_path: Path) -> None:
    writer = WorklistWriter(tmp_path, create_ae=True)
    writer.write("CT01", "good.wl", entry())
    (tmp_path / "CT01" / "empty.wl").write_bytes(b"")
    (tmp_path / "CT01" / "lockfile").unlink()
    found = [(f.path.name, f.reason) for f in lint_directory(tmp_path / "CT01")]
    assert found == [("empty.wl", "unreadable, wlmd skips it: End of stream"),
                     ("CT01", "missing: wlmd and wlmscpfs refuse queries to this AE")]
