"""What an administrator sees of a running wlmd: process titles in ``ps`` and the log lines
written at the default level (issue #15), against a real server and a pynetdicom client."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, start_wlmd, stop_process, wait_until
from tests.support.server import EXAMPLES, associate, example_files, find, worker_pids


def title(pid: int) -> str:
    """The process title as ``ps`` shows it (procps, not psutil: what an admin runs)."""
    result = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True,
                            text=True, timeout=10)
    return result.stdout.strip()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """wlmd at the default log level (no -v) serving the examples; stderr kept in a file."""
    log = tmp_path / "stderr.log"
    port = free_port()
    with log.open("w") as stderr:
        proc = start_wlmd(["--config", "/dev/null", "--min-spare-workers", "2",
                           "-dfp", str(EXAMPLES)], port, stderr=stderr)
    proc.port = port  # type: ignore[attr-defined]
    yield proc, log
    stop_process(proc)


def test_titles_name_supervisor_idle_and_busy_workers(server) -> None:
    proc, _ = server
    wait_until(lambda: title(proc.pid) == "wlmd: supervisor", what="the supervisor's title")
    wait_until(lambda: len(worker_pids(proc.pid)) >= 2, what="two workers")
    # a worker is titled "starting" until its application is built, then "idle"
    wait_until(lambda: {title(pid) for pid in worker_pids(proc.pid)} == {"wlmd: worker idle"},
               what="the workers titled idle once started")
    assoc = associate(proc.port, "CT01")
    try:
        assert assoc.is_established
        busy = "wlmd: worker CT01 <- 127.0.0.1"
        wait_until(lambda: busy in {title(pid) for pid in worker_pids(proc.pid)},
                   what="a worker titled with its called AE and peer")
    finally:
        assoc.release()
    wait_until(lambda: {title(pid) for pid in worker_pids(proc.pid)} == {"wlmd: worker idle"},
               what="the worker idle again")


def test_default_level_logs_listening_line_then_one_line_per_association(server) -> None:
    """No -v: the listening line comes first, then each association with per-query counts."""
    proc, log = server
    assoc = associate(proc.port, "CT01")
    try:
        everything, status = find(assoc)
        nothing, _ = find(assoc, PatientID="NO-SUCH-PATIENT")
        assert (len(everything), len(nothing), status) == (len(example_files("CT01")), 0, 0)
    finally:
        assoc.release()
    wait_until(lambda: "'CHAOSSCU'" in log.read_text(), what="the association line")
    lines = log.read_text().splitlines()
    assert lines[0].startswith(f"I: supervisor {proc.pid} listening on 127.0.0.1:{proc.port}")
    # start_wlmd's readiness probe is a connection too: it has its own line.
    assert all(line.startswith("I: association from 127.0.0.1:") for line in lines[1:]), lines
    assert "calling='CHAOSSCU' called='CT01'" in lines[-1]
    assert f" outcome=released queries=2 matches={len(everything)}+0 duration=" in lines[-1]
