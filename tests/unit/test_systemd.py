"""sd_notify datagrams on a socket the test binds; socket activation with real inherited fds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, require_tool
from wlmd.config.settings import Settings
from wlmd.daemon import systemd
from wlmd.daemon.hooks import ServerHooks

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for systemd, announced in NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(2)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
    else:
        name = f"wlmd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    with sock:
        yield sock


def received(sock: socket.socket) -> dict[str, str]:
    message = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in message.split("\n"))


class TestNotify:
    @pytest.mark.parametrize(("state", "expected"), [
        ("READY=1\nSTATUS=serving 3 AE titles", {"READY": "1", "STATUS": "serving 3 AE titles"}),
        ("STOPPING=1", {"STOPPING": "1"}),
        ("WATCHDOG=1", {"WATCHDOG": "1"}),
        ("READY=1\nMAINPID=42", {"READY": "1", "MAINPID": "42"}),
    ])
    def test_messages(self, notify_socket: socket.socket, state: str, expected: dict) -> None:
        assert systemd.notify(state)
        assert received(notify_socket) == expected

    def test_one_datagram_per_call(self, notify_socket: socket.socket) -> None:
        systemd.notify("STATUS=a")
        systemd.notify("STATUS=b")
        assert [received(notify_socket), received(notify_socket)] == [{"STATUS": "a"},
                                                                      {"STATUS": "b"}]

    def test_reload_hooks_send_reloading_with_monotonic_time_then_ready(
            self, notify_socket: socket.socket) -> None:
        hooks = ServerHooks(notify=systemd.notify, reload=lambda: (Settings(port=104), None))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert hooks.reload_settings() == (Settings(port=104), None)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        hooks.reloaded()
        message = received(notify_socket)
        assert message["RELOADING"] == "1"
        assert before <= int(message["MONOTONIC_USEC"]) <= after
        assert received(notify_socket) == {"READY": "1"}

    @pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/path"])
    def test_no_notify_socket_is_a_noop(self, monkeypatch: pytest.MonkeyPatch,
                                        value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        else:
            monkeypatch.setenv("NOTIFY_SOCKET", value)
        assert systemd.notify("READY=1") is False

    def test_unreachable_socket_does_not_raise(self, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
        assert systemd.notify("STOPPING=1") is False


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("30000000", None, 30.0),
    ("500000", "self", 0.5),
    ("30000000", "1", None),  # meant for another process
    ("30000000", "x", None),
    ("0", None, None),
    ("", None, None),
    ("soon", None, None),
    (None, None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert systemd.watchdog_interval() == expected


# Run in the activated process: report what listen_fds() found, then answer on the first
# socket so the test knows the report came through the inherited fd.
CHILD = """
import json, os, sys
from wlmd.daemon import systemd
from wlmd.daemon.hooks import ServerHooks
from wlmd.config.settings import Settings
mode = sys.argv[1]
try:
    socks = systemd.listen_fds(unset_env=mode != "keep")
except ValueError as exc:
    print(json.dumps({"error": str(exc)}), flush=True)
    sys.exit(0)
report = {
    "fds": [s.fileno() for s in socks],
    "names": [s.getsockname()[0] for s in socks],
    "inheritable": [os.get_inheritable(s.fileno()) for s in socks],
    "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}
print(json.dumps(report), flush=True)
if socks:
    conn, _ = socks[0].accept()
    conn.sendall(json.dumps(report).encode())
    conn.close()
"""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.parametrize("mode", ["unset", "keep"])
def test_listen_fds_under_systemd_socket_activate(mode: str) -> None:
    tool = require_tool("systemd-socket-activate")
    port4, port6 = free_port(), free_port("::1")
    proc = subprocess.Popen(
        [tool, "-l", f"127.0.0.1:{port4}", "-l", f"[::1]:{port6}",
         sys.executable, "-c", CHILD, mode],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answer = connect_and_read(port4, proc)
        stdout, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    report = json.loads(answer)
    assert report == json.loads(stdout)
    assert report["fds"] == [3, 4]
    assert report["names"] == ["127.0.0.1", "::1"]
    assert report["inheritable"] == [False, False]
    assert report["env"] == ([] if mode == "unset" else ["LISTEN_FDS", "LISTEN_PID"])


def connect_and_read(port: int, proc: subprocess.Popen, timeout: float = 10) -> bytes:
    """Connect (which triggers activation) and read what the activated child sends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
                chunks = []
                while chunk := conn.recv(4096):
                    chunks.append(chunk)
                return b"".join(chunks)
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise TimeoutError("activated child never answered")


@pytest.mark.parametrize(("pid", "fds", "expected"), [
    ("$$", "1", {"fds": [3]}),
    ("1", "1", {"fds": []}),  # LISTEN_PID of another process: not ours
    ("$$", None, {"fds": []}),
    ("$$", "one", {"error": "malformed LISTEN_PID="}),
])
def test_listen_fds_pid_check(pid: str, fds: str | None, expected: dict) -> None:
    """``bash -c 'exec …'`` keeps the shell's pid, so ``$$`` is the child's own pid."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assignments = f"LISTEN_PID={pid}" + (f" LISTEN_FDS={fds}" if fds else "")
        script = (f'{assignments} exec "$0" -c "$1" unset 3<&{listener.fileno()} '
                  f'{listener.fileno()}<&-')
        proc = subprocess.run(
            ["bash", "-c", script, sys.executable, CHILD.split("if socks:")[0]],
            env=child_env(), pass_fds=[listener.fileno()], capture_output=True, text=True,
            timeout=30, check=True)
    report = json.loads(proc.stdout)
    if "error" in expected:
        assert report["error"].startswith(expected["error"])
    else:
        assert report["fds"] == expected["fds"]
        assert report["env"] == []
