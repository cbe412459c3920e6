"""Drive a running wlmd with fuzz cases over loopback and judge every association and the server.

Used by ``tests/fuzz/test_fuzz_smoke.py`` (a short seeded run) and from the command line
(``make fuzz``; ``python -m tests.fuzz.runner --help``). After every case it checks that the same
server process still answers a correct query with the right entries and that no wlmd process
has grown past the RSS bound. Findings are saved as JSON reproducers the smoke test replays.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from pydicom import dcmread

from tests.fuzz.generators import (
    ABORT,
    CLOSE,
    IDENTIFIER,
    IDLE,
    REJECT,
    RELEASE,
    Case,
    CaseStream,
)
from tests.support import wire
from tests.support.processes import free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "worklists"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
HEALTH_AE = "CT01"
MODES = ("fork", "single")
# C-FIND-RSP statuses a worklist SCP may send (PS3.4 K.4.1.1.4 and C.4.1.1.4).
ALLOWED_STATUSES = frozenset((0xFF00, 0xFF01, 0x0000, 0xFE00, 0xA700, 0xA900)) | frozenset(
    range(0xC000, 0xD000)
)
COVERAGE_RC = """\
[run]
parallel = true
sigterm = true
patch = _exit, fork
source = wlmd
data_file = {data}
"""


# --- the server under test ------------------------------------------------------------------------


class Server:
    """One wlmd process (and, in fork mode, its workers) started and stopped by PID."""

    def __init__(self, mode: str, workdir: Path, *, coverage: bool = False) -> None:
        self.mode = mode
        self.workdir = workdir
        self.data = workdir / "worklists"
        if not self.data.exists():
            shutil.copytree(EXAMPLES, self.data)
        self.coverage_rc = workdir / "coveragerc" if coverage else None
        self.log_path = workdir / f"wlmd-{mode}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.pid = 0
        self._log_offset = 0
        self.last_log = ""
        self.starts = 0

    def command(self) -> list[str]:
        cmd = [sys.executable]
        if self.coverage_rc is not None:
            data = self.workdir / "coverage" / ".coverage"
            data.parent.mkdir(exist_ok=True)
            self.coverage_rc.write_text(COVERAGE_RC.format(data=data))
            cmd += ["-m", "coverage", "run", f"--rcfile={self.coverage_rc}"]
        cmd += ["-m", "wlmd", "--listen-address", "127.0.0.1", "-dfp", str(self.data),
                "--acse-timeout", "5", "--worker-timeout", "20"]
        if self.mode == "single":
            cmd.append("--single-process")
        return [*cmd, str(self.port)]

    def start(self) -> None:
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=log,
                                         cwd=REPO)
        self.pid = self.proc.pid
        self.starts += 1
        try:
            wait_for_port(self.port, proc=self.proc, timeout=20)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        """The server and its descendants (the workers)."""
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def over_rss(self, bound: int) -> list[tuple[int, int]]:
        """(pid, RSS) of every server process above ``bound`` bytes."""
        out = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                if rss > bound:
                    out.append((proc.pid, rss))
        return out

    def new_log(self) -> str:
        """What the server logged since the last call."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            data = log.read()
            self._log_offset = log.tell()
        self.last_log = data.decode("utf-8", "replace")
        return self.last_log


# --- one case on one connection -------------------------------------------------------------------


@dataclass
class Outcome:
    """How one association ended and what the server said on the way."""

    end: str  # abort | reject | release | close | hang | handshake
    nudged: bool = False
    shape: str = ""
    statuses: tuple[int, ...] = ()
    elapsed: float = 0.0


@dataclass(frozen=True)
class Timing:
    """Bounds for one case: how long silence means "waiting for us", and for a hang."""

    quiet: float = 0.25
    hang: float = 4.0
    connect: float = 3.0


def _prefix(conn: wire.Connection, stage: str, timing: Timing) -> str | None:
    """Bring a fresh connection to ``stage``; the reason when the server would not."""
    if stage == IDLE:
        return None
    conn.send(wire.associate_rq())
    try:
        pdu_type, _ = conn.read_pdu(timing.hang)
    except (TimeoutError, wire.Closed) as exc:
        return f"no A-ASSOCIATE-AC ({type(exc).__name__})"
    if pdu_type != wire.ASSOCIATE_AC:
        return f"PDU type {pdu_type:#04x} instead of A-ASSOCIATE-AC"
    if stage == IDENTIFIER:
        conn.send(wire.p_data(wire.pdv(1, True, True, wire.find_command(3))))
    return None


def drive(port: int, case: Case, timing: Timing = Timing()) -> Outcome:
    """Send a case, then wait, release, half-close in turn until the association ends."""
    started = time.monotonic()
    conn = wire.Connection(port, timing.connect)
    received = wire.Received()
    try:
        problem = _prefix(conn, case.stage, timing)
        if problem is not None:
            return Outcome("handshake", shape=problem)
        for chunk in case.chunks:
            if not conn.send(chunk):
                break
        # A case the server must end by itself gets the whole hang bound before any nudge.
        ended = conn.collect(received, timing.hang if case.unprompted else timing.quiet,
                             timing.hang)
        nudged = not ended
        if not ended:
            conn.send(wire.pdu(wire.RELEASE_RQ, bytes(4)))
            ended = conn.collect(received, timing.quiet * 2, timing.hang)
        if not ended:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            ended = conn.collect(received, timing.hang, timing.hang)
    finally:
        conn.close()
    end = classify(received) if ended else "hang"
    statuses = tuple(m.status for m in wire.messages(received.pdus) if m.status is not None)
    return Outcome(end, nudged, shape(received), statuses, time.monotonic() - started)


def classify(received: wire.Received) -> str:
    """The last association-ending PDU the server sent, or a bare close."""
    ends = {wire.ASSOCIATE_RJ: REJECT, wire.ABORT: ABORT, wire.RELEASE_RP: RELEASE}
    last = [ends[t] for t in received.kinds() if t in ends]
    return last[-1] if last else CLOSE


def shape(received: wire.Received) -> str:
    """A response class: the PDU kinds, DIMSE statuses and reject/abort reasons, runs folded."""
    tokens: list[str] = []
    statuses = [f"rsp:{m.status:04x}" for m in wire.messages(received.pdus)]
    for pdu_type, body in received.pdus:
        if pdu_type == wire.P_DATA:
            tokens += statuses
            statuses = []
        elif pdu_type in (wire.ASSOCIATE_RJ, wire.ABORT) and len(body) >= 4:
            tokens.append(f"{pdu_type:02x}:{body[1]}/{body[2]}/{body[3]}")
        else:
            tokens.append(f"{pdu_type:02x}")
    tokens.append("eof" if received.closed else "open")
    folded: list[str] = []
    for token in tokens:
        if folded and folded[-1].rstrip("+") == token:
            folded[-1] = token + "+"
        else:
            folded.append(token)
    return " ".join(folded)


def judge(case: Case, outcome: Outcome) -> list[tuple[str, str]]:
    """(kind, detail) of everything wrong with how the server handled one case."""
    problems = []
    if outcome.end == "hang":
        problems.append(("hang", f"association still open after {outcome.elapsed:.1f}s"))
    elif outcome.end == "handshake":
        problems.append(("wrong-answer", outcome.shape))
    elif outcome.end not in case.expect:
        problems.append(("unexpected-end", f"{outcome.end}, expected {sorted(case.expect)}"))
    elif case.unprompted and outcome.nudged:
        problems.append(("unexpected-end", f"{outcome.end} only after the client released"))
    bad = sorted({s for s in outcome.statuses if s not in ALLOWED_STATUSES})
    if bad:
        problems.append(("bad-status", ", ".join(f"{s:#06x}" for s in bad)))
    return problems


# --- the oracle: a correct query and its known answer ---------------------------------------------


def expected_accessions(data: Path, called_ae: str = HEALTH_AE) -> list[str]:
    """The health query's answer, read from the worklist files themselves (not from wlmd)."""
    out = []
    for path in sorted((data / called_ae).glob("*.wl")):
        out.append(str(dcmread(path).AccessionNumber))
    return sorted(out)


def health_query(port: int, timeout: float = 5.0) -> tuple[list[str], int | None]:
    """Run the health query: (sorted accession numbers, final status)."""
    conn = wire.Connection(port, timeout)
    received = wire.Received()
    try:
        conn.send(wire.associate_rq(HEALTH_AE.encode()))
        pdu_type, ac = conn.read_pdu(timeout)
        if pdu_type != wire.ASSOCIATE_AC:
            raise AssertionError(f"health association answered with PDU type {pdu_type:#04x}")
        ts = wire.accepted_syntax(ac, 1) or wire.ELE
        identifier = wire.encode_identifier(wire.health_query(), implicit=ts == wire.ILE)
        conn.send(wire.p_data(wire.pdv(1, True, True, wire.find_command(1)))
                  + wire.p_data(wire.pdv(1, False, True, identifier)))
        deadline = time.monotonic() + timeout
        final = None
        while final is None and time.monotonic() < deadline:
            received.pdus.append(conn.read_pdu(timeout))
            if received.pdus[-1][0] != wire.P_DATA:
                break
            final = next((m.status for m in wire.messages(received.pdus)
                          if m.status not in (0xFF00, 0xFF01)), None)
        conn.send(wire.pdu(wire.RELEASE_RQ, bytes(4)))
        with contextlib.suppress(TimeoutError, wire.Closed):
            conn.read_pdu(timeout)
    finally:
        conn.close()
    found = [str(wire.decode_identifier(m.dataset, ts).AccessionNumber)
             for m in wire.messages(received.pdus) if m.dataset is not None]
    return sorted(found), final


# --- a campaign -----------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str  # death | hang | wrong-answer | rss | unexpected-end | bad-status | traceback
    mode: str
    case: Case
    detail: str

    def line(self) -> str:
        return f"[{self.mode}] {self.kind}: {self.case.family} ({self.case.note}) — {self.detail}"


CRASH_KINDS = frozenset(("death", "hang", "wrong-answer", "rss"))


@dataclass
class Tally:
    """What a campaign did and found."""

    cases: Counter = field(default_factory=Counter)  # per mode
    families: Counter = field(default_factory=Counter)
    ends: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    restarts: int = 0
    max_rss: int = 0
    coverage: dict[str, float] = field(default_factory=dict)

    def crashes(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in CRASH_KINDS]


@dataclass
class Campaign:
    """Runs cases against one server in one mode, checking the server after every case."""

    server: Server
    tally: Tally
    rss_bound: int = 256 << 20
    timing: Timing = Timing()
    health_every: int = 1
    expected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.expected = expected_accessions(self.server.data)

    def run(self, cases: Iterable[Case], max_cases: int, deadline: float) -> None:
        """At most ``max_cases`` cases, stopping at ``deadline`` (monotonic)."""
        for n, case in enumerate(cases):
            if n >= max_cases or time.monotonic() >= deadline:
                return
            self.one(case, check=(n + 1) % self.health_every == 0)

    def one(self, case: Case, check: bool = True) -> list[Finding]:
        """Run one case and the checks after it; restart the server if it died or hung."""
        mode = self.server.mode
        self.tally.cases[mode] += 1
        self.tally.families[case.family] += 1
        found = []
        try:
            outcome = drive(self.server.port, case, self.timing)
        except OSError as exc:  # could not even connect
            outcome = Outcome("hang", shape=f"connect: {exc}")
        self.tally.ends[outcome.end] += 1
        self.tally.shapes[outcome.shape] += 1
        found += [Finding(kind, mode, case, detail) for kind, detail in judge(case, outcome)]
        if check or found:
            found += self.check_server(case)
        self.tally.findings += found
        if any(f.kind in CRASH_KINDS for f in found):
            self.restart()
        return found

    def check_server(self, case: Case) -> list[Finding]:
        mode = self.server.mode
        found = []
        log = self.server.new_log()
        if "Traceback" in log:
            found.append(Finding("traceback", mode, case, _last_lines(log)))
        if not self.server.alive():
            return [*found, Finding("death", mode, case, f"exit {self.server.proc.returncode}")]
        for pid, rss in self.server.over_rss(self.rss_bound):
            found.append(Finding("rss", mode, case, f"pid {pid} RSS {rss >> 20} MiB"))
        for proc in self.server.processes():
            with contextlib.suppress(psutil.Error):
                self.tally.max_rss = max(self.tally.max_rss, proc.memory_info().rss)
        try:
            answer, status = health_query(self.server.port)
        except (OSError, TimeoutError, wire.Closed, AssertionError) as exc:
            return [*found, Finding("hang", mode, case, f"health query failed: {exc!r}")]
        if answer != self.expected or status != 0:
            detail = f"health query gave {answer} status {status}, expected {self.expected}"
            found.append(Finding("wrong-answer", mode, case, detail))
        return found

    def restart(self) -> None:
        self.server.stop()
        self.server.start()
        self.tally.restarts += 1


def _last_lines(text: str, count: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-count:])


def replay_regressions(campaign: Campaign, directory: Path = REGRESSIONS) -> list[Finding]:
    """Run every saved reproducer once."""
    found = []
    for path in sorted(directory.glob("*.json")):
        found += campaign.one(Case.from_json(path.read_text()))
    return found


def save_reproducer(finding: Finding, directory: Path = REGRESSIONS) -> Path:
    """Write a finding's case as JSON under a name derived from its bytes (no duplicates)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = finding.case.to_json()
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    path = directory / f"{finding.kind}-{finding.case.family.split('+')[0]}-{digest}.json"
    path.write_text(text + "\n")
    return path


# --- coverage -------------------------------------------------------------------------------------


def coverage_percent(workdir: Path) -> dict[str, float]:
    """Percent of wlmd/dicom and wlmd/worklist lines the servers ran (empty without coverage)."""
    try:
        import coverage
    except ImportError:
        return {}
    data_dir = workdir / "coverage"
    if not any(data_dir.glob(".coverage.*")):
        return {}
    cov = coverage.Coverage(data_file=str(data_dir / ".coverage"),
                            config_file=str(workdir / "coveragerc"))
    cov.combine([str(data_dir)])
    cov.load()
    out = {}
    for package in ("dicom", "worklist"):
        with contextlib.suppress(coverage.CoverageException):
            out[f"wlmd/{package}"] = cov.report(include=f"*/wlmd/{package}/*", file=io.StringIO())
    return out


def coverage_available() -> bool:
    try:
        import coverage  # noqa: F401
    except ImportError:
        return False
    return True


# --- command line ---------------------------------------------------------------------------------


def run(modes: Iterable[str], seed: int, seconds: float, max_cases: int, *,
        coverage: bool = False, workdir: Path | None = None,
        replay: bool = True) -> Tally:
    """A campaign per mode, the time split evenly; regressions replayed first."""
    modes = list(modes)
    tally = Tally()
    with _workdir(workdir) as root:
        for n, mode in enumerate(modes):
            server = Server(mode, root, coverage=coverage)
            server.start()
            try:
                campaign = Campaign(server, tally)
                if replay:
                    replay_regressions(campaign)
                share = seconds / len(modes)
                campaign.run(CaseStream(seed + n), max_cases, time.monotonic() + share)
            finally:
                server.stop()
        if coverage:
            tally.coverage = coverage_percent(root)
    return tally


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="wlmd-fuzz-") as tmp:
        yield Path(tmp)


def report(tally: Tally, seconds: float) -> str:
    """The figures ``make fuzz`` prints."""
    lines = [
        f"fuzz: {sum(tally.cases.values())} cases in {seconds:.0f}s "
        + ", ".join(f"{m}: {c}" for m, c in tally.cases.items()),
        f"crashes found: {len(tally.crashes())} (server death, hang, wrong answer, RSS over bound)",
        f"other findings: {len(tally.findings) - len(tally.crashes())} "
        "(unexpected end, bad status, traceback in the log)",
        f"server restarts after a crash: {tally.restarts}",
        f"largest wlmd process RSS: {tally.max_rss >> 20} MiB",
        "association ends: " + ", ".join(f"{k} {v}" for k, v in tally.ends.most_common()),
        f"distinct response classes: {len(tally.shapes)}",
    ]
    if tally.coverage:
        lines.append("coverage: " + ", ".join(f"{k} {v:.1f}%" for k, v in tally.coverage.items()))
    else:
        lines.append("coverage: not measured (pip install coverage); response classes above")
    lines += [f"  {f.line()}" for f in tally.findings[:50]]
    return "\n".join(lines)


def replay_files(paths: list[Path], modes: Iterable[str]) -> int:
    """Show what each reproducer does to a fresh server: the outcome, findings and log."""
    failed = 0
    for mode in modes:
        with _workdir(None) as root:
            server = Server(mode, root)
            server.start()
            try:
                campaign = Campaign(server, Tally())
                for path in paths:
                    case = Case.from_json(path.read_text())
                    outcome = drive(server.port, case, campaign.timing)
                    found = judge(case, outcome) + [
                        (f.kind, f.detail) for f in campaign.check_server(case)
                    ]
                    failed += bool(found)
                    print(f"[{mode}] {path.name}: {outcome.end} ({outcome.shape}) "
                          f"{[kind for kind, _ in found] or 'OK'}")
                    if server.last_log.strip():
                        print(server.last_log.rstrip())
            finally:
                server.stop()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS",
                                                                              300)))
    parser.add_argument("--max-cases", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--coverage", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--save", type=Path, default=REGRESSIONS,
                        help="directory for reproducers of findings")
    parser.add_argument("--shapes", action="store_true", help="list the response classes")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="JSON",
                        help="run these reproducers once each, print outcome and server log")
    args = parser.parse_args(argv)
    modes = MODES if args.mode == "both" else (args.mode,)
    if args.replay:
        return replay_files(args.replay, modes)
    coverage = args.coverage == "yes" or (args.coverage == "auto" and coverage_available())
    print(f"fuzz: seed {args.seed}, {args.seconds:.0f}s, modes {', '.join(modes)}", flush=True)
    started = time.monotonic()
    tally = run(modes, args.seed, args.seconds, args.max_cases, coverage=coverage)
    print(report(tally, time.monotonic() - started))
    if args.shapes:
        for name, count in tally.shapes.most_common():
            print(f"  {count:6d}  {name}")
    saved = set()
    for finding in tally.findings:  # one reproducer per kind of finding and family of case
        key = (finding.kind, finding.case.family)
        if key not in saved:
            saved.add(key)
            print(f"saved {save_reproducer(finding, args.save)}")
    return 1 if tally.crashes() else 0


if __name__ == "__main__":
    sys.exit(main())
