"""``make install`` (issue #15): wlmd in a private environment, PREFIX/lib/wlmd, built with
Debian's Python or a venv's alike; only ``wlmd``, ``wlmd-findscu`` and ``wlmctl`` in
PREFIX/bin; units that start the installed program; nothing written into the Python it was
built with; DCMTK's /usr/bin/findscu untouched. The package index (or a local mirror)
provides the wheels."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")
DCMTK_FINDSCU = Path("/usr/bin/findscu")


def fingerprint(path: Path) -> tuple[object, ...] | None:
    """Content and identity of a file, None if it does not exist."""
    if not path.exists():
        return None
    status = path.stat()
    return (hashlib.sha256(path.read_bytes()).hexdigest(), status.st_ino, status.st_mtime_ns)


def site_packages(python: str) -> dict[str, list[str]]:
    """What the base installation of ``python`` holds in its site directories."""
    probe = "import sysconfig, json; print(json.dumps(sorted({sysconfig.get_paths()[k] " \
            "for k in ('purelib', 'platlib')})))"
    paths = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    return {p: sorted(os.listdir(p)) if os.path.isdir(p) else [] for p in json.loads(paths)}


def source_copy(tmp_path: Path) -> Path:
    """A copy of the checkout, so the build leaves nothing in the shared working tree."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", ".*cache", "benchmarks",
        "*.deb", "debian"))
    return source


def make_install(source: Path, python: str, *variables: str) -> None:
    result = subprocess.run(["make", "-C", str(source), "install", f"PYTHON={python}",
                             *variables], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def untouched_findscu() -> Iterator[None]:
    """DCMTK's findscu (if installed) is the same file after the test as before."""
    before = fingerprint(DCMTK_FINDSCU)
    yield
    assert fingerprint(DCMTK_FINDSCU) == before


def check_tree(root: Path, prefix: str) -> Path:
    """The files every install has, under ``root`` + ``prefix``; returns the bin directory."""
    bin_dir = root / prefix.lstrip("/") / "bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["wlmctl", "wlmd", "wlmd-findscu"]
    for command in ("wlmctl", "wlmd", "wlmd-findscu"):
        assert os.readlink(bin_dir / command) == f"{prefix}/lib/wlmd/bin/{command}"
    environment = root / prefix.lstrip("/") / "lib/wlmd"
    assert (environment / "bin/findscu").is_file()  # the findscu name lives only in there
    assert (environment / "bin/wlmd").read_text().splitlines()[0] == (
        f"#!{prefix}/lib/wlmd/bin/python")
    for path in ("share/man/man8/wlmd.8", "share/man/man5/wlmd.conf.5",
                 "share/man/man1/wlmd-findscu.1", "share/man/man8/wlmctl.8",
                 "lib/systemd/system/wlmd.socket", "lib/systemd/system/wlmd-expire.timer",
                 "lib/sysusers.d/wlmd.conf", "lib/tmpfiles.d/wlmd.conf"):
        assert (root / prefix.lstrip("/") / path).is_file(), path
    service = (root / prefix.lstrip("/") / "lib/systemd/system/wlmd.service").read_text()
    assert f"\nExecStart={prefix}/bin/wlmd --config /etc/wlmd/wlmd.conf\n" in service
    expire = (root / prefix.lstrip("/") / "lib/systemd/system/wlmd-expire.service").read_text()
    assert f"\nExecStart={prefix}/bin/wlmctl " in expire
    if DCMTK_FINDSCU.exists():  # PREFIX/bin first on PATH still finds DCMTK's findscu
        assert shutil.which("findscu", path=f"{bin_dir}:/usr/bin") == str(DCMTK_FINDSCU)
    return bin_dir


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="no /usr/bin/python3")
def test_staged_install_with_the_system_python(tmp_path: Path, untouched_findscu) -> None:
    """``DESTDIR`` as packagers use it: paths inside name PREFIX, not the staging tree."""
    system_before = site_packages(str(DEBIAN_PYTHON))
    destdir = tmp_path / "root"
    make_install(source_copy(tmp_path), str(DEBIAN_PYTHON), f"DESTDIR={destdir}", "PREFIX=/usr")
    check_tree(destdir, "/usr")
    for path in ("etc/wlmd/wlmd.conf", "etc/wlmd/wlmd.conf.example",
                 "etc/wlmd/hosts.allow.example", "etc/wlmd/hosts.deny.example"):
        assert (destdir / path).is_file(), path
    staged = destdir / "usr/lib/wlmd"
    assert not any(str(destdir) in p.read_text(errors="replace")
                   for p in (staged / "bin").iterdir() if p.is_file() and not p.is_symlink())
    version = subprocess.run([str(staged / "bin/python"), "-m", "wlmd", "--version"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert version.returncode == 0 and "wlmd v" in version.stdout, version.stderr
    assert site_packages(str(DEBIAN_PYTHON)) == system_before  # nothing pip-installed there


def test_direct_install_with_a_venv_python(tmp_path: Path, untouched_findscu) -> None:
    """A venv's python builds the environment too; the program runs where it was put."""
    environment_before = site_packages(sys.executable)
    prefix = tmp_path / "prefix"
    make_install(source_copy(tmp_path), sys.executable, f"PREFIX={prefix}",
                 f"SYSCONFDIR={tmp_path / 'etc'}")
    bin_dir = check_tree(Path("/"), str(prefix))
    for command in ("wlmd", "wlmd-findscu"):
        result = subprocess.run([str(bin_dir / command), "--version"], capture_output=True,
                                text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "wlmd v" in subprocess.run([str(bin_dir / "wlmd"), "--version"], capture_output=True,
                                      text=True, timeout=60, cwd=tmp_path).stdout
    assert (tmp_path / "etc/wlmd/wlmd.conf").is_file()
    assert site_packages(sys.executable) == environment_before
