"""The worklist store: discovery, stat-based refresh, the lockfile (docs/compat.md §2)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmwrite

from tests.support.worklists import (
    AE,
    accessions,
    add,
    make_case,
    query_wlmscpfs,
    worklist_dataset,
    write_worklist,
)
from wlmd.cli import PreloadedService
from wlmd.config.settings import Settings
from wlmd.daemon.pool import ChildProcesses
from wlmd.worklist import store as store_module
from wlmd.worklist.index import prefilter_of
from wlmd.worklist.preload import preload
from wlmd.worklist.query import PreparedQuery
from wlmd.worklist.store import (
    DataSourceError,
    LockfileError,
    WorklistStore,
    is_safe_ae,
    is_worklist_name,
)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(("name", "used"), [
    ("a.wl", True), (".hidden.wl", True), ("..wl", True), ("a.b.wl", True),
    (".wl", False), ("x.WL", False), ("x.wl.bak", False), ("wl", False), ("x.wlx", False),
])
def test_worklist_names(name: str, used: bool) -> None:
    assert is_worklist_name(name) is used


@pytest.mark.parametrize(("ae", "safe"), [
    ("OFFIS", True), (" OFFIS", True), ("A" * 16, True), ("a.b", True),
    ("", False), ("A" * 17, False), (".", False), ("..", False), ("../db", False),
    ("OFFIS/", False), ("a..b", False), ("OF\0FIS", False), ("OF\nFIS", False),
    ("OF\\FIS", False), ("\\", False), ("OF\tFIS", False), ("OF\x1bFIS", False),
    ("OF\x7fFIS", False),
])
def test_safe_ae_titles(ae: str, safe: bool) -> None:
    assert is_safe_ae(ae) is safe


def test_called_ae_lookup(root: Path) -> None:
    (root / " LEAD").mkdir()
    (root / "a..b").mkdir()
    (root.parent / "outside").mkdir()
    (root / "LINKED").symlink_to(root.parent / "outside")
    (root / "ALIAS").symlink_to(root / AE)
    store = WorklistStore(root, file_reject=True)
    assert store.knows_called_ae("ALIAS")  # a link that resolves inside -dfp
    assert store.knows_called_ae(AE)
    assert store.knows_called_ae(" LEAD")  # a leading space counts
    assert not store.knows_called_ae("offis")  # case-sensitive
    assert not store.knows_called_ae("NOPE")
    assert not store.knows_called_ae("a..b")  # unsafe even though the directory exists
    assert not store.knows_called_ae(f"../{root.name}/{AE}")
    assert not store.knows_called_ae(".")
    assert not store.knows_called_ae("LINKED")  # resolves outside -dfp
    (root / AE / "x.wl").touch()
    assert not store.knows_called_ae(f"{AE}/x.wl")


def test_check_root(tmp_path: Path, root: Path) -> None:
    WorklistStore(root, file_reject=True).check_root()
    with pytest.raises(DataSourceError):
        WorklistStore(tmp_path / "missing", file_reject=True).check_root()
    (tmp_path / "plain").touch()
    with pytest.raises(DataSourceError):
        WorklistStore(tmp_path / "plain", file_reject=True).check_root()


def test_discovery_rules(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    for number, name in enumerate([".hidden.wl", ".wl", "x.WL", "x.wl.bak", "plain.wl"]):
        add(root, name, accession=f"A{number}")
    (root / AE / "sub.wl").mkdir()
    add(root, "sub.wl/inner.wl", accession="NESTED")
    store = WorklistStore(root, file_reject=True)
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        assert sorted(accessions(store)) == ["A0", "A4"]
    assert f'Could not read worklist file "{root}/{AE}/sub.wl", file will be ignored: ' \
        "Is a directory" in warnings_of(caplog)


@pytest.mark.interop
def test_discovery_and_bad_files_match_wlmscpfs(root: Path) -> None:
    """The same files are served as by the real wlmscpfs, with and without -dfr."""
    names = [".hidden.wl", ".wl", "x.WL", "x.wl.bak", "plain.wl", "..wl"]
    for number, name in enumerate(names):
        add(root, name, accession=f"A{number}")
    (root / AE / "sub.wl").mkdir()
    (root / AE / "empty.wl").touch()
    (root / AE / "garbage.wl").write_bytes(b"garbage garbage\n")
    whole = (root / AE / "plain.wl").read_bytes()
    (root / AE / "truncated.wl").write_bytes(whole[:-3])
    make_case(root / AE, "no_patient_id", accession="REJECTED")
    for options, file_reject in (([], True), (["-dfr"], False)):
        served, _ = query_wlmscpfs(root.parent, AE, options)
        assert set(accessions(WorklistStore(root, file_reject=file_reject))) == served
    assert "REJECTED" in served  # -dfr serves incomplete files


def test_raw_and_implicit_vr_files_keep_raw_values(root: Path) -> None:
    ds = worklist_dataset("IMPLICIT")
    ds.PatientID = "AV35674"  # written padded to "AV35674 "
    dcmwrite(root / AE / "implicit.wl", ds, implicit_vr=True, little_endian=True)
    record, = WorklistStore(root, file_reject=True).query(AE, None)
    assert record.name == "implicit.wl"
    assert record.dataset.get_item(0x00100020).value == b"AV35674 "


def test_stat_based_refresh(root: Path) -> None:
    add(root, "a.wl", accession="A", date="19990101")
    add(root, "b.wl", accession="B", date="19980101")
    store = WorklistStore(root, file_reject=True)
    assert accessions(store) == ["B", "A"]  # SPS start date first
    assert store.parse_count == 2
    assert accessions(store) == ["B", "A"]
    assert store.parse_count == 2  # nothing changed, nothing parsed
    add(root, "a.wl", accession="A2", date="19970101")
    assert accessions(store) == ["A2", "B"]
    assert store.parse_count == 3  # only the changed file
    add(root, "c.wl", accession="C", date="19970101", time_="000000")
    assert accessions(store) == ["C", "A2", "B"]
    assert store.parse_count == 4
    (root / AE / "b.wl").unlink()
    assert accessions(store) == ["C", "A2"]
    assert store.parse_count == 4


def test_equal_start_orders_by_file_name(root: Path) -> None:
    for name in ("c.wl", "a.wl", "b.wl"):
        add(root, name, accession=name[0])
    assert accessions(WorklistStore(root, file_reject=True)) == ["a", "b", "c"]


def test_bad_files_are_logged_once_per_version(root: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    add(root, "good.wl", accession="GOOD")
    whole = (root / AE / "good.wl").read_bytes()
    (root / AE / "empty.wl").touch()
    (root / AE / "garbage.wl").write_bytes(b"garbage garbage\n")
    (root / AE / "truncated.wl").write_bytes(whole[:-3])
    (root / AE / "header.wl").write_bytes(whole + b"\x10\x00")  # a partial element header
    make_case(root / AE, "no_patient_id")
    store = WorklistStore(root, file_reject=True)
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        for _ in range(3):
            assert accessions(store) == ["GOOD"]
    path = f"{root}/{AE}"
    assert sorted(m for m in warnings_of(caplog) if "ignored" in m) == sorted([
        f'Could not read worklist file "{path}/empty.wl", file will be ignored: End of stream',
        f'Could not read worklist file "{path}/garbage.wl", file will be ignored: '
        "I/O suspension or premature end of stream",
        f'Could not read worklist file "{path}/truncated.wl", file will be ignored: '
        "I/O suspension or premature end of stream",
        f'Could not read worklist file "{path}/header.wl", file will be ignored: '
        "I/O suspension or premature end of stream",
        f'Worklist file "{path}/no_patient_id.wl" is incomplete, file will be ignored',
    ])
    caplog.clear()
    (root / AE / "garbage.wl").write_bytes(b"other garbage\n")
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        assert accessions(store) == ["GOOD"]
    assert len(warnings_of(caplog)) == 1  # a new version is reported again


def test_special_and_oversized_files_are_skipped(root: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    add(root, "good.wl", accession="GOOD")
    os.mkfifo(root / AE / "fifo.wl")  # opening it for reading would block
    add(root, "big.wl", accession="BIG").write_bytes(b"\0" * 70_000)
    (root / AE / "dangling.wl").symlink_to(root / AE / "missing")
    store = WorklistStore(root, file_reject=True, max_file_bytes=65_536)
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        assert accessions(store) == ["GOOD"]
    text = "\n".join(warnings_of(caplog))
    assert "fifo.wl\", file will be ignored: not a regular file" in text
    assert "big.wl\", file will be ignored: file too large (70000 bytes" in text
    assert "dangling.wl\", file will be ignored: No such file or directory" in text


def test_symbolic_links_stay_inside_the_root(root: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    (root / "OTHER").mkdir()
    add(root, "../OTHER/shared.wl", accession="INSIDE")
    write_worklist(tmp_path / "outside.wl", worklist_dataset("OUTSIDE"))
    (root / AE / "inside.wl").symlink_to(root / "OTHER" / "shared.wl")
    (root / AE / "outside.wl").symlink_to(tmp_path / "outside.wl")
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        assert accessions(WorklistStore(root, file_reject=True)) == ["INSIDE"]
    assert f'Could not read worklist file "{root}/{AE}/outside.wl", file will be ignored: ' \
        f"symbolic link leads outside {root}" in warnings_of(caplog)


def test_missing_lockfile(root: Path) -> None:
    (root / AE / "lockfile").unlink()
    with pytest.raises(LockfileError, match=f"Cannot open file {root}/{AE}/lockfile"):
        WorklistStore(root, file_reject=True).query(AE, None)


def test_unknown_and_unsafe_ae_raise_lockfile_error(root: Path) -> None:
    store = WorklistStore(root, file_reject=True)
    for ae in ("NOPE", f"../{root.name}/{AE}"):
        with pytest.raises(LockfileError):
            store.query(ae, None)


def test_ae_directory_that_goes_and_comes_back(root: Path) -> None:
    add(root, "a.wl", accession="A")
    store = WorklistStore(root, file_reject=True)
    assert accessions(store) == ["A"]
    (root / AE).rename(root / "away")
    assert not store.knows_called_ae(AE)
    with pytest.raises(LockfileError):
        store.query(AE, None)
    (root / "away").rename(root / AE)
    add(root, "b.wl", accession="B")
    assert accessions(store) == ["A", "B"]


class Locker:
    """A child process holding an ``fcntl`` lock on a lockfile, as DCMTK writers and readers do.

    It holds the lock until its stdin closes, or for ``hold`` seconds.
    """

    SCRIPT = ("import fcntl, os, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_RDWR)\n"
              "fcntl.lockf(fd, getattr(fcntl, sys.argv[2]))\n"
              "print('locked', flush=True)\n"
              "time.sleep(float(sys.argv[3])) if sys.argv[3] else sys.stdin.read()\n")

    def __init__(self, lockfile: Path, mode: str = "LOCK_EX", hold: float | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(lockfile), mode,
             "" if hold is None else str(hold)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"locked\n"

    def release(self) -> None:
        """Let the child exit, which drops its lock."""
        self.proc.communicate(timeout=10)


@pytest.fixture
def lockers(root: Path) -> Iterator[list[Locker]]:
    """Locker processes a test starts; each is released (and reaped) at the end."""
    started: list[Locker] = []
    yield started
    for locker in started:
        locker.release()


def lock(lockers: list[Locker], root: Path, mode: str = "LOCK_EX",
         hold: float | None = None) -> Locker:
    """Start a Locker on the AE's lockfile."""
    lockers.append(Locker(root / AE / "lockfile", mode, hold))
    return lockers[-1]


def test_writer_lock_serves_last_snapshot(root: Path, lockers: list[Locker],
                                          caplog: pytest.LogCaptureFixture) -> None:
    add(root, "a.wl", accession="A")
    store = WorklistStore(root, file_reject=True, lock_wait=5)
    assert accessions(store) == ["A"]
    writer = lock(lockers, root)
    add(root, "b.wl", accession="B")  # a writer's half-finished work
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        started = time.monotonic()
        assert accessions(store) == ["A"]
        assert accessions(store) == ["A"]
        assert time.monotonic() - started < 1  # no stall
    assert len([m for m in warnings_of(caplog) if "write-locked" in m]) == 1  # once per episode
    writer.release()
    assert accessions(store) == ["A", "B"]


def test_writer_lock_without_snapshot_waits_then_fails(root: Path,
                                                       lockers: list[Locker]) -> None:
    add(root, "a.wl", accession="A")
    store = WorklistStore(root, file_reject=True, lock_wait=0.3)
    lock(lockers, root)
    started = time.monotonic()
    with pytest.raises(LockfileError, match="Cannot set read lock on file"):
        store.query(AE, None)
    assert 0.3 <= time.monotonic() - started < 3


def test_writer_lock_released_while_waiting(root: Path, lockers: list[Locker]) -> None:
    add(root, "a.wl", accession="A")
    store = WorklistStore(root, file_reject=True, lock_wait=10)
    lock(lockers, root, hold=0.3)
    started = time.monotonic()
    assert accessions(store) == ["A"]
    assert time.monotonic() - started >= 0.1  # it did wait for the writer


def test_read_lock_is_shared_with_other_readers(root: Path, lockers: list[Locker]) -> None:
    """A DCMTK-style reader holding F_RDLCK does not stop the store."""
    add(root, "a.wl", accession="A")
    lock(lockers, root, "LOCK_SH")
    assert accessions(WorklistStore(root, file_reject=True, lock_wait=0.2)) == ["A"]


def test_store_never_writes_worklist_files(root: Path) -> None:
    add(root, "a.wl", accession="A")
    (root / AE / "garbage.wl").write_bytes(b"garbage")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (root / AE).iterdir()}
    store = WorklistStore(root, file_reject=True)
    store.query(AE, None)
    store.query(AE, None)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (root / AE).iterdir()}
    assert after == before


# --- change detection by inotify, incremental snapshot, prefiltered queries -------------------


def test_unchanged_directory_costs_no_stat_per_file(root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for number in range(20):
        add(root, f"{number:02}.wl", accession=f"{number:02}")
    store = WorklistStore(root, file_reject=True)
    assert len(accessions(store)) == 20
    stats: list[str] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(str(path))
                        or real_stat(path, *a, **k))
    assert len(accessions(store)) == 20
    assert not [path for path in stats if path.endswith(".wl")]  # inotify said: nothing changed
    add(root, "05.wl", accession="NEW")
    assert "NEW" in accessions(store)
    assert [path for path in stats if path.endswith(".wl")] == [str(root / AE / "05.wl")]


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "full-scan"])
def test_random_changes_match_a_fresh_store(root: Path, monkeypatch: pytest.MonkeyPatch,
                                            inotify: bool) -> None:
    """Sorted snapshot and index kept in step by bisection equal a store built from scratch."""
    if not inotify:
        monkeypatch.setattr("wlmd.worklist.inotify.Inotify._open", lambda self: None)
    rng = random.Random(5)
    store = WorklistStore(root, file_reject=True)
    ae_dir = root / AE
    prefilter = prefilter_of(PreparedQuery(station_query(b"AA33"), False))
    for step in range(60):
        names = sorted(p.name for p in ae_dir.glob("*.wl"))
        action = rng.choice(["add", "add", "change", "remove", "rename", "break"])
        if action == "add" or not names:
            add(root, f"{step}.wl", accession=f"N{step}", date=f"1995{rng.randint(1, 3):02}01")
        elif action == "change":
            add(root, rng.choice(names), accession=f"C{step}", date=f"19950{rng.randint(1, 3)}01")
        elif action == "remove":
            (ae_dir / rng.choice(names)).unlink()
        elif action == "rename":
            os.replace(ae_dir / rng.choice(names), ae_dir / f"r{step}.wl")
        else:
            (ae_dir / rng.choice(names)).write_bytes(b"broken")
        fresh = WorklistStore(root, file_reject=True)
        assert accessions(store) == accessions(fresh)
        expected = [r.name for r in fresh.query(AE, None) if r.dataset.AccessionNumber[0] in "NC"]
        assert [r.name for r in store.query(AE, prefilter)] == expected


@pytest.mark.parametrize("fork", [True, False])
def test_few_candidates_keep_response_order_through_changes(root: Path, fork: bool) -> None:
    """A query with few candidates (sorted, not picked from the snapshot) gives them in
    response order while files are added, changed and removed around them: by their rank
    made before a fork, or by their records' sort keys after a change."""
    rng = random.Random(7)
    for number in range(80):
        add(root, f"f{number:02}.wl", accession=f"F{number}", date=f"1995{rng.randint(1, 9):02}01")
    store = WorklistStore(root, file_reject=True)
    prefilter = prefilter_of(PreparedQuery(station_query(b"RARE"), False))
    rare = {"F3", "F17", "F30"}
    for name in rare:
        _rare(root, f"f{name[1:]:0>2}.wl", name, f"1995{rng.randint(1, 9):02}01")
    for step in range(20):
        names = sorted(p.name for p in (root / AE).glob("*.wl"))
        action = rng.choice(["add", "change", "remove", "rare"])
        if action == "add":
            add(root, f"n{step}.wl", accession=f"N{step}", date=f"1995{rng.randint(1, 9):02}01")
        elif action == "change":
            add(root, rng.choice(names), accession=f"C{step}", date=f"1995{rng.randint(1, 9):02}01")
        elif action == "remove":
            (root / AE / rng.choice(names)).unlink()
        else:
            _rare(root, f"r{step}.wl", f"R{step}", f"1995{rng.randint(1, 9):02}01")
        expected = [r.name for r in WorklistStore(root, file_reject=True).query(AE, None)
                    if r.dataset.ScheduledProcedureStepSequence[0].ScheduledStationAETitle
                    == "RARE"]
        if fork:
            with store.forking():
                pass  # what the supervisor does around a fork: the rank is made
        candidates = store.candidates(AE, prefilter)
        assert len(candidates) * store_module.RESORT_FRACTION <= len(store.served(AE))
        assert [r.name for r in candidates.records()] == expected


def _rare(root: Path, name: str, accession: str, date: str) -> None:
    """A worklist file scheduled on station RARE."""
    dataset = worklist_dataset(accession)
    dataset.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "RARE"
    dataset.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = date
    write_worklist(root / AE / name, dataset)


def station_query(station: bytes) -> Dataset:
    """A search mask asking for one scheduled station AE title (every test record has AA33)."""
    item = Dataset()
    item.add_new(0x00400001, "AE", station.decode())
    mask = Dataset()
    mask.add_new(0x00400100, "SQ", [item])
    return mask


def test_query_gives_only_candidates_in_order(root: Path) -> None:
    add(root, "b.wl", accession="B", date="19950102")
    add(root, "a.wl", accession="A", date="19950103")
    other = worklist_dataset("OTHER")
    other.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "ELSEWHERE"
    write_worklist(root / AE / "c.wl", other)
    store = WorklistStore(root, file_reject=True)
    assert accessions(store) == ["B", "A", "OTHER"]
    found = store.query(AE, prefilter_of(PreparedQuery(station_query(b"AA33"), False)))
    assert [r.dataset.AccessionNumber for r in found] == ["B", "A"]
    assert [r.dataset.AccessionNumber for r in store.query(AE, None)] == ["B", "A", "OTHER"]


def test_symbolic_link_target_changed_elsewhere(root: Path) -> None:
    (root / "OTHER").mkdir()
    add(root, "../OTHER/shared.wl", accession="FIRST")
    (root / AE / "link.wl").symlink_to(root / "OTHER" / "shared.wl")
    store = WorklistStore(root, file_reject=True)
    assert accessions(store) == ["FIRST"]
    add(root, "../OTHER/shared.wl", accession="SECOND")  # no event in the watched directory
    assert accessions(store) == ["SECOND"]
    (root / AE / "link.wl").unlink()
    assert accessions(store) == []


def from_child(body: Callable[[], str],
               around: contextlib.AbstractContextManager[object] | None = None) -> str:
    """Fork (inside ``around``), run ``body`` in the child and return what it reported, or
    its error; the child never runs pytest's teardown."""
    read_end, write_end = os.pipe()
    with around or contextlib.nullcontext():
        pid = os.fork()
        if pid == 0:
            try:
                os.write(write_end, body().encode())
            except BaseException as error:  # reported to the parent
                os.write(write_end, repr(error).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as stream:
        return stream.read().decode()


def test_forked_child_sees_changes_made_after_the_fork(root: Path) -> None:
    add(root, "a.wl", accession="A")
    store = WorklistStore(root, file_reject=True)
    assert accessions(store) == ["A"]

    def child() -> str:
        add(root, "b.wl", accession="B")
        return ",".join(accessions(store))

    assert from_child(child) == "A,B"
    assert accessions(store) == ["A", "B"]  # the parent's own queue saw it too


def test_preloaded_records_are_inherited_by_forked_workers(root: Path) -> None:
    """The supervisor parses once; a worker forked afterwards re-stats but parses nothing."""
    add(root, "a.wl", accession="A")
    (root / "SECOND").mkdir()
    (root / "SECOND" / "lockfile").touch()
    write_worklist(root / "SECOND" / "b.wl", worklist_dataset("B"))
    services = PreloadedService()
    service = services(Settings(port=0, data_files_path=root))
    assert services(Settings(port=0, data_files_path=root)) is service  # built once
    store = service._store
    assert store.parse_count == 2  # both AE directories, before any query

    def worker() -> str:
        served = accessions(store) + accessions(store, "SECOND")
        return f"{','.join(served)} {store.parse_count}"

    assert from_child(worker) == "A,B 2"


def test_a_worker_forked_inside_forking_starts_current_without_a_full_scan(
        root: Path) -> None:
    """The supervisor refreshes before the fork and hands the child an inotify queue armed
    before that refresh: changes from both sides of the fork are seen, and the child never
    lists the directory (a full scan would stat, and un-share, every entry)."""
    add(root, "a.wl", accession="A")
    store = WorklistStore(root, file_reject=True)
    preload(store, ChildProcesses(1))
    add(root, "b.wl", accession="B")  # after the load, before the fork

    def worker() -> str:
        store_module._list_worklist_files = _no_full_scan
        add(root, "c.wl", accession="C")  # after the fork
        return ",".join(accessions(store))

    assert from_child(worker, around=store.forking()) == "A,B,C"
    assert accessions(store) == ["A", "B", "C"]


def _no_full_scan(ae_dir: str) -> dict[str, bool]:
    raise AssertionError(f"full scan of {ae_dir}")
