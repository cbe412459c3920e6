"""Link candidates of an MPPS (wlmd.mpps.links): an index per worker kept current by inotify.

Files are written by pydicom and by wlmd's writer between lookups, as the RIS, HL7 intake and
the other workers would; every lookup must see them without asking the store.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import UID, ImplicitVRLittleEndian

from tests.support.mpps import write_entry
from wlmd.config.settings import RefreshMode
from wlmd.mpps import links
from wlmd.mpps.links import LinkCandidates, Wanted
from wlmd.worklist.store import WorklistStore
from wlmd.worklist.writer import WorklistWriter, encode_entry


def ae_directory(tmp_path: Path, count: int = 3) -> Path:
    directory = tmp_path / "AE"
    directory.mkdir()
    (directory / "lockfile").touch()
    for n in range(count):
        write_entry(directory, f"ACC{n}", f"1.2.3.{n}")
    return directory


def study(uid: str) -> list[Wanted]:
    return [Wanted(uid, "")]


def test_entries_are_found_by_study_uid_or_by_accession(tmp_path: Path) -> None:
    directory = ae_directory(tmp_path)
    candidates = LinkCandidates(None)
    assert candidates.names("AE", directory, study("1.2.3.1")) == ["ACC1.wl"]
    assert candidates.names("AE", directory, [Wanted("", "ACC2")]) == ["ACC2.wl"]
    assert candidates.names("AE", directory, study("1.2.3.9")) == []


def test_files_written_after_the_first_lookup_are_found(tmp_path: Path) -> None:
    directory = ae_directory(tmp_path)
    candidates = LinkCandidates(None, RefreshMode.INOTIFY)
    assert candidates.names("AE", directory, study("1.2.3.7")) == []
    write_entry(directory, "ACC7", "1.2.3.7")
    assert candidates.names("AE", directory, study("1.2.3.7")) == ["ACC7.wl"]

    def restudied(data: bytes) -> bytes:
        entry = dcmread(io.BytesIO(data))
        entry.StudyInstanceUID = "1.2.3.8"
        return encode_entry(entry)

    assert WorklistWriter(tmp_path).update("AE", "ACC0.wl", restudied)
    assert "ACC0.wl" in candidates.names("AE", directory, study("1.2.3.8"))


def test_an_entry_in_another_layout_is_found_by_its_bytes(tmp_path: Path) -> None:
    directory = ae_directory(tmp_path, count=1)
    candidates = LinkCandidates(None, RefreshMode.INOTIFY)
    assert candidates.names("AE", directory, study("1.2.3.5")) == []
    ds = dcmread(write_entry(tmp_path, "ACC5", "1.2.3.5"))
    ds.file_meta.TransferSyntaxUID = UID(ImplicitVRLittleEndian)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    (directory / "ACC5.wl").write_bytes(buffer.getvalue())
    assert candidates.names("AE", directory, study("1.2.3.5")) == ["ACC5.wl"]


def test_a_changed_or_removed_entry_leaves_its_old_values(tmp_path: Path) -> None:
    directory = ae_directory(tmp_path)
    candidates = LinkCandidates(None, RefreshMode.INOTIFY)
    assert candidates.names("AE", directory, study("1.2.3.0")) == ["ACC0.wl"]
    writer = WorklistWriter(tmp_path)
    ds = dcmread(directory / "ACC0.wl")
    ds.StudyInstanceUID = "1.2.3.8"
    writer.write("AE", "ACC0.wl", encode_entry(ds), replace=True)
    writer.remove("AE", "ACC1.wl")
    assert candidates.names("AE", directory, study("1.2.3.8")) == ["ACC0.wl"]
    assert candidates.names("AE", directory, study("1.2.3.0")) == []
    assert candidates.names("AE", directory, study("1.2.3.1")) == []
    assert candidates.names("AE", directory, study("1.2.3.2")) == ["ACC2.wl"]


def test_many_changes_keep_every_entry_findable(tmp_path: Path) -> None:
    directory = ae_directory(tmp_path, count=1)
    candidates = LinkCandidates(None, RefreshMode.INOTIFY)
    writer = WorklistWriter(tmp_path)
    for n in range(1, 6):
        assert candidates.names("AE", directory, study(f"1.2.3.{n - 1}")) == [f"ACC{n - 1}.wl"]
        ds = dcmread(write_entry(tmp_path, f"ACC{n}", f"1.2.3.{n}"))
        writer.write("AE", f"ACC{n}.wl", encode_entry(ds))
        writer.write("AE", f"ACC{n - 1}.wl", encode_entry(dcmread(directory / f"ACC{n - 1}.wl")),
                     replace=True)
    assert candidates.names("AE", directory, study("1.2.3.5")) == ["ACC5.wl"]
    assert candidates.names("AE", directory, study("1.2.3.0")) == ["ACC0.wl"]


def test_where_inotify_is_not_used_the_store_is_asked(tmp_path: Path) -> None:
    directory = ae_directory(tmp_path)
    store = WorklistStore(tmp_path, file_reject=False, refresh=RefreshMode.STAT)
    candidates = LinkCandidates(store, RefreshMode.STAT)
    assert candidates.names("AE", directory, study("1.2.3.2")) == ["ACC2.wl"]
    write_entry(directory, "ACC4", "1.2.3.4")
    assert candidates.names("AE", directory, study("1.2.3.4")) == ["ACC4.wl"]
    assert LinkCandidates(None, RefreshMode.STAT).names("AE", directory, study("1.2.3.2")) is None


def test_a_worker_forked_in_forking_starts_from_the_index_and_sees_later_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = ae_directory(tmp_path)
    candidates = LinkCandidates(None)
    read, write = os.pipe()
    with candidates.forking([directory]):
        write_entry(directory, "ACC5", "1.2.3.5")  # after the queue was armed, before the fork
        pid = os.fork()
        if pid == 0:  # the worker: never rebuilds, finds entries written before and after
            os.close(read)
            code = 1
            try:
                monkeypatch.setattr(links, "_build", lambda path: pytest.fail("rebuilt"))
                write_entry(directory, "ACC6", "1.2.3.6")
                found = [candidates.names("AE", directory, study(f"1.2.3.{n}")) for n in (1, 5, 6)]
                os.write(write, repr(found).encode())
                code = 0
            finally:
                os._exit(code)
    os.close(write)
    with os.fdopen(read) as result:
        answer = result.read()
    assert os.waitpid(pid, 0)[1] == 0
    assert answer == repr([["ACC1.wl"], ["ACC5.wl"], ["ACC6.wl"]])
