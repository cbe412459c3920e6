"""The committed examples (examples/worklists, examples/queries) and their generator."""

from __future__ import annotations

import datetime as dt
import filecmp
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support import corpus, differential, processes

WORKLISTS = corpus.EXAMPLES / "worklists"
QUERY_DIR = corpus.EXAMPLES / "queries"


def tree(root: Path) -> list[str]:
    """Relative paths of every file under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    """make_worklists.py is deterministic and the committed output is what it writes."""
    generator = corpus.load_generator()
    generator.main(["--out", str(tmp_path / "w"), "--queries", str(tmp_path / "q")])
    for fresh, committed in ((tmp_path / "w", WORKLISTS), (tmp_path / "q", QUERY_DIR)):
        assert tree(fresh) == tree(committed)
        _, mismatch, errors = filecmp.cmpfiles(fresh, committed, tree(fresh), shallow=False)
        assert (mismatch, errors) == ([], [])


def test_today_moves_the_schedule(tmp_path: Path) -> None:
    """--today lays the schedule around the current date."""
    generator = corpus.load_generator()
    generator.main(["--today", "--out", str(tmp_path / "w"), "--queries", str(tmp_path / "q")])
    dates = {dcmread(p).ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate
             for p in (tmp_path / "w" / "WORKLIST").glob("*.wl")}
    assert dt.date.today().strftime("%Y%m%d") in dates


@pytest.mark.interop
def test_wlmscpfs_serves_every_example_entry(tmp_path: Path) -> None:
    """Every committed entry passes wlmscpfs's file-reject rules: a universal query gets all."""
    processes.require_dcmtk()
    proc, port = differential.start_server("wlmscpfs", WORKLISTS, (), tmp_path / "server.log")
    try:
        for ae in corpus.EXAMPLE_AES:
            session = differential.run_findscu(port, ae, {"all": QUERY_DIR / "all_entries.dcm"},
                                          tmp_path / ae)
            outcome = session.outcomes["all"]
            assert outcome.final == "0x0000"
            assert sum(outcome.responses.values()) == len(list((WORKLISTS / ae).glob("*.wl")))
    finally:
        processes.stop_process(proc)
    assert "incomplete" not in (tmp_path / "server.log").read_text()


@pytest.mark.interop
@pytest.mark.parametrize("dump", sorted(QUERY_DIR.glob("*.dump")), ids=lambda p: p.stem)
def test_query_dump_matches_dicom(tmp_path: Path, dump: Path) -> None:
    """Each example .dump converts (dump2dcm) to the same dataset as the committed .dcm."""
    processes.require_dcmtk("dump2dcm")
    converted = dcmread(processes.dump2dcm(dump, tmp_path / "q.dcm"))
    committed = dcmread(dump.with_suffix(".dcm"))
    assert list(differential.canonical(converted)) == list(differential.canonical(committed))
