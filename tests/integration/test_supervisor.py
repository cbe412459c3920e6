"""The pre-forking supervisor: ``python -m wlmd`` on loopback, driven by a pynetdicom SCU.

C-ECHO is all these tests need: what is under test is process management (the exact
association limit, a silent client, dead and stopped workers, signals), not matching.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from tests.support.processes import wait_until
from tests.support.server import (
    ANY_AE,
    SMALL_POOL,
    Wlmd,
    alive,
    rejection,
    start_configured,
    toml,
)

LIMIT_REACHED = (2, 3, 2)  # rejected-transient, provider (presentation), local limit exceeded


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Wlmd]]:
    started: list[Wlmd] = []

    def start(host: str = "127.0.0.1", **overrides: object) -> Wlmd:
        started.append(start_configured(tmp_path, {**SMALL_POOL, **overrides}, host))
        return started[-1]

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def scu() -> Iterator[Callable[[int], Association]]:
    """Open associations (Verification only) and release whatever is left at the end."""
    opened: list[Association] = []
    ae = verification_ae()

    def associate(port: int, host: str = "127.0.0.1", source: str | None = None) -> Association:
        bind = (source, 0) if source else None
        opened.append(ae.associate(host, port, ae_title=ANY_AE, bind_address=bind))
        return opened[-1]

    yield associate
    for assoc in opened:
        if assoc.is_established:
            assoc.release()
    ae.shutdown()


def verification_ae() -> AE:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def limit_refusal(port: int, source: str | None = None) -> tuple[int, int, int] | None:
    """The A-ASSOCIATE-RJ answering one more association, if it was refused."""
    return rejection(verification_ae(), port, ANY_AE, source=source)


def echo_ok(assoc: Association) -> bool:
    status = assoc.send_c_echo()
    return status is not None and status.Status == 0x0000


def test_ipv6_loopback(server, scu):
    srv = server(host="::1", ip_family="ipv6")
    assoc = scu(srv.port, "::1")
    assert assoc.is_established and echo_ok(assoc)
    assoc.release()
    wait_until(lambda: "association from ::1:" in srv.log())


def test_limit_is_exact_and_a_release_frees_its_slot_at_once(server, scu):
    srv = server(max_associations=2)
    held = [scu(srv.port), scu(srv.port)]
    assert all(a.is_established for a in held)

    assert limit_refusal(srv.port) == LIMIT_REACHED

    held[0].release()
    start = time.monotonic()
    fresh = scu(srv.port)
    assert fresh.is_established, "a released association must free its slot immediately"
    assert time.monotonic() - start < 1.0
    assert echo_ok(fresh) and echo_ok(held[1])
    wait_until(lambda: "outcome=refused-limit" in srv.log())


def test_silent_client_delays_nobody_and_is_closed_after_acse_timeout(server, scu):
    srv = server(acse_timeout=2, max_associations=4)
    silent = socket.create_connection(("127.0.0.1", srv.port))
    silent.settimeout(6)
    connected = time.monotonic()

    start = time.monotonic()
    assoc = scu(srv.port)
    assert assoc.is_established and echo_ok(assoc)
    assert time.monotonic() - start < 1.0
    assoc.release()

    assert silent.recv(1) == b""  # closed by the server, not by our timeout
    closed_after = time.monotonic() - connected
    silent.close()
    assert 1.5 < closed_after < 4.0


def test_kill_9_of_a_busy_worker_fails_only_its_association(server, scu):
    srv = server(max_associations=4, min_spare_workers=2)
    victim_assoc, other_assoc = scu(srv.port), scu(srv.port)
    victim = srv.worker_serving(victim_assoc)

    victim.send_signal(signal.SIGKILL)
    wait_until(lambda: not victim_assoc.is_established)
    assert echo_ok(other_assoc)
    wait_until(lambda: f"worker {victim.pid} serving 127.0.0.1" in srv.log())
    wait_until(lambda: sum(1 for _ in srv.children()) >= 3)  # 1 busy + min_spare 2

    later = scu(srv.port)
    assert later.is_established and echo_ok(later)


def test_stopped_busy_worker_is_detected_killed_and_replaced(server, scu):
    srv = server(max_associations=4, worker_timeout=1.5)
    assoc = scu(srv.port)
    worker = srv.worker_serving(assoc)

    worker.send_signal(signal.SIGSTOP)
    detected = wait_until(lambda: not alive(worker))
    assert detected < 4.0
    assert f"killing worker {worker.pid} serving 127.0.0.1" in srv.log()
    later = scu(srv.port)
    assert later.is_established and echo_ok(later)


def sigterm_to_exit(srv: Wlmd) -> float:
    start = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(30)
    return time.monotonic() - start


def test_sigterm_idle_exits_promptly(server):
    srv = server()
    elapsed = sigterm_to_exit(srv)
    print(f"SIGTERM to exit, idle: {elapsed:.3f}s")
    assert srv.proc.returncode == 0
    assert elapsed < 2.0


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_an_open_association_finish(server, scu):
    srv = server(graceful_timeout=10)
    assoc = scu(srv.port)
    srv.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused(srv.port), 3)  # the listener closes at once
    time.sleep(1.0)
    assert srv.proc.poll() is None and echo_ok(assoc)
    assoc.release()
    start = time.monotonic()
    srv.proc.wait(10)
    elapsed = time.monotonic() - start
    print(f"release to exit after SIGTERM with one association open: {elapsed:.3f}s")
    assert srv.proc.returncode == 0
    assert elapsed < 1.0


def test_sigterm_ends_associations_after_the_grace_period(server, scu):
    srv = server(graceful_timeout=1)
    assoc = scu(srv.port)
    elapsed = sigterm_to_exit(srv)
    print(f"SIGTERM to exit, one association held open, 1 s grace: {elapsed:.3f}s")
    assert 0.9 < elapsed < 3.0
    wait_until(lambda: not assoc.is_established)


def test_sighup_recycles_workers_without_dropping_an_association(server, scu):
    srv = server(max_associations=4, min_spare_workers=2)
    assoc = scu(srv.port)
    busy = srv.worker_serving(assoc)
    wait_until(lambda: len(srv.children()) == 3)
    idle_before = {p.pid for p in srv.children()} - {busy.pid}

    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: not idle_before & {p.pid for p in srv.children()})
    assert busy.is_running() and echo_ok(assoc)
    assoc.release()
    wait_until(lambda: not alive(busy))
    later = scu(srv.port)
    assert later.is_established and echo_ok(later)
    assert "worker generation 1" in srv.log()


def test_sighup_applies_reloaded_settings_and_survives_a_failed_reload(server, scu):
    srv = server(max_associations=1)
    held = scu(srv.port)
    assert limit_refusal(srv.port) == LIMIT_REACHED

    srv.reconfigure("max_associations = [not toml")
    wait_until(lambda: "reload failed, keeping the running configuration" in srv.log())
    assert limit_refusal(srv.port) == LIMIT_REACHED and echo_ok(held)

    srv.reconfigure(toml({**SMALL_POOL, "max_associations": 2}))
    wait_until(lambda: "worker generation 1" in srv.log())
    second = scu(srv.port)
    assert second.is_established and echo_ok(second) and echo_ok(held)


def test_per_host_limit_counts_each_peer_address(server, scu):
    srv = server(max_associations=4, max_associations_per_host=1)
    held = scu(srv.port)
    assert held.is_established
    assert limit_refusal(srv.port) == LIMIT_REACHED
    other_host = scu(srv.port, source="127.0.0.2")
    assert other_host.is_established and echo_ok(other_host)


def test_a_connection_goes_to_the_worker_freed_last(server, scu):
    """Work stays on as few workers as the load needs (warm caches; fewer workers catching up
    on each worklist change): not the oldest idle worker, the one that finished last."""
    srv = server(max_associations=4, min_spare_workers=3, max_spare_workers=3)
    wait_until(lambda: len(srv.children()) >= 3)
    first, second = scu(srv.port), scu(srv.port)
    first_worker, second_worker = srv.worker_serving(first), srv.worker_serving(second)
    assert first_worker.pid != second_worker.pid
    first.release()
    wait_until(lambda: srv.count("outcome=released") == 1)
    second.release()
    wait_until(lambda: srv.count("outcome=released") == 2)
    third = scu(srv.port)
    assert echo_ok(third) and srv.worker_serving(third).pid == second_worker.pid


def test_pool_does_not_fork_for_every_association(server, scu):
    """With min = max spare workers, a busy worker makes one spare short and its release one
    too many; the pool gives back at most one worker a second instead of forking each time."""
    srv = server(max_associations=10, min_spare_workers=2, max_spare_workers=2)
    wait_until(lambda: len(srv.children()) >= 2)
    seen = {p.pid for p in srv.children()}
    for _ in range(20):
        assoc = scu(srv.port)
        assert echo_ok(assoc)
        assoc.release()
        time.sleep(0.02)  # let the supervisor act on the release
        seen |= {p.pid for p in srv.children()}
    assert len(seen) <= 5, f"{len(seen)} workers for 20 sequential associations"
