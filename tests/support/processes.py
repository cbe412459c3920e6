"""Shared helpers for tests that run real processes on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

DCMTK_TOOLS = ("wlmscpfs", "findscu", "dump2dcm", "dcmdump")
DCMTK_EXAMPLES = Path("/usr/share/doc/dcmtk/examples")
DCMTK_BIN = Path("/usr/bin")  # Debian's dcmtk; our own `findscu` console script may shadow PATH


def dcmtk_tool(name: str) -> str:
    """Absolute path of a DCMTK program, never wlmd's same-named companion client."""
    require_dcmtk(name)
    return str(DCMTK_BIN / name)


def require_dcmtk(*tools: str) -> None:
    """Skip when a DCMTK tool is missing; under CI fail instead: interop is required."""
    missing = [t for t in (tools or DCMTK_TOOLS) if not (DCMTK_BIN / t).is_file()]
    if missing:
        missing_tool(f"DCMTK tools missing: {', '.join(missing)} (apt-get install -y dcmtk)")


def require_tool(name: str, package: str = "systemd") -> str:
    """The path of a system tool that .ci/run installs from ``package``."""
    path = shutil.which(name)
    if path is None:
        missing_tool(f"{name} missing (apt-get install -y {package})")
    return path  # type: ignore[return-value]


def missing_tool(message: str) -> None:
    """Skip locally; fail under CI (CI=true), where .ci/run installs every tool the tests use."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               what: str = "condition") -> float:
    """Seconds until ``condition()`` is true; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def start_wlmd(args: Sequence[str], port: int, host: str = "127.0.0.1",
               **popen: object) -> subprocess.Popen:
    """Start ``python -m wlmd ARGS PORT`` listening on loopback and wait until it accepts.

    Connecting to probe readiness opens (and at once closes) one TCP connection. Output goes
    to /dev/null unless the caller passes files: an unread pipe would fill and stall the server.
    """
    cmd = [sys.executable, "-m", "wlmd", "--listen-address", host, *args, str(port)]
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    proc = subprocess.Popen(cmd, **popen)  # type: ignore[call-overload]
    try:
        wait_for_port(port, host, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_wlmscpfs(args: Sequence[str], port: int, **popen: object) -> subprocess.Popen:
    """Start DCMTK's wlmscpfs (it listens on every address; tests only send it loopback traffic)."""
    require_dcmtk("wlmscpfs")
    env = dict(os.environ, TCP_NODELAY="1")
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    proc = subprocess.Popen([str(DCMTK_BIN / "wlmscpfs"), *args, str(port)], env=env, **popen)  # type: ignore[call-overload]
    try:
        wait_for_port(port, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a process this test started (by its PID) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


def dump2dcm(dump: Path, out: Path) -> Path:
    """Convert a dcmdump text file to a DICOM file with DCMTK's dump2dcm."""
    require_dcmtk("dump2dcm")
    subprocess.run([str(DCMTK_BIN / "dump2dcm"), "-q", "-g", str(dump), str(out)], check=True)
    return out
