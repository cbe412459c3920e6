"""WorklistWriter.update: read-modify-write of the bytes with the lock held only for the rename."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from pydicom import dcmread

from tests.support.mpps import write_entry
from wlmd.worklist.writer import (
    STRAY_AGE,
    SWEEP_INTERVAL,
    WorklistWriter,
    _sweep_due,
    encode_entry,
    read_entry,
)


def make_ae(tmp_path: Path) -> Path:
    directory = tmp_path / "AE"
    directory.mkdir()
    (directory / "lockfile").touch()
    write_entry(directory, "A1", "1.2.3.4")
    return directory


def started(data: bytes) -> bytes:
    entry = dcmread(io.BytesIO(data))
    entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus = "STARTED"
    return encode_entry(entry)


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
    assert writer.update("AE", "A1.wl", lambda data: None) is False
    assert (directory / "A1.wl").read_bytes() == before


def test_a_change_made_meanwhile_is_not_lost(tmp_path: Path) -> None:
    """Another writer replaces the entry between our read and our rename: we try again on its
    content, so both changes survive."""
    directory = make_ae(tmp_path)
    writer = WorklistWriter(tmp_path)
    calls = []

    def change(data: bytes) -> bytes:
        calls.append(dcmread(io.BytesIO(data)).get("PatientComments", ""))
        if len(calls) == 1:  # the other writer's change lands while we prepare ours
            other = dcmread(directory / "A1.wl")
            other.PatientComments = "other writer"
            writer.write("AE", "A1.wl", other, replace=True)
        return started(data)

    assert writer.update("AE", "A1.wl", change) is True
    assert calls == ["", "other writer"]
    entry = dcmread(directory / "A1.wl")
    assert entry.PatientComments == "other writer"
    assert entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"


def test_strays_are_swept_by_the_first_change_then_at_most_once_a_minute(tmp_path: Path) -> None:
    root = tmp_path / "worklists"
    (root / "CT01").mkdir(parents=True)
    (root / "CT01" / "lockfile").touch()
    writer = WorklistWriter(root)
    stray = root / "CT01" / ".wlmd-otherhost-1-abc.tmp"
    stray.write_bytes(b"half")
    old = time.time() - STRAY_AGE - 1
    os.utime(stray, (old, old))
    with writer.transaction("CT01"):
        pass
    assert not stray.exists()
    stray.write_bytes(b"half")
    os.utime(stray, (old, old))
    with writer.transaction("CT01"):
        pass
    assert stray.exists()  # swept less than a minute ago: this change does not list again
    assert _sweep_due(root / "CT01", now=time.monotonic() + SWEEP_INTERVAL)


def test_a_first_read_that_is_out_of_date_is_read_again(tmp_path: Path) -> None:
    """The caller's read (``first``) was of a file replaced since: the change is made on the
    new content, and the other writer's change survives."""
    directory = make_ae(tmp_path)
    writer = WorklistWriter(tmp_path)
    stale = read_entry(directory / "A1.wl")
    other = dcmread(directory / "A1.wl")
    other.PatientComments = "other writer"
    writer.write("AE", "A1.wl", other, replace=True)
    seen = []

    def change(data: bytes) -> bytes:
        seen.append(dcmread(io.BytesIO(data)).get("PatientComments", ""))
        return started(data)

    assert writer.update("AE", "A1.wl", change, first=stale) is True
    assert seen == ["", "other writer"]
    entry = dcmread(directory / "A1.wl")
    assert entry.PatientComments == "other writer"
    assert entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"
    assert sorted(p.name for p in directory.iterdir()) == ["A1.wl", "lockfile"]
