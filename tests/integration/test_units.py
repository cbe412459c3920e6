"""The systemd units and snippets in systemd/, checked by systemd's own tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import require_tool
from wlmd.config.file import load_config
from wlmd.config.settings import Settings

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED_PATH = "/usr/bin/wlmd"
INSTALLED_WLMCTL = "/usr/bin/wlmctl"


def unit_settings(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of a repeated key in order."""
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD_DIR / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """Copies of both units whose ExecStart names a program that exists on this machine."""
    program = shutil.which("wlmd") or sys.executable
    service = (SYSTEMD_DIR / "wlmd.service").read_text()
    assert f"ExecStart={INSTALLED_PATH} " in service
    (tmp_path / "wlmd.service").write_text(service.replace(INSTALLED_PATH, program))
    shutil.copy(SYSTEMD_DIR / "wlmd.socket", tmp_path)
    return tmp_path


@pytest.fixture
def expire_unit_dir(tmp_path: Path) -> Path:
    """Copies of the expire service and timer, ExecStart naming a program that exists here."""
    program = shutil.which("wlmctl") or sys.executable
    service = (SYSTEMD_DIR / "wlmd-expire.service").read_text()
    assert f"ExecStart={INSTALLED_WLMCTL} " in service
    (tmp_path / "wlmd-expire.service").write_text(service.replace(INSTALLED_WLMCTL, program))
    shutil.copy(SYSTEMD_DIR / "wlmd-expire.timer", tmp_path)
    return tmp_path


def test_expire_units_verify_clean_and_stay_sandboxed(expire_unit_dir: Path) -> None:
    tool = require_tool("systemd-analyze")
    verify = subprocess.run(
        [tool, "verify", "--man=no", "wlmd-expire.service", "wlmd-expire.timer"],
        cwd=expire_unit_dir, capture_output=True, text=True, timeout=60)
    assert (verify.returncode, verify.stderr, verify.stdout) == (0, "", "")
    security = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=20", "--no-pager",
         "wlmd-expire.service"], cwd=expire_unit_dir, capture_output=True, text=True,
        timeout=60)
    assert security.returncode == 0, security.stdout[-400:]


def test_expire_contract() -> None:
    """Daily, settings from wlmd.conf, and every sandbox setting of wlmd.service it can keep."""
    service = {key: values[-1] for key, values in unit_settings("wlmd-expire.service").items()}
    timer = {key: values[-1] for key, values in unit_settings("wlmd-expire.timer").items()}
    assert service["ExecStart"] == f"{INSTALLED_WLMCTL} --config /etc/wlmd/wlmd.conf expire"
    assert service["Type"] == "oneshot"
    assert (timer["OnCalendar"], timer["Persistent"]) == ("daily", "true")
    server = {key: values[-1] for key, values in unit_settings("wlmd.service").items()}
    for key in ("User", "Group", "ProtectSystem", "ReadWritePaths", "ProtectHome",
                "PrivateTmp", "PrivateDevices", "ProtectProc", "SystemCallFilter",
                "MemoryDenyWriteExecute", "NoNewPrivileges", "RestrictNamespaces"):
        assert service[key] == server[key], key
    assert service["PrivateNetwork"] == "yes" and service["CapabilityBoundingSet"] == ""


def test_systemd_analyze_verify_is_clean(unit_dir: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = subprocess.run(
        [tool, "verify", "--man=no", "wlmd.service", "wlmd.socket"], cwd=unit_dir,
        capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_verify_notices_a_broken_unit(unit_dir: Path) -> None:
    """Guards the test above: the same command does complain about a bad key."""
    tool = require_tool("systemd-analyze")
    service = unit_dir / "wlmd.service"
    service.write_text(service.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = subprocess.run([tool, "verify", "--man=no", "wlmd.service"], cwd=unit_dir,
                            capture_output=True, text=True, timeout=60)
    assert "Unknown key" in result.stderr


def test_sandbox_exposure_stays_low(unit_dir: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=20", "--no-pager", "wlmd.service"],
        cwd=unit_dir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-400:]


def snippet_lines(name: str) -> list[list[str]]:
    """The fields of each line of a sysusers.d or tmpfiles.d snippet, comments left out."""
    lines = (SYSTEMD_DIR / name).read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith("#")]


def tmpfiles_directories() -> dict[str, str]:
    """Directory -> mode of each ``d`` line of the tmpfiles snippet."""
    return {fields[1]: fields[2] for fields in snippet_lines("wlmd.tmpfiles.conf")
            if fields[0] == "d"}


def test_service_agrees_with_the_code_and_the_files_beside_it() -> None:
    """Not a copy of the unit: each line checked is one another part of wlmd relies on."""
    service = {key: values[-1] for key, values in unit_settings("wlmd.service").items()}
    # the supervisor sends READY=1 and watchdog pings, reloads on SIGHUP, stops its own workers
    assert (service["Type"], service["NotifyAccess"]) == ("notify", "main")
    assert int(re.fullmatch(r"(\d+)s?", service["WatchdogSec"])[1]) > 0
    assert "-HUP" in service["ExecReload"].split()
    assert service["KillMode"] == "mixed"
    stop = int(re.fullmatch(r"(\d+)s?", service["TimeoutStopSec"])[1])
    assert stop > Settings(port=104).graceful_timeout
    # runs as the user sysusers creates, may write the worklists tmpfiles creates
    user = next(fields[1] for fields in snippet_lines("wlmd.sysusers.conf") if fields[0] == "u")
    assert (service["User"], service["Group"]) == (user, user)
    directories = tmpfiles_directories()
    worklists = next(path for path in directories if path.endswith("/worklists"))
    assert any(Path(worklists).is_relative_to(path)
               for path in service["ReadWritePaths"].split())
    assert (service["StateDirectory"], service["StateDirectoryMode"]) == ("wlmd", "0750")
    # request files and the index file hold patient data; /proc beyond its own PIDs unneeded
    assert (service["UMask"], service["ProcSubset"]) == ("0077", "pid")
    # the shipped config's index file (patient data) lies in the owner-only cache directory
    config = service["ExecStart"].split("--config", 1)[1].split()[0]
    index_file = load_config(SYSTEMD_DIR.parent / "etc" / Path(config).name)["index_file"]
    cache = Path("/var/cache") / service["CacheDirectory"]
    assert index_file.parent == cache
    assert service["CacheDirectoryMode"] == directories[str(cache)] == "0700"


def test_socket_activates_the_service_on_the_dicom_port() -> None:
    socket_unit = unit_settings("wlmd.socket")
    assert socket_unit["ListenStream"] == ["104"]  # the DICOM port (PS3.15 registration)
    assert socket_unit["Service"] == ["wlmd.service"]


@pytest.mark.skipif(os.geteuid() != 0, reason="creating owned files in a --root needs root")
def test_sysusers_and_tmpfiles_create_user_and_worklist_dir(tmp_path: Path) -> None:
    sysusers, tmpfiles = require_tool("systemd-sysusers"), require_tool("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}", str(SYSTEMD_DIR / "wlmd.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    passwd = {line.split(":")[0]: line.split(":") for line in
              (tmp_path / "etc/passwd").read_text().splitlines()}
    assert passwd["wlmd"][5] == "/var/lib/wlmd"
    assert passwd["wlmd"][6] in {"/usr/sbin/nologin", "/sbin/nologin"}
    subprocess.run([tmpfiles, f"--root={tmp_path}", "--create",
                    str(SYSTEMD_DIR / "wlmd.tmpfiles.conf")],
                   check=True, capture_output=True, timeout=60)
    worklists = (tmp_path / "var/lib/wlmd/worklists").stat()
    assert (worklists.st_uid, worklists.st_gid) == (int(passwd["wlmd"][2]),
                                                    int(passwd["wlmd"][3]))
    assert oct(worklists.st_mode & 0o7777) == "0o2770"
    cache = (tmp_path / "var/cache/wlmd").stat()
    assert (cache.st_uid, oct(cache.st_mode & 0o7777)) == (int(passwd["wlmd"][2]), "0o700")
