"""Issue #6 item 4: overload and chaos against a real fork-mode wlmd (the short run; the long
one is ``make soak``).

Nothing outside a killed worker's association may fail; every other attempt is served with the
right answer or refused with A-ASSOCIATE-RJ 2/3/2 (or closed at the limit when the supervisor's
table of pending refusals is full, which it logs by peer).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.chaos import flood
from tests.support.server import (
    Wlmd,
    associate,
    example_files,
    find,
    fingerprint,
    make_ae_dir,
    wait_until,
    worker_pids,
    worklist_bytes,
)
from tests.support.wire import ASSOCIATE_AC, request_association

MAX_ASSOCIATIONS = 50
ENTRIES = 5


def flood_args(dfp: Path) -> list[str]:
    return flood.server_args(dfp, MAX_ASSOCIATIONS)


@pytest.fixture
def dfp(tmp_path: Path) -> Path:
    root = tmp_path / "db"
    make_ae_dir(root, "LOAD", {f"e{i}.wl": worklist_bytes(f"LOAD-{i}", t)
                               for i, t in enumerate(example_files()[:ENTRIES])})
    return root


@pytest.fixture
def server(tmp_path: Path, dfp: Path) -> Iterator[Wlmd]:
    srv = Wlmd(tmp_path, flood_args(dfp))
    yield srv
    srv.stop()


def test_flood_with_killed_and_stopped_workers_loses_only_their_associations(
        server: Wlmd, dfp: Path) -> None:
    before = fingerprint(dfp)
    report = flood.run_flood(server, "LOAD", attempts=300, concurrency=60, hold=0.05,
                             expected_matches=ENTRIES, kills=3, stops=2, chaos_interval=0.1)
    summary = report.summary()
    print("flood:", summary)
    counts = report.counts()
    assert sum(counts.values()) == 300
    unexplained = report.unexplained()
    assert unexplained == [], [line for attempt in unexplained for line in server.log().splitlines()
                               if f":{attempt.local_port}" in line]
    assert counts[flood.WRONG] == 0
    assert counts[flood.SERVED] >= 75
    assert counts[flood.REJECTED_LIMIT] + len(report.limit_closed_ports) > 0, "never over limit"
    assert report.peak_established <= MAX_ASSOCIATIONS
    assert len(report.events) == 5
    lost = summary["lost with killed workers"]
    assert isinstance(lost, int) and lost <= len(report.events) + len(report.starved)
    assert all(e.reaped_after is not None for e in report.events), "a worker was not reaped"
    assert all(e.reaped_after < 1.0 for e in report.events if e.signum == signal.SIGKILL)

    # recovered: a fresh association is served at once, the pool is back within its bounds
    recovered = wait_until(lambda: request_association(server.host, server.port,
                                                       "LOAD").pdu_type == ASSOCIATE_AC,
                           timeout=5, what="a fresh association")
    assert recovered < 1.0
    wait_until(lambda: 2 <= len(server.workers()) <= 8, timeout=10, what="pool back to spares")
    assert server.proc.poll() is None
    assert not {e.pid for e in report.events} & set(server.workers())
    assert fingerprint(dfp) == before


def test_supervisor_killed_workers_follow_and_a_restart_serves_at_once(
        tmp_path: Path, dfp: Path) -> None:
    """What systemd's Restart=always relies on, simulated: kill -9 of the supervisor."""
    before = fingerprint(dfp)
    first = Wlmd(tmp_path, flood_args(dfp))
    try:
        held = associate(first.port, "LOAD")
        assert len(find(held)[0]) == ENTRIES
        busy = {p.pid for p in _serving(held, first)}
        workers = set(first.workers())
        assert busy and busy <= workers

        first.proc.kill()
        first.proc.wait(5)
        idle_gone = wait_until(lambda: not set(worker_pids_alive(workers - busy)), timeout=5,
                               what="idle workers exit")
        matches, final = find(held)  # the orphaned busy worker finishes its association
        assert (len(matches), final) == (ENTRIES, 0x0000)

        started = time.monotonic()
        second = Wlmd(tmp_path, flood_args(dfp), port=first.port)
        try:
            fresh = associate(second.port, "LOAD")
            assert len(find(fresh)[0]) == ENTRIES
            restart = time.monotonic() - started
            fresh.release()
            held.release()
            busy_gone = wait_until(lambda: not worker_pids_alive(busy), timeout=5,
                                   what="the busy orphan exits after its release")
        finally:
            second.stop()
    finally:
        first.stop()
    print(f"supervisor kill -9: idle workers gone after {idle_gone:.3f}s, restart to first "
          f"answer {restart:.3f}s, orphan gone {busy_gone:.3f}s after its release")
    assert idle_gone < 2.0 and restart < 5.0
    assert fingerprint(dfp) == before


def _serving(assoc: object, server: Wlmd) -> list[psutil.Process]:
    """The workers with a TCP connection to the association's local port."""
    local_port = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[attr-defined]
    found = []
    for pid in worker_pids(server.pid):
        connections = psutil.Process(pid).net_connections(kind="tcp")
        if any(c.raddr and c.raddr.port == local_port for c in connections):
            found.append(psutil.Process(pid))
    return found


def worker_pids_alive(pids: set[int]) -> list[int]:
    """Those of ``pids`` still running (not zombies)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive
