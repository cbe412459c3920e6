"""inotify change detection: names reported, full scans whenever events may be missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wlmd.worklist.inotify import Inotify


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Inotify, str]:
    """A directory with an armed watch (its first ``changes()`` asked for the full scan)."""
    directory = tmp_path / "AE"
    directory.mkdir()
    inotify = Inotify()
    assert inotify.changes(str(directory)) is None  # new watch: scan everything
    return inotify, str(directory)


def test_every_kind_of_change_is_named(watched: tuple[Inotify, str]) -> None:
    inotify, directory = watched
    assert inotify.changes(directory) == set()
    path = Path(directory, "a.wl")
    path.write_bytes(b"1")
    assert inotify.changes(directory) == {"a.wl"}
    assert inotify.changes(directory) == set()  # each change is reported once
    with path.open("ab") as stream:
        stream.write(b"2")
    os.chmod(path, 0o600)
    Path(directory, ".b.wl.new").write_bytes(b"x")
    os.replace(Path(directory, ".b.wl.new"), Path(directory, "b.wl"))
    assert inotify.changes(directory) == {"a.wl", ".b.wl.new", "b.wl"}
    path.unlink()
    Path(directory, "b.wl").rename(Path(directory, "c.wl"))
    assert inotify.changes(directory) == {"a.wl", "b.wl", "c.wl"}


def test_directory_moved_or_replaced_asks_for_a_scan(watched: tuple[Inotify, str],
                                                     tmp_path: Path) -> None:
    inotify, directory = watched
    os.rename(directory, tmp_path / "away")
    assert inotify.changes(directory) is None  # gone: nothing to watch
    os.mkdir(directory)
    assert inotify.changes(directory) is None  # a new directory: new watch, full scan
    assert inotify.changes(directory) == set()
    os.rename(directory, tmp_path / "old")
    os.rename(tmp_path / "away", directory)  # another directory under the same name
    assert inotify.changes(directory) is None
    Path(tmp_path / "old" / "x.wl").write_bytes(b"1")  # the old one is no longer watched
    assert inotify.changes(directory) == set()


def test_queue_overflow_asks_for_a_scan(watched: tuple[Inotify, str]) -> None:
    inotify, directory = watched
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 20_000:
        pytest.skip(f"max_queued_events is {limit}: overflowing it would take too long")
    for number in range(limit // 2 + 10):  # IN_CREATE and IN_CLOSE_WRITE per file
        os.close(os.open(os.path.join(directory, f"{number}.wl"), os.O_CREAT | os.O_WRONLY))
    assert inotify.changes(directory) is None
    assert inotify.changes(directory) == set()


def test_invalidate_asks_for_a_scan(watched: tuple[Inotify, str]) -> None:
    inotify, directory = watched
    inotify.invalidate(directory)
    assert inotify.changes(directory) is None
    assert inotify.changes(directory) == set()


def test_forked_child_opens_its_own_queue(watched: tuple[Inotify, str]) -> None:
    inotify, directory = watched
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, never run pytest's teardown
        try:
            first = inotify.changes(directory)
            Path(directory, "child.wl").write_bytes(b"1")
            second = inotify.changes(directory)
            os.write(write_end, repr((first, second)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as stream:
        seen = stream.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen == repr((None, {"child.wl"}))
    # the parent's queue was not drained by the child
    assert inotify.changes(directory) == {"child.wl"}
