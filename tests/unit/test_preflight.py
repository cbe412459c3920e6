"""``--check-config`` finds what start-up would trip on: real directories and sockets."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support.processes import free_port
from wlmd.config.settings import Settings
from wlmd.daemon.preflight import preflight

REPO = Path(__file__).resolve().parents[2]


def worklist_tree(root: Path, *aes: str, lockfile: bool = True) -> Path:
    for ae in aes:
        (root / ae).mkdir(parents=True)
        if lockfile:
            (root / ae / "lockfile").touch()
    return root


def settings(data: Path, **changes: object) -> Settings:
    return Settings(port=free_port(), listen_address="127.0.0.1", data_files_path=data,
                    **changes)  # type: ignore[arg-type]


def messages(found: list) -> list[str]:
    return [str(finding) for finding in found]


def test_a_ready_tree_has_no_findings(tmp_path: Path) -> None:
    data = worklist_tree(tmp_path / "wl", "CT01", "MR01")
    assert preflight(settings(data, index_file=tmp_path / "index.sqlite")) == []


def test_missing_data_path_is_fatal(tmp_path: Path) -> None:
    found = preflight(settings(tmp_path / "missing"))
    assert [f.fatal for f in found] == [True]
    assert messages(found) == [f"error: data files path {tmp_path / 'missing'} is not a directory"]


def test_ae_directories_without_lockfile_or_at_all_are_warnings(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert messages(preflight(settings(empty))) == [
        f"warning: data files path {empty} has no AE title directory: every association "
        "will be rejected"]
    data = worklist_tree(tmp_path / "wl", "CT01", lockfile=False)
    found = preflight(settings(data))
    assert messages(found) == [
        f"warning: {data / 'CT01' / 'lockfile'} is missing: writers cannot lock CT01"]
    assert not found[0].fatal


def test_index_file_directory_missing_is_a_warning(tmp_path: Path) -> None:
    data = worklist_tree(tmp_path / "wl", "CT01")
    found = preflight(settings(data, index_file=tmp_path / "nowhere" / "index.sqlite"))
    assert [(f.fatal, "index file directory" in f.message) for f in found] == [(False, True)]


def test_port_in_use_is_found(tmp_path: Path) -> None:
    data = worklist_tree(tmp_path / "wl", "CT01")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        found = preflight(Settings(port=port, listen_address="127.0.0.1", data_files_path=data))
    assert [f.fatal for f in found] == [False]
    assert f"127.0.0.1:{port}" in found[0].message and "in use" in found[0].message


def test_unknown_user_and_group_are_fatal(tmp_path: Path) -> None:
    data = worklist_tree(tmp_path / "wl", "CT01")
    found = preflight(settings(data, user="no-such-user-wlmd", group="no-such-group-wlmd"))
    assert messages(found) == ["error: user 'no-such-user-wlmd' does not exist",
                               "error: group 'no-such-group-wlmd' does not exist"]


def test_check_config_exit_status_follows_the_findings(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "wlmd", "--config", "/dev/null", "--check-config",
            "--listen-address", "127.0.0.1"]
    data = worklist_tree(tmp_path / "wl", "CT01", lockfile=False)
    warned = subprocess.run([*base, "-dfp", str(data), str(free_port())], capture_output=True,
                            text=True, timeout=30, cwd=REPO)
    assert (warned.returncode, warned.stdout) == (0, "configuration OK\n")
    assert "warning: " in warned.stderr and "lockfile is missing" in warned.stderr
    failed = subprocess.run([*base, "-dfp", str(tmp_path / "missing"), str(free_port())],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert (failed.returncode, failed.stdout) == (1, "")
    assert "error: data files path" in failed.stderr


def test_check_config_prints_the_ip_allow_list_for_plain_address_rules(tmp_path: Path) -> None:
    (tmp_path / "allow").write_text("wlmd: 10.0.0.0/8, 192.168.1.\n")
    (tmp_path / "deny").write_text("wlmd: ALL\n")
    data = worklist_tree(tmp_path / "wl", "CT01")
    result = subprocess.run(
        [sys.executable, "-m", "wlmd", "--config", "/dev/null", "--check-config", "+ac",
         "--hosts-allow", str(tmp_path / "allow"), "--hosts-deny", str(tmp_path / "deny"),
         "--listen-address", "127.0.0.1", "-dfp", str(data), str(free_port())],
        capture_output=True, text=True, timeout=30, cwd=REPO)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("configuration OK\n")
    assert result.stdout.endswith(
        "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost 10.0.0.0/8 192.168.1.0/24\n")
