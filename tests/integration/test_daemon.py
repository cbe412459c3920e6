"""wlmd as an OS daemon, end to end: access rules, syslog, sd_notify, socket activation,
``--daemon`` and the time a SIGTERM takes, each against a real
``python -m wlmd`` on loopback in fork and single-process mode where both apply.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from tests.support.processes import free_port, require_tool, stop_process, wait_for_port
from tests.support.server import (
    EXAMPLES,
    Wlmd,
    associate,
    example_files,
    find,
    patient_ids,
    wait_until,
    worker_pids,
)

REPO = Path(__file__).resolve().parents[2]
CALLED = "CT01"
MODES = {"fork": [], "single": ["--single-process"]}
SYSLOG_DAEMON_INFO = "<30>"  # facility daemon (3) * 8 + severity info (6)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory for unix sockets: pytest's tmp_path can exceed the 108-byte path limit."""
    path = Path(tempfile.mkdtemp(prefix="wlmd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Wlmd]]:
    """Start ``python -m wlmd -v ARGS`` (examples as worklists); stop them all at the end."""
    started: list[Wlmd] = []

    def start(mode: str, *args: str, host: str = "127.0.0.1", syslog: bool = False) -> Wlmd:
        started.append(Wlmd(tmp_path, ["-v", *MODES[mode], "-dfp", str(EXAMPLES), *args],
                            host=host, verbose=False))
        # signal handlers are installed once it says so (the port is bound well before);
        # a test logging to syslog waits for the line there
        if not syslog:
            wait_until(lambda: "listening on" in started[-1].log(), what="startup line")
        return started[-1]

    yield start
    for server in started:
        server.stop()


class Datagram(NamedTuple):
    at: float  # time.monotonic() on arrival
    text: str


class Datagrams:
    """A bound unix datagram socket standing in for syslogd or systemd's notify socket.

    A thread reads it all the time: a full socket queue (10 datagrams by default) would
    block the server's logging and stall it, which is not what these tests are about.
    """

    def __init__(self, path: Path) -> None:
        self.address = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._sock.settimeout(0.1)
        self._got: list[Datagram] = []
        self._cursor = 0
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                data = self._sock.recv(65536)
                self._got.append(Datagram(time.monotonic(), data.decode()))

    def next(self, until: Callable[[str], bool], timeout: float = 10.0) -> list[Datagram]:
        """Datagrams after those already returned, up to the first for which ``until`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(self._cursor, len(self._got)):
                if until(self._got[index].text):
                    found, self._cursor = self._got[self._cursor:index + 1], index + 1
                    return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no such datagram within {timeout}s; got "
                                     f"{[d.text for d in self._got[self._cursor:]]}")
            time.sleep(0.02)

    def texts(self) -> list[str]:
        """Everything received so far."""
        return [datagram.text for datagram in self._got]

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self._sock.close()


@pytest.fixture
def datagrams(short_dir: Path) -> Iterator[Datagrams]:
    receiver = Datagrams(short_dir / "dgram")
    yield receiver
    receiver.close()


def expected_ids(ae: str = CALLED) -> list[str]:
    return sorted(str(dcmread(path, force=True).PatientID) for path in example_files(ae))


def echo_from(port: int, source: str, host: str = "127.0.0.1") -> bool:
    """An association from ``source`` that is accepted and answers C-ECHO."""
    assoc = associate_from(port, source, host)
    try:
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        return status is not None and status.Status == 0x0000
    finally:
        if assoc.is_established:
            assoc.release()


def associate_from(port: int, source: str, host: str = "127.0.0.1") -> Association:
    """A Verification association whose client socket is bound to ``source``."""
    ae = AE(ae_title="RULESSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    return ae.associate(host, port, ae_title=CALLED, bind_address=(source, 0))


def closed_unanswered(port: int, source: str, host: str = "127.0.0.1") -> bool:
    """Connect from ``source``, send nothing: the server closes without a byte in return."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect((host, port))
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


def write_rules(directory: Path, allow: str, deny: str) -> list[str]:
    """Rule files and the options that make wlmd use them."""
    (directory / "allow").write_text(allow)
    (directory / "deny").write_text(deny)
    return ["+ac", "--hosts-allow", str(directory / "allow"),
            "--hosts-deny", str(directory / "deny")]


# ---- 1. access rules ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_ipv4_rules_grant_and_refuse_by_source_address(servers, tmp_path: Path, mode: str):
    rules = write_rules(tmp_path, "wlmd: 127.0.0.2\n", "wlmd: ALL\n")
    srv = servers(mode, *rules)
    assert echo_from(srv.port, "127.0.0.2")
    assert closed_unanswered(srv.port, "127.0.0.1")
    assert not associate_from(srv.port, "127.0.0.3").is_established
    wait_until(lambda: f"refused connection from 127.0.0.3 ({tmp_path / 'deny'}:1)"
               in srv.log())
    assert "refused connection from 127.0.0.2" not in srv.log()


@pytest.mark.parametrize("mode", MODES)
def test_host_name_rules_resolve_the_peer(servers, tmp_path: Path, mode: str):
    """A rule naming a host needs a reverse lookup: in fork mode a worker makes it, so the
    supervisor never waits on DNS. 127.0.0.1 is "localhost" in /etc/hosts; 127.0.0.2 is not."""
    srv = servers(mode, *write_rules(tmp_path, "", "wlmd: localhost\n"))
    assert closed_unanswered(srv.port, "127.0.0.1")
    assert echo_from(srv.port, "127.0.0.2")
    wait_until(lambda: f"refused connection from 127.0.0.1 ({tmp_path / 'deny'}:1)"
               in srv.log())
    if mode == "fork":
        wait_until(lambda: "outcome=refused" in srv.log(), what="worker-side refusal")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("allow", "deny", "granted"), [
    ("wlmd: [::1]/128\n", "wlmd: ALL\n", True),
    ("wlmd: 127.0.0.1\n", "wlmd: [::1]\n", False),
])
def test_ipv6_rules(servers, tmp_path: Path, mode: str, allow: str, deny: str, granted: bool):
    srv = servers(mode, "-i6", *write_rules(tmp_path, allow, deny), host="::1")
    if granted:
        assert echo_from(srv.port, "::1", "::1")
    else:
        assert closed_unanswered(srv.port, "::1", "::1")
        wait_until(lambda: f"refused connection from ::1 ({tmp_path / 'deny'}:1)" in srv.log())


@pytest.mark.parametrize("mode", MODES)
def test_sighup_reloads_rules_and_keeps_them_when_the_new_ones_are_malformed(
        servers, tmp_path: Path, mode: str):
    srv = servers(mode, *write_rules(tmp_path, "", "wlmd: 127.0.0.2\n"))
    assert closed_unanswered(srv.port, "127.0.0.2")

    (tmp_path / "deny").write_text("wlmd: 127.0.0.3\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: echo_from(srv.port, "127.0.0.2"), 10, "deny turned into allow")
    assert srv.proc.poll() is None

    (tmp_path / "deny").write_text("wlmd: 127.0.0.2\nwlmd: [::1\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: f"{tmp_path / 'deny'}:2: error: malformed IPv6 pattern" in srv.log(),
               what="reload failure with file:line")
    assert "reload failed, keeping the running configuration" in srv.log()
    assert echo_from(srv.port, "127.0.0.2")  # the old rules still apply
    assert closed_unanswered(srv.port, "127.0.0.3")


def test_check_config_reports_a_malformed_rule_with_file_and_line(tmp_path: Path):
    (tmp_path / "wlmd.conf").write_text("")
    command = [sys.executable, "-m", "wlmd", "--config", str(tmp_path / "wlmd.conf"),
               "--check-config", *write_rules(tmp_path, "wlmd: 127.0.0.2\n", "wlmd: ALL\n"),
               "--listen-address", "127.0.0.1", "-dfp", str(EXAMPLES), str(free_port())]
    good = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert (good.returncode, good.stderr) == (0, "")

    (tmp_path / "allow").write_text("# ok\nwlmd: 127.0.0.2\nwlmd: 10.0.0.0/255.0.255.0\n")
    bad = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert bad.returncode != 0
    assert f"{tmp_path / 'allow'}:3: error: " in bad.stderr


# ---- 2. syslog --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_syslog_startup_line_and_one_line_per_association(servers, datagrams, mode: str):
    srv = servers(mode, "--syslog", "--syslog-socket", datagrams.address, syslog=True)
    startup = datagrams.next(lambda line: "listening on" in line)[-1].text
    assert startup.startswith(f"{SYSLOG_DAEMON_INFO}wlmd[{srv.pid}]: ")
    assert f"listening on 127.0.0.1:{srv.port}" in startup

    assoc = associate(srv.port, CALLED, calling="SYSLOGSCU")
    workers = worker_pids(srv.pid)
    matches, final = find(assoc)
    assoc.release()
    assert final == 0 and matches

    line = datagrams.next(lambda text: "calling='SYSLOGSCU'" in text)[-1].text
    time.sleep(0.5)  # room for a second summary line, which must not come
    texts = datagrams.texts()
    assert sum("association from" in text and "SYSLOGSCU" in text for text in texts) == 1
    assert any(f"Association Received (127.0.0.1:SYSLOGSCU -> {CALLED})" in text
               for text in texts)  # -v also logs what wlmscpfs -v logs
    assert line.startswith(f"{SYSLOG_DAEMON_INFO}wlmd[{srv.pid}]: association from 127.0.0.1:")
    assert f"called='{CALLED}'" in line
    assert f" outcome=released queries=1 matches={len(matches)} duration=" in line
    assert re.search(r" duration=\d+\.\d{3}s", line)
    worker = re.search(r" worker=(\d+) ", line)
    if mode == "fork":
        assert worker is not None and int(worker[1]) in workers
    else:
        assert worker is None  # no worker: the server process is in wlmd[pid]


# ---- 3. sd_notify -----------------------------------------------------------------------

def notify_fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.split("\n") if line)


@pytest.mark.parametrize("mode", MODES)
def test_sd_notify_ready_status_watchdog_reloading_stopping(
        servers, datagrams, monkeypatch: pytest.MonkeyPatch, mode: str):
    monkeypatch.setenv("NOTIFY_SOCKET", datagrams.address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    srv = servers(mode)
    datagrams.next(lambda m: notify_fields(m).get("READY") == "1")
    assert any("STATUS" in notify_fields(text) for text in datagrams.texts())

    pings = [datagrams.next(lambda m: notify_fields(m).get("WATCHDOG") == "1", timeout=3)[-1].at
             for _ in range(3)]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    print(f"{mode}: watchdog gaps {[round(g, 3) for g in gaps]} s (WATCHDOG_USEC=2 s)")
    assert max(gaps) <= 1.3

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    srv.proc.send_signal(signal.SIGHUP)
    reload = datagrams.next(lambda m: "RELOADING" in notify_fields(m))[-1].text
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(notify_fields(reload)["MONOTONIC_USEC"]) <= after
    datagrams.next(lambda m: notify_fields(m).get("READY") == "1")

    srv.proc.send_signal(signal.SIGTERM)
    datagrams.next(lambda m: notify_fields(m).get("STOPPING") == "1")
    assert srv.proc.wait(10) == 0


# ---- 4. socket activation ------------------------------------------------------------------

def test_socket_activation_serves_c_find_on_the_inherited_socket(tmp_path: Path):
    tool = require_tool("systemd-socket-activate")
    activated, unused = free_port(), free_port()
    log = (tmp_path / "wlmd.log").open("wb")
    proc = subprocess.Popen(
        [tool, "-l", f"127.0.0.1:{activated}", "-E", f"PYTHONPATH={REPO}",
         sys.executable, "-m", "wlmd", "-v", "-dfp", str(EXAMPLES), str(unused)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for_port(activated, proc=proc)  # the first connection starts wlmd
        assoc = associate(activated, CALLED)
        matches, final = find(assoc)
        assoc.release()
        assert (final, patient_ids(matches)) == (0, expected_ids())
        text = (tmp_path / "wlmd.log").read_text(errors="replace")  # -v dumps raw value bytes
        assert f"supervisor {proc.pid} listening on 127.0.0.1:{activated}" in text
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", unused), 1).close()
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0


# ---- 5. --daemon --------------------------------------------------------------------------

def test_daemon_detaches_writes_pid_file_serves_and_cleans_up(tmp_path: Path, datagrams):
    pid_file, port = tmp_path / "wlmd.pid", free_port()
    started = time.monotonic()
    launcher = subprocess.run(
        [sys.executable, "-m", "wlmd", "-v", "--daemon", "--pid-file", str(pid_file),
         "--syslog", "--syslog-socket", datagrams.address,
         "--listen-address", "127.0.0.1", "-dfp", str(EXAMPLES), str(port)],
        cwd=REPO, capture_output=True, timeout=30)
    launch_time = time.monotonic() - started
    wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip().isdigit(),
               what="pid file")
    pid = int(pid_file.read_text())
    daemon = psutil.Process(pid)
    try:
        assert (launcher.returncode, launcher.stdout, launcher.stderr) == (0, b"", b"")
        assert launch_time < 5
        # this daemon: its command line until it sets its process title, then that title
        command = daemon.cmdline()
        assert str(pid_file) in command or command[0] == "wlmd: supervisor", command
        assert daemon.ppid() != os.getpid()
        assert os.getsid(pid) != os.getsid(0)  # detached into a session of its own
        wait_for_port(port)
        assoc = associate(port, CALLED)
        matches, final = find(assoc)
        assoc.release()
        assert (final, patient_ids(matches)) == (0, expected_ids())
        datagrams.next(lambda line: f"wlmd[{pid}]: association from" in line)

        daemon.send_signal(signal.SIGTERM)
        wait_until(lambda: gone_or_zombie(daemon), what="daemon exit")
        wait_until(lambda: not pid_file.exists(), what="pid file removal")
    finally:
        if not gone_or_zombie(daemon):
            daemon.kill()


def gone_or_zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- 6. SIGTERM timing ------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_sigterm_to_exit_idle_and_with_an_open_association(servers, mode: str):
    idle = servers(mode)
    started = time.monotonic()
    idle.proc.send_signal(signal.SIGTERM)
    assert idle.proc.wait(10) == 0
    idle_time = time.monotonic() - started

    busy = servers(mode)
    assoc = associate(busy.port, CALLED)
    started = time.monotonic()
    busy.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    matches, final = find(assoc)  # the open association is still served
    assoc.release()
    released = time.monotonic()
    assert busy.proc.wait(10) == 0
    busy_time, after_release = time.monotonic() - started, time.monotonic() - released
    print(f"\n{mode}: SIGTERM to exit idle {idle_time:.3f}s; with one association "
          f"(released 0.5 s after SIGTERM) {busy_time:.3f}s, {after_release:.3f}s after release")
    assert (final, patient_ids(matches)) == (0, expected_ids())
    assert idle_time < 5
    assert after_release < 5
