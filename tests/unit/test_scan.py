"""Answers read from the files while the worklist loads (``scan.py``): every query finds exactly
the records, in exactly the order, that the loaded store's candidates give, whatever the files'
encodings, and the byte screens leave most files unparsed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from tests.support.datasets import dataset, raw, sequence
from wlmd.worklist.compact import screens
from wlmd.worklist.matching import matches
from wlmd.worklist.query import PreparedQuery, prepare_query
from wlmd.worklist.store import Candidates, LockfileError, WorklistStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AE = "ALL"

EDGE_QUERIES = [
    dataset(raw("PatientName", "PN", b"*")),
    dataset(raw("AccessionNumber", "SH", b"")),  # universal: every file is parsed
    dataset(sequence("ScheduledProcedureStepSequence",
                     dataset(raw("Modality", "CS", b"MR")))),
    dataset(sequence("ScheduledProcedureStepSequence",
                     dataset(raw("ScheduledStationAETitle", "AE", b"MR01")))),
    dataset(raw("PatientComments", "LT", b"")),
]


def _queries() -> list[Dataset]:
    return [dcmread(path) for path in sorted((EXAMPLES / "queries").glob("*.dcm"))] \
        + EDGE_QUERIES


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every example entry, each also as implicit VR, big endian and deflated, plus files
    the screens must not judge: a link, a FIFO, a directory, an empty and a long file."""
    root = tmp_path_factory.mktemp("scan")
    ae_dir = root / AE
    ae_dir.mkdir()
    (ae_dir / "lockfile").touch()
    examples = sorted((EXAMPLES / "worklists").rglob("*.wl"))
    for path in examples:
        shutil.copy(path, ae_dir / f"{path.parent.name}-{path.name}")
    for number, path in enumerate(examples[::4]):
        entry = dcmread(path)
        entry.AccessionNumber = f"V{number}"
        for kind, syntax in (("implicit", ImplicitVRLittleEndian), ("big", ExplicitVRBigEndian),
                             ("deflated", DeflatedExplicitVRLittleEndian)):
            entry.file_meta.TransferSyntaxUID = syntax
            dcmwrite(ae_dir / f"{kind}-{number}.wl", entry, enforce_file_format=True)
    long_entry = dcmread(examples[0])
    long_entry.PatientComments = "LONG " * 20_000  # past what the screens read
    long_entry.save_as(ae_dir / "long.wl")
    os.symlink(ae_dir / f"{examples[1].parent.name}-{examples[1].name}", ae_dir / "link.wl")
    os.mkfifo(ae_dir / "fifo.wl")
    (ae_dir / "directory.wl").mkdir()
    (ae_dir / "empty.wl").touch()
    return root


def answered(candidates: Candidates, query: PreparedQuery) -> list[str]:
    """The names of the candidates that match, in the order served."""
    return [candidates.record(number).name for number in candidates.numbers
            if matches(query, candidates.match_view(number))]


@pytest.mark.parametrize("identifier", _queries(), ids=lambda q: repr(sorted(q.keys()))[:60])
def test_a_scan_answers_as_the_loaded_store(root: Path, identifier: Dataset) -> None:
    query = prepare_query(identifier, no_fail=True, expand_sequences=True)
    loaded = WorklistStore(root, file_reject=True)
    expected = answered(loaded.candidates(AE, None), query)
    scanning = WorklistStore(root, file_reject=True)
    assert answered(scanning.scanned(AE, screens(query)), query) == expected
    assert answered(scanning.scanned(AE, ()), query) == expected


def test_screens_leave_most_files_unparsed_and_the_odd_ones_to_the_loader(root: Path) -> None:
    store = WorklistStore(root, file_reject=True)
    every = store.scanned(AE, ())
    names = {every.record(number).name for number in every.numbers}
    assert {"long.wl", "link.wl", "implicit-0.wl", "big-0.wl", "deflated-0.wl"} <= names
    assert not names & {"fifo.wl", "directory.wl", "empty.wl"}  # refused by the loader
    query = prepare_query(dataset(raw("AccessionNumber", "SH", b"V1")), no_fail=True,
                          expand_sequences=True)
    found = store.scanned(AE, screens(query))
    parsed = {found.record(number).name for number in found.numbers}
    # the matches, and what the screens cannot judge: links, long and deflated files
    assert {"implicit-1.wl", "big-1.wl", "deflated-1.wl"} <= parsed
    assert {"long.wl", "link.wl"} <= parsed
    assert len(parsed) < len(names) / 3
    assert answered(found, query) == ["big-1.wl", "deflated-1.wl", "implicit-1.wl"]


def test_a_scan_sees_each_change_at_once(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root, tmp_path / "db", symlinks=True, ignore=lambda _d, names: [
        name for name in names if name == "fifo.wl"])
    store = WorklistStore(tmp_path / "db", file_reject=True)
    query = prepare_query(dataset(raw("AccessionNumber", "SH", b"V2")), no_fail=True,
                          expand_sequences=True)
    assert len(answered(store.scanned(AE, screens(query)), query)) == 3
    (tmp_path / "db" / AE / "big-2.wl").unlink()
    assert answered(store.scanned(AE, screens(query)), query) == ["deflated-2.wl",
                                                                  "implicit-2.wl"]


def test_a_scan_needs_the_lockfile(root: Path, tmp_path: Path) -> None:
    (tmp_path / AE).mkdir()
    with pytest.raises(LockfileError):
        WorklistStore(tmp_path, file_reject=True).scanned(AE, ())
