"""The index file (``--index-file``): a restart parses only what changed, and never serves
anything the directory does not hold."""

from __future__ import annotations

import logging
import sqlite3
import stat
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.datasets import dataset, raw, sequence
from tests.support.worklists import AE, accessions, add, make_case
from wlmd.daemon.pool import ChildProcesses
from wlmd.worklist import persist
from wlmd.worklist import preload as preload_module
from wlmd.worklist import store as store_module
from wlmd.worklist.index import prefilter_of
from wlmd.worklist.preload import preload
from wlmd.worklist.query import PreparedQuery
from wlmd.worklist.records import FileLoader
from wlmd.worklist.store import ListedFile, Loaded, WorklistStore


def loaded(root: Path, index: Path | None, *, file_reject: bool = True,
           jobs: int = 1) -> WorklistStore:
    """A store preloaded as the supervisor preloads it."""
    store = WorklistStore(root, file_reject=file_reject)
    preload(store, ChildProcesses(jobs), index)
    return store


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return tmp_path / "index.sqlite"


def test_a_restart_parses_nothing_and_serves_the_same(root: Path, index: Path) -> None:
    for number in range(5):
        add(root, f"{number}.wl", accession=f"A{number}", date=f"2024010{number + 1}")
    first = loaded(root, index)
    assert first.parse_count == 5
    second = loaded(root, index)
    assert second.parse_count == 0
    assert accessions(second) == accessions(first) == ["A0", "A1", "A2", "A3", "A4"]
    restarted = second.served(AE)
    assert [r.data for r in restarted] == [r.data for r in first.served(AE)]
    assert len({id(r.shelf) for r in restarted}) == 1  # the bytes of all five on one shelf
    mask = dataset(sequence("ScheduledProcedureStepSequence", dataset(
        raw("ScheduledProcedureStepStartDate", "DA", b"20240103-20240104"))))
    prefilter = prefilter_of(PreparedQuery(mask, unsupported_removed=False))
    assert prefilter is not None
    assert [r.name for r in second.query(AE, prefilter)] == ["2.wl", "3.wl"]


def test_an_index_file_gives_each_record_what_parsing_files_it_under_in_response_order(
        root: Path, index: Path) -> None:
    """``Saved.filings``: name, index keys and packed matching keys, as parsing gives them,
    with each recurring index-key value one object; gone once the store has adopted them."""
    for number in range(4):
        add(root, f"{number}.wl", accession=f"A{number}", date=f"2024010{4 - number}")
    (root / AE / "rejected.wl").write_bytes(b"not DICOM")
    store = loaded(root, index)
    loader = store.loader
    parsed = {}
    for path in sorted((root / AE).glob("[0-9].wl")):
        entry, _ = loader.load(str(path), path.name, path.stat(), False, str(root))
        assert entry is not None and entry.filing is not None
        parsed[path.name] = entry.filing
    with store.open_index_file(index) as index_file:
        assert index_file is not None
        saved = index_file.load(AE)
    assert saved["rejected.wl"].record is None
    filings = list(saved.filings)
    assert [(name, keys, packed) for name, keys, packed in filings] == \
        [(name, *parsed[name]) for name in ("3.wl", "2.wl", "1.wl", "0.wl")]  # by date
    for name, _, _ in filings:
        record = saved[name].record
        assert record is not None and record.name is name  # the entry's own name object
    assert len({id(keys.stations) for _, keys, _ in filings}) == 1
    fresh = WorklistStore(root, file_reject=True)
    fresh.adopt(AE, saved)
    assert list(saved.filings) == []
    assert fresh.refreshed_entries(AE).keys() == saved.keys()


def test_a_file_in_two_parts_is_made_and_filed_once(root: Path, tmp_path: Path) -> None:
    add(root, "one.wl", accession="A")
    path = root / AE / "one.wl"
    entry, _ = WorklistStore(root, file_reject=True).loader.load(
        str(path), path.name, path.stat(), False, str(root))
    assert entry is not None
    parts = [tmp_path / "first.part", tmp_path / "second.part"]
    for part in parts:
        persist.IndexPart(part).save(AE, {"one.wl": entry})
    saved = persist.load_parts(AE, parts)
    assert list(saved) == ["one.wl"]
    assert [name for name, _, _ in saved.filings] == ["one.wl"]


def test_a_record_changed_after_a_restart_leaves_the_index_under_its_old_keys(
        root: Path, index: Path) -> None:
    """The index derives a record's old keys from its packed keys to remove it: a query by
    the old date finds it no more, one by the new date does."""
    add(root, "moved.wl", accession="M", date="20240101")
    add(root, "other.wl", accession="O", date="20240101")
    loaded(root, index)
    restarted = loaded(root, index)
    assert restarted.parse_count == 0
    add(root, "moved.wl", accession="M", date="20240202")

    def on(date: bytes) -> list[str]:
        mask = dataset(sequence("ScheduledProcedureStepSequence", dataset(
            raw("ScheduledProcedureStepStartDate", "DA", date))))
        prefilter = prefilter_of(PreparedQuery(mask, unsupported_removed=False))
        assert prefilter is not None
        return [record.name for record in restarted.query(AE, prefilter)]

    assert on(b"20240101") == ["other.wl"]
    assert on(b"20240202") == ["moved.wl"]
    (root / AE / "moved.wl").unlink()
    assert on(b"20240202") == []


def test_files_changed_while_stopped_are_parsed_again(root: Path, index: Path) -> None:
    for name in ("same.wl", "changed.wl", "removed.wl"):
        add(root, name, accession=name[0].upper())
    loaded(root, index)
    add(root, "changed.wl", accession="NEW")  # a new inode and stat key
    (root / AE / "removed.wl").unlink()
    add(root, "added.wl", accession="ADDED")
    restarted = loaded(root, index)
    assert restarted.parse_count == 2
    assert sorted(accessions(restarted)) == ["ADDED", "NEW", "S"]
    assert loaded(root, index).parse_count == 0  # and the index file caught up


def test_a_first_start_sees_what_changed_while_it_parsed_without_listing_again(
        root: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsing processes get a listing taken with the watch armed; the first refresh then
    looks only at what the watch reports (and at listed files that gave no entry)."""
    for name in ("same.wl", "changed.wl", "removed.wl"):
        add(root, name, accession=name[0].upper())
    load_changed = store_module.load_changed

    def change_meanwhile(loader: FileLoader, listed: ListedFile) -> Loaded | None:
        if listed[1] == "removed.wl":  # in a parsing process, after the listing
            add(root, "changed.wl", accession="NEW")
            (root / AE / "removed.wl").unlink()
            add(root, "added.wl", accession="ADDED")
        return load_changed(loader, listed)

    listings: list[str] = []
    list_files = store_module._list_worklist_files
    monkeypatch.setattr(preload_module, "load_changed", change_meanwhile)
    monkeypatch.setattr(store_module, "_list_worklist_files",
                        lambda ae_dir: listings.append(ae_dir) or list_files(ae_dir))
    first = loaded(root, index)
    assert len(listings) == 1  # the parsing's; the refresh after it asked the watch
    served = sorted(str(record.dataset.AccessionNumber) for record in first.served(AE))
    assert served == ["ADDED", "NEW", "S"]


def test_a_first_start_whose_parsed_rows_were_lost_lists_the_directory_again(
        root: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many listed files without an entry (their part could not be read): the first refresh
    scans the whole directory, which parses in the pool, instead of re-checking each name."""
    add(root, "a.wl", accession="A")
    add(root, "b.wl", accession="B")
    monkeypatch.setattr(store_module, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(preload_module, "load_parts", lambda ae, parts: {})  # rows lost
    listings: list[str] = []
    list_files = store_module._list_worklist_files
    monkeypatch.setattr(store_module, "_list_worklist_files",
                        lambda ae_dir: listings.append(ae_dir) or list_files(ae_dir))
    store = loaded(root, index)
    assert len(listings) == 2
    assert [str(record.dataset.AccessionNumber) for record in store.served(AE)] == ["A", "B"]


def test_other_options_mean_a_full_parse(root: Path, index: Path) -> None:
    """A record saved under -dfr (incomplete files served) must not be served under +dfr."""
    add(root, "a.wl", accession="A")
    make_case(root / AE, "no_patient_id", accession="INCOMPLETE")
    assert sorted(accessions(loaded(root, index, file_reject=False))) == ["A", "INCOMPLETE"]
    strict = loaded(root, index, file_reject=True)
    assert strict.parse_count == 2
    assert accessions(strict) == ["A"]


def test_records_saved_by_another_format_mean_a_full_parse(root: Path, index: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """File bytes compressed against another dictionary (``compression.DICTIONARY_ID``) are
    never decompressed with this one."""
    add(root, "a.wl", accession="A")
    loaded(root, index)
    monkeypatch.setattr(persist, "FORMAT", persist.FORMAT + "-other")
    again = loaded(root, index)
    assert again.parse_count == 1
    assert accessions(again) == ["A"]


def test_a_rejected_file_is_neither_parsed_nor_logged_again_until_it_changes(
        root: Path, index: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Logged by whichever process parses it: read on file descriptor 2, as a journal would."""
    add(root, "a.wl", accession="A")
    broken = root / AE / "broken.wl"
    broken.write_bytes(b"garbage")
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger("wlmd.worklist").addHandler(handler)
    try:
        loaded(root, index)
        assert capfd.readouterr().err.count("broken.wl") == 1
        assert loaded(root, index).parse_count == 0
        assert "broken.wl" not in capfd.readouterr().err
        add(root, "broken.wl", accession="FIXED")
        restarted = loaded(root, index)
    finally:
        logging.getLogger("wlmd.worklist").removeHandler(handler)
    assert restarted.parse_count == 1
    assert accessions(restarted) == ["A", "FIXED"]


@pytest.mark.parametrize("content", [b"", b"not an SQLite file at all" * 100])
def test_a_damaged_index_file_is_rebuilt(root: Path, index: Path, content: bytes) -> None:
    add(root, "a.wl", accession="A")
    index.write_bytes(content)
    assert accessions(loaded(root, index)) == ["A"]
    assert loaded(root, index).parse_count == 0


def test_an_unusable_index_file_only_costs_parsing(root: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    add(root, "a.wl", accession="A")
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        store = loaded(root, tmp_path / "missing-directory" / "index.sqlite")
    assert accessions(store) == ["A"] and store.parse_count == 1
    assert any("Cannot use index file" in r.getMessage() for r in caplog.records)


def test_the_index_file_is_private(root: Path, index: Path) -> None:
    add(root, "a.wl", accession="A")
    loaded(root, index)
    assert stat.S_IMODE(index.stat().st_mode) == 0o600  # it holds patient data


def test_parallel_parsing_gives_what_one_process_gives(root: Path, index: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(store_module, "PARALLEL_BATCH", 3)
    for number in range(10):
        add(root, f"{number}.wl", accession=f"A{number}", date=f"202401{number + 10}")
    (root / AE / "broken.wl").write_bytes(b"garbage")
    parallel = loaded(root, index, jobs=2)
    assert parallel.parse_count == 11
    assert accessions(parallel) == accessions(loaded(root, None))
    assert loaded(root, index).parse_count == 0  # the broken file is saved as rejected


def test_parsing_processes_save_parts_that_are_merged_and_removed(
        root: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first start's parsing processes each fill a part of the index file of their own;
    the rows end up in the index file, and no part (patient data) is left beside it, not
    even one a stopped run left behind."""
    monkeypatch.setattr(store_module, "PARALLEL_BATCH", 2)
    for number in range(7):
        add(root, f"{number}.wl", accession=f"A{number}", date=f"202401{number + 10}")
    stale = index.with_name(f"{index.name}.part-1")
    stale.write_bytes(b"rows of a run that stopped before merging them")
    first = loaded(root, index, jobs=2)
    assert first.parse_count == 7
    assert index.exists() and not list(index.parent.glob(f"{index.name}.part-*"))
    with closing(sqlite3.connect(index)) as db:  # made anew after the merge
        assert db.execute("SELECT count(*) FROM records").fetchone() == (7,)
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                          "name = 'records_in_order'").fetchone() == ("records_in_order",)
    restarted = loaded(root, index)
    assert restarted.parse_count == 0
    assert accessions(restarted) == accessions(first) == [f"A{n}" for n in range(7)]


def test_a_part_that_cannot_be_read_only_costs_parsing(
        root: Path, index: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A damaged part is neither served nor merged: its files are parsed again, and the
    index file stays as it was until the refresh saves them."""
    add(root, "a.wl", accession="A")
    add(root, "b.wl", accession="B")
    real_save = persist.IndexPart.save

    def save_damaged(self: persist.IndexPart, ae: str, entries: object) -> None:
        real_save(self, ae, entries)  # type: ignore[arg-type]
        self.path.write_bytes(b"not an SQLite file" * 100)

    monkeypatch.setattr(persist.IndexPart, "save", save_damaged)  # in the parsing process
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        store = loaded(root, index)
    assert accessions(store) == ["A", "B"]
    assert store.parse_count == 4  # parsed for the part, then again from the directory
    messages = [r.getMessage() for r in caplog.records]
    assert any("Cannot read index file" in m and f"parsing {AE} afresh" in m
               for m in messages)
    assert any("Cannot update index file" in m for m in messages)  # the merge's
    assert index.exists() and not list(index.parent.glob(f"{index.name}.part-*"))
    assert loaded(root, index).parse_count == 0  # the refresh saved them after all
