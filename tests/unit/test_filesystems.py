"""Shared file systems are scanned, never trusted to inotify (``--refresh``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wlmd.config.settings import RefreshMode
from wlmd.worklist import inotify as inotify_module
from wlmd.worklist.filesystems import SHARED_FILESYSTEMS, filesystem_type, shared_filesystem
from wlmd.worklist.inotify import Inotify


def test_statfs_names_local_and_kernel_file_systems(tmp_path: Path) -> None:
    assert filesystem_type("/proc") == 0x9FA0  # PROC_SUPER_MAGIC
    assert filesystem_type(str(tmp_path)) not in (None, *SHARED_FILESYSTEMS)
    assert shared_filesystem(str(tmp_path)) is None
    assert filesystem_type(str(tmp_path / "missing")) is None


def touch_and_ask(inotify: Inotify, directory: Path) -> set[str] | None:
    """Arm the watch, change a file, and ask what changed."""
    inotify.changes(str(directory))
    (directory / "a.wl").write_bytes(b"x")
    return inotify.changes(str(directory))


def test_inotify_mode_reports_names(tmp_path: Path) -> None:
    assert touch_and_ask(Inotify(RefreshMode.INOTIFY), tmp_path) == {"a.wl"}


def test_stat_mode_always_asks_for_a_scan(tmp_path: Path) -> None:
    assert touch_and_ask(Inotify(RefreshMode.STAT), tmp_path) is None


@pytest.mark.parametrize(("found", "expected"), [("nfs", None), (None, {"a.wl"})])
def test_auto_mode_scans_shared_file_systems_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, found: str | None,
        expected: set[str] | None) -> None:
    monkeypatch.setattr(inotify_module, "shared_filesystem", lambda path: found)
    assert touch_and_ask(Inotify(RefreshMode.AUTO), tmp_path) == expected
    assert os.path.isdir(tmp_path)
