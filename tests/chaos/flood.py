"""A bounded association flood with chaos: asyncio clients speaking raw PDUs, and a thread that
SIGKILLs and SIGSTOPs random workers meanwhile.

Every attempt ends in one outcome. Failures are then checked against the server's own log:
the only associations allowed to fail are those of a killed worker (the supervisor names the
peer of every worker that died busy) and those the supervisor closed at the limit because its
table of pending refusals was full (it names those peers too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import wire
from tests.support.server import Wlmd

SERVED, REJECTED_LIMIT, REJECTED_OTHER = "served", "rejected 2/3/2", "rejected other"
DROPPED, FAILED, WRONG, CONNECT_ERROR = "closed unanswered", "failed", "wrong answer", "no connect"
REAP_TIMEOUT = 15.0  # a signalled worker must be reaped within this (SIGSTOP: the watchdog)


@dataclass
class Attempt:
    """One connection attempt as the client saw it."""

    index: int
    outcome: str
    local_port: int | None = None
    detail: str = ""


@dataclass
class ChaosEvent:
    """One signal sent to one worker, and how long until the supervisor had reaped it."""

    pid: int
    signum: int
    sent: float
    reaped_after: float | None = None


@dataclass
class FloodReport:
    """The figures of one run."""

    attempts: list[Attempt]
    events: list[ChaosEvent]
    seconds: float
    peak_established: int
    killed_ports: set[int] = field(default_factory=set)
    starved: set[int] = field(default_factory=set)  # workers the watchdog killed unsignalled
    limit_closed_ports: set[int] = field(default_factory=set)

    def counts(self) -> Counter[str]:
        return Counter(a.outcome for a in self.attempts)

    def unexplained(self) -> list[Attempt]:
        """Attempts that neither succeeded nor were refused, and that the log does not pin on a
        killed worker or on the limit."""
        return [a for a in self.attempts if a.outcome not in (SERVED, REJECTED_LIMIT)
                and not (a.outcome in (FAILED, DROPPED) and a.local_port in self.killed_ports)
                and not (a.outcome == DROPPED and a.local_port in self.limit_closed_ports)]

    def summary(self) -> dict[str, object]:
        kills = [e for e in self.events if e.signum == signal.SIGKILL]
        stops = [e for e in self.events if e.signum == signal.SIGSTOP]
        return {
            "attempts": len(self.attempts), **self.counts(),
            "seconds": round(self.seconds, 2),
            "peak established": self.peak_established,
            "kill -9": len(kills), "SIGSTOP": len(stops),
            "lost with killed workers": sum(1 for a in self.attempts
                                            if a.local_port in self.killed_ports
                                            and a.outcome in (FAILED, DROPPED)),
            "closed at the limit (refusals full)": sum(
                1 for a in self.attempts
                if a.outcome == DROPPED and a.local_port in self.limit_closed_ports),
            "lost outside killed workers": len(self.unexplained()),
            "max reap after kill -9 (s)": _max_reap(kills),
            "max reap after SIGSTOP (s)": _max_reap(stops),
        }


def _max_reap(events: list[ChaosEvent]) -> float | None:
    times = [e.reaped_after for e in events if e.reaped_after is not None]
    return round(max(times), 3) if times else None


class _Gauge:
    """Associations established right now, and the most at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def up(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def down(self) -> None:
        self.now -= 1


async def _attempt(index: int, host: str, port: int, called: str, hold: float,
                   expected_matches: int, gauge: _Gauge, timeout: float) -> Attempt:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return Attempt(index, CONNECT_ERROR, detail=repr(exc))
    attempt = Attempt(index, DROPPED, writer.get_extra_info("sockname")[1])
    established = False
    try:
        writer.write(wire.single_context_rq(called, wire.MWL if index % 2 else wire.VERIFICATION))
        pdu_type, body = await asyncio.wait_for(wire.read_pdu(reader.readexactly), timeout)
        if pdu_type == wire.ASSOCIATE_RJ:
            attempt.outcome = (REJECTED_LIMIT if wire.rj_reason(body) == (2, 3, 2)
                               else REJECTED_OTHER)
            return attempt
        if pdu_type != wire.ASSOCIATE_AC:
            raise wire.PduError(f"PDU type {pdu_type:#x} instead of A-ASSOCIATE-AC")
        established = True
        gauge.up()
        attempt.outcome = FAILED
        await asyncio.sleep(hold)
        attempt.outcome = await asyncio.wait_for(
            _exchange(reader, writer, index % 2 == 1, expected_matches), timeout)
    except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError,
            wire.PduError) as exc:
        attempt.detail = repr(exc)
    finally:
        if established:
            gauge.down()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return attempt


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, query: bool,
                    expected_matches: int) -> str:
    """C-FIND (universal) or C-ECHO, then release; SERVED only if every answer was right."""
    writer.write(wire.universal_find_rq() if query else wire.echo_rq())
    statuses = await wire.read_statuses(reader.readexactly)
    wanted = [0xFF00] * expected_matches + [0] if query else [0]
    writer.write(wire.release_rq())
    pdu_type, _ = await wire.read_pdu(reader.readexactly)
    if pdu_type != wire.RELEASE_RP:
        raise wire.PduError(f"PDU type {pdu_type:#x} instead of A-RELEASE-RP")
    return SERVED if statuses == wanted else WRONG


async def _flood(host: str, port: int, called: str, attempts: int, concurrency: int,
                 hold: float, expected_matches: int, gauge: _Gauge,
                 timeout: float) -> list[Attempt]:
    limiter = asyncio.Semaphore(concurrency)

    async def bounded(index: int) -> Attempt:
        async with limiter:
            return await _attempt(index, host, port, called, hold * random.random() * 2,
                                  expected_matches, gauge, timeout)

    return list(await asyncio.gather(*(bounded(i) for i in range(attempts))))


class ChaosMonkey(threading.Thread):
    """Signals ``kills`` + ``stops`` random workers, one every ``interval`` seconds."""

    def __init__(self, server: Wlmd, kills: int, stops: int, interval: float,
                 seed: int) -> None:
        super().__init__(name="chaos-monkey", daemon=True)
        self._server = server
        self._plan = [signal.SIGKILL] * kills + [signal.SIGSTOP] * stops
        random.Random(seed).shuffle(self._plan)
        self._random = random.Random(seed + 1)
        self._interval = interval
        self.events: list[ChaosEvent] = []
        self.finished = threading.Event()
        self.watchers: list[threading.Thread] = []

    def run(self) -> None:
        plan = list(self._plan)
        for _ in range(len(plan) * 20):  # bounded: a worker may exit before it is signalled
            if not plan or self.finished.wait(self._interval):
                return
            signalled = {e.pid for e in self.events}
            workers = [pid for pid in self._server.workers() if pid not in signalled]
            if not workers:
                continue
            event = ChaosEvent(self._random.choice(workers), plan[0], time.monotonic())
            try:
                os.kill(event.pid, event.signum)
            except ProcessLookupError:
                continue
            plan.pop(0)
            self.events.append(event)
            watcher = threading.Thread(target=_time_reaping, args=(event, REAP_TIMEOUT),
                                       daemon=True)
            watcher.start()
            self.watchers.append(watcher)


def _time_reaping(event: ChaosEvent, timeout: float) -> None:
    """Poll (bounded) until the supervisor has reaped the signalled worker."""
    while time.monotonic() - event.sent < timeout:
        if not os.path.exists(f"/proc/{event.pid}"):
            event.reaped_after = time.monotonic() - event.sent
            return
        time.sleep(0.005)


_DIED = re.compile(r"worker (\d+) serving [^ ]+:(\d+) died")
# A worker the watchdog killed: a stopped one, or one starved of CPU for the whole worker
# timeout on a loaded 2-core machine (its association is lost the same way).
_SILENT = re.compile(r"killing worker (\d+) serving [^ ]+:\d+: no heartbeat")
_LIMIT_CLOSED = re.compile(r"refusals pending: closing [^ ]+:(\d+)$", re.M)


def _settled_log(server: Wlmd) -> str:
    """The server's log once every worker the watchdog killed has its "died" line: the
    supervisor writes it when it reaps the worker, which may come after the flood's client
    saw the connection reset (CI read the log in between once)."""
    deadline = time.monotonic() + REAP_TIMEOUT
    while True:
        log = server.log()
        silent = {int(m[1]) for m in _SILENT.finditer(log)}
        if silent <= {int(m[1]) for m in _DIED.finditer(log)} or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def server_args(dfp: Path, max_associations: int) -> list[str]:
    """wlmd under load: the given limit, and a watchdog quick enough for a short run."""
    return ["-dfp", str(dfp), "--max-associations", str(max_associations),
            "--worker-timeout", "2", "--acse-timeout", "5"]


def run_flood(server: Wlmd, called: str, *, attempts: int, concurrency: int, hold: float,
              expected_matches: int, kills: int = 0, stops: int = 0,
              chaos_interval: float = 0.3, seed: int = 6,
              timeout: float = 20.0) -> FloodReport:
    """Flood ``server`` while the monkey signals workers; then read the log to explain losses."""
    monkey = ChaosMonkey(server, kills, stops, chaos_interval, seed)
    gauge = _Gauge()
    random.seed(seed)
    started = time.monotonic()
    monkey.start()
    try:
        results = asyncio.run(_flood(server.host, server.port, called, attempts, concurrency,
                                     hold, expected_matches, gauge, timeout))
    finally:
        monkey.finished.set()
        monkey.join()
    seconds = time.monotonic() - started
    for watcher in monkey.watchers:
        watcher.join(REAP_TIMEOUT)
    killed = {e.pid for e in monkey.events}
    log = _settled_log(server)
    report = FloodReport(results, monkey.events, seconds, gauge.peak)
    report.starved = {int(m[1]) for m in _SILENT.finditer(log)} - killed
    killed |= report.starved
    report.killed_ports = {int(m[2]) for m in _DIED.finditer(log) if int(m[1]) in killed}
    report.limit_closed_ports = {int(m[1]) for m in _LIMIT_CLOSED.finditer(log)}
    return report
