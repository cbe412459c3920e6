"""``--index-file`` for real: a restarted ``python -m wlmd`` parses only what changed while it
was stopped, and answers C-FINDs from the directory as it is."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.server import ANY_AE, SMALL_POOL, Wlmd, start_configured
from tests.support.worklists import worklist_dataset, write_worklist

PENDING = (0xFF00, 0xFF01)


def accession_numbers(port: int) -> list[str]:
    """The AccessionNumber of every C-FIND response to a universal query."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=ANY_AE)
    assert assoc.is_established
    query = Dataset()
    query.AccessionNumber = ""
    try:
        return sorted(str(identifier.AccessionNumber)
                      for status, identifier in assoc.send_c_find(
                          query, ModalityWorklistInformationFind)
                      if status and status.Status in PENDING)
    finally:
        assoc.release()
        ae.shutdown()


def started(tmp_path: Path, index: Path) -> Wlmd:
    return start_configured(tmp_path, {**SMALL_POOL, "index_file": str(index)})


def test_a_restart_parses_only_the_files_changed_while_stopped(tmp_path: Path) -> None:
    ae_dir = tmp_path / "db" / ANY_AE
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    for number in range(3):
        write_worklist(ae_dir / f"{number}.wl", worklist_dataset(f"A{number}"))
    index = tmp_path / "cache" / "index.sqlite"
    index.parent.mkdir()

    first = started(tmp_path, index)
    try:
        assert f"Loaded 3 worklist records of {ANY_AE}" in first.log()
        assert "(3 files parsed)" in first.log()
        assert accession_numbers(first.port) == ["A0", "A1", "A2"]
    finally:
        first.stop()
    assert index.stat().st_mode & 0o077 == 0  # patient data: the owner's only

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
