"""``--index-file`` for real: a restarted ``python -m wlmd`` parses only what changed while it
was stopped, and answers C-FINDs from the directory as it is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.processes import wait_until
from tests.support.server import ANY_AE, SMALL_POOL, Wlmd, start_configured, toml
from tests.support.worklists import worklist_dataset, write_ae_directory, write_worklist

PENDING = (0xFF00, 0xFF01)


def answers(port: int, query: Dataset) -> list[Dataset]:
    """The identifier of every pending C-FIND response to ``query``, in the order served."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=ANY_AE)
    assert assoc.is_established
    try:
        return [identifier for status, identifier in assoc.send_c_find(
                    query, ModalityWorklistInformationFind)
                if status and status.Status in PENDING]
    finally:
        assoc.release()
        ae.shutdown()


def accession_numbers(port: int, key: str = "") -> list[str]:
    """The AccessionNumber of every C-FIND response to a query of that key alone (universal
    by default), sorted."""
    query = Dataset()
    query.AccessionNumber = key
    return sorted(str(identifier.AccessionNumber) for identifier in answers(port, query))


def started(tmp_path: Path, index: Path) -> Wlmd:
    return loaded(start_configured(tmp_path, {**SMALL_POOL, "index_file": str(index)}))


def loaded(server: Wlmd) -> Wlmd:
    """``server`` once it has loaded its worklist (it serves from the files until then)."""
    wait_until(lambda: "worklist loaded" in server.log(), timeout=60, what="the worklist loaded")
    return server


def test_a_restart_parses_only_the_files_changed_while_stopped(tmp_path: Path) -> None:
    ae_dir = tmp_path / "db" / ANY_AE
    write_ae_directory(ae_dir, ["A0", "A1", "A2"])
    index = tmp_path / "cache" / "index.sqlite"
    index.parent.mkdir()

    first = started(tmp_path, index)
    try:
        # a child parsed them into the index file, and the supervisor loaded its rows
        assert f"Parsed 3 worklist files of {ANY_AE} into the index file" in first.log()
        assert f"Loaded 3 worklist records of {ANY_AE}" in first.log()
        assert "(0 files parsed)" in first.log()
        assert accession_numbers(first.port) == ["A0", "A1", "A2"]
    finally:
        first.stop()
    assert index.stat().st_mode & 0o077 == 0  # patient data: the owner's only
    assert not list(index.parent.glob("index.sqlite.part-*"))  # merged, then removed

    write_worklist(ae_dir / "1.wl", worklist_dataset("CHANGED"))
    (ae_dir / "2.wl").unlink()
    second = started(tmp_path, index)
    try:
        assert f"Loaded 2 worklist records of {ANY_AE}" in second.log()
        assert "(1 files parsed)" in second.log()
        assert accession_numbers(second.port) == ["A0", "CHANGED"]
        write_worklist(ae_dir / "3.wl", worklist_dataset("ADDED"))  # while it runs
        assert accession_numbers(second.port) == ["A0", "ADDED", "CHANGED"]
    finally:
        second.stop()


def mappings(pid: int, directory: Path) -> list[str]:
    """Mappings of process ``pid`` of files in ``directory``."""
    with open(f"/proc/{pid}/maps") as maps:
        return [line for line in maps if f" {directory}/" in line]


def wide_query(patient_name: str) -> Dataset:
    """A query returning the common keys, matching on the patient name."""
    step = Dataset()
    step.Modality = step.ScheduledStationAETitle = step.ScheduledProcedureStepStartDate = ""
    step.ScheduledProcedureStepStartTime = step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = step.ScheduledProcedureStepID = ""
    query = Dataset()
    query.PatientName = patient_name
    query.PatientID = query.AccessionNumber = query.StudyInstanceUID = ""
    query.RequestedProcedureID = query.RequestedProcedureDescription = ""
    query.ScheduledProcedureStepSequence = [step]
    return query


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_preloaded_records_are_served_from_one_private_nameless_mapping_across_reloads(
        tmp_path: Path) -> None:
    ae_dir = tmp_path / "db" / ANY_AE
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    (tmp_path / "heap").mkdir()
    (tmp_path / "heap" / "db").symlink_to(tmp_path / "db")
    count = 2100  # a full chunk of packed keys (2,048) and full shelves of records (256)
    for number in range(count):
        entry = worklist_dataset(f"A{number:04d}")
        entry.PatientName = f"DOE{number % 7}^N{number}"
        write_worklist(ae_dir / f"{number:04d}.wl", entry)
    index = tmp_path / "cache" / "index.sqlite"
    index.parent.mkdir()
    options = {**SMALL_POOL, "index_file": str(index)}
    server = loaded(start_configured(tmp_path, options))
    try:
        assert accession_numbers(server.port) == [f"A{n:04d}" for n in range(count)]
        some = [f"A{n:04d}" for n in range(1200, 1300)]
        assert accession_numbers(server.port, "A12*") == some  # searched in the packed keys
        assert "Mapped " in server.log()
        heap = start_configured(tmp_path / "heap", SMALL_POOL)  # the same files, no index file
        try:
            for name in ("DOE3*", "*^N12*"):  # searched in the packed keys
                query = wide_query(name)
                assert [a.to_json_dict() for a in answers(server.port, query)] == \
                    [a.to_json_dict() for a in answers(heap.port, query)], name
        finally:
            heap.stop()
        open_before = descriptors(server.pid)
        for generation in (2, 3):  # the first generation read the files while it loaded
            for pid in (server.pid, *server.workers()):
                (line,) = mappings(pid, index.parent)
                assert line.split()[1] == "r--s" and line.rstrip().endswith(" (deleted)")
            assert sorted(os.listdir(index.parent)) == ["index.sqlite"]  # no name leads to it
            (kept,) = [fd for fd in os.listdir(f"/proc/{server.pid}/fd")  # mmap's duplicate
                       if os.readlink(f"/proc/{server.pid}/fd/{fd}").startswith(f"{index.parent}/")]
            assert stat.S_IMODE(os.stat(f"/proc/{server.pid}/fd/{kept}").st_mode) == 0o600
            # a reload preloads again into a new mapping; the old one goes with its readers
            server.reconfigure(toml({**options, "max_associations": 2 + generation}))
            wait_until(lambda: f"worker generation {generation}" in server.log(),  # noqa: B023
                       what=f"worker generation {generation}")
            assert accession_numbers(server.port, "A12*") == some
        wait_until(lambda: len(mappings(server.pid, index.parent)) == 1,
                   what="the supervisor's old mappings unmapped")
        assert descriptors(server.pid) == open_before
    finally:
        server.stop()
