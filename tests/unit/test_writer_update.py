"""WorklistWriter.update: read-modify-write with the lock held only for the rename."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset, dcmread

from tests.support.mpps import write_entry
from wlmd.worklist.writer import WorklistWriter


def make_ae(tmp_path: Path) -> Path:
    directory = tmp_path / "AE"
    directory.mkdir()
    (directory / "lockfile").touch()
    write_entry(directory, "A1", "1.2.3.4")
    return directory


def started(entry: Dataset) -> Dataset:
    entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus = "STARTED"
    return entry


def test_update_changes_the_entry_durably_and_leaves_no_temporary(tmp_path: Path) -> None:
    directory = make_ae(tmp_path)
    assert WorklistWriter(tmp_path).update("AE", "A1.wl", started) is True
    entry = dcmread(directory / "A1.wl")
    assert entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"
    assert entry.AccessionNumber == "A1"
    assert sorted(p.name for p in directory.iterdir()) == ["A1.wl", "lockfile"]


def test_update_of_a_missing_entry_or_without_a_change_is_false(tmp_path: Path) -> None:
    directory = make_ae(tmp_path)
    before = (directory / "A1.wl").read_bytes()
    writer = WorklistWriter(tmp_path)
    assert writer.update("AE", "B2.wl", started) is False
    assert writer.update("AE", "A1.wl", lambda entry: None) is False
    assert (directory / "A1.wl").read_bytes() == before


def test_a_change_made_meanwhile_is_not_lost(tmp_path: Path) -> None:
    """Another writer replaces the entry between our read and our rename: we try again on its
    content, so both changes survive."""
    directory = make_ae(tmp_path)
    writer = WorklistWriter(tmp_path)
    calls = []

    def change(entry: Dataset) -> Dataset:
        calls.append(entry.get("PatientComments", ""))
        if len(calls) == 1:  # the other writer's change lands while we prepare ours
            other = dcmread(directory / "A1.wl")
            other.PatientComments = "other writer"
            writer.write("AE", "A1.wl", other, replace=True)
        return started(entry)

    assert writer.update("AE", "A1.wl", change) is True
    assert calls == ["", "other writer"]
    entry = dcmread(directory / "A1.wl")
    assert entry.PatientComments == "other writer"
    assert entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"
