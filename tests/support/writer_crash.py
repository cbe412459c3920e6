"""The writer's crash-safety run: ``wlmctl`` killed (SIGKILL) at every step of a change while
wlmd and DCMTK's wlmscpfs answer queries on the same directory.

Each change runs as its own process with ``WLMD_WRITER_FAULT=<step>``, which makes the writer
kill itself at that step (``wlmd.worklist.writer.FAULT_STEPS``); changes that complete run in
between, so the directory keeps changing. Two query loops (pynetdicom SCU), one per server,
check every answer against what a whole entry holds. The run reports the answers, the broken
ones, and the "file will be ignored" warnings of both servers; all but the first must be 0.

``python -m tests.support.writer_crash --rounds N`` is the long version (``make soak``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset

from tests.support.processes import free_port, start_wlmd, start_wlmscpfs, stop_process
from tests.support.wlmctl import entry_keys, find, wlmctl
from wlmd.worklist.writer import FAULT_ENV, FAULT_STEPS

AE = "CT01"
BASE = ("C0", "C1", "C2")
EXTRA = "extra.wl"
STATUSES = ("SCHEDULED", "STARTED")
BAD_FILE_WARNINGS = ("file will be ignored", "Could not read worklist file", "is incomplete")
KILLED = -9


@dataclass
class Report:
    """What one run saw; ``ok`` when nothing broken was served and nothing was warned about."""

    kills: int = 0
    completed_changes: int = 0
    answers: dict[str, int] = field(default_factory=lambda: {"wlmd": 0, "wlmscpfs": 0})
    queries: dict[str, int] = field(default_factory=lambda: {"wlmd": 0, "wlmscpfs": 0})
    broken: list[str] = field(default_factory=list)
    bad_file_warnings: list[str] = field(default_factory=list)
    not_killed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.broken or self.bad_file_warnings or self.not_killed)


def prepare(root: Path) -> None:
    """The AE directory with the entries every answer must contain."""
    for number, accession in enumerate(BASE):
        result = wlmctl(root, "add", AE, "--new-ae", *entry_keys(accession,
                                                                 patient_id=f"P{number}"))
        assert result.returncode == 0, result.stderr


def changes() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(name, wlmctl arguments, the fault steps it passes) of the changes the run makes."""
    replace = ("add", AE, "--replace", "--name", EXTRA, *entry_keys("X9", patient_id="P9"))
    writes = tuple(step for step in FAULT_STEPS if step != "removed")
    return [
        ("set-status", ("set-status", "C1", "STARTED"), writes),
        ("add --replace", replace, writes),
        ("rm", ("rm", f"{AE}/{EXTRA}"), ("locked", "removed")),
    ]


def check_answer(identifier: Dataset) -> str | None:
    """What is wrong with one C-FIND answer, compared with a whole entry; None if nothing."""
    accession = str(identifier.get("AccessionNumber", ""))
    if accession not in (*BASE, "X9"):
        return f"unknown accession {accession!r}"
    if not str(identifier.get("PatientName", "")):
        return f"{accession}: no PatientName"
    steps = identifier.get("ScheduledProcedureStepSequence")
    if not steps or len(steps) != 1:
        return f"{accession}: not one SPS item"
    step = steps[0]
    if step.get("Modality") != "CT" or step.get("ScheduledProcedureStepStatus", "") not in (
            "", *STATUSES):
        status = step.get("ScheduledProcedureStepStatus")
        return f"{accession}: SPS item {step.get('Modality')!r} {status!r}"
    return None


def query_loop(name: str, port: int, stop: threading.Event, report: Report,
               lock: threading.Lock) -> None:
    """Query ``port`` until ``stop``; every answer set must hold the base entries, whole."""
    while not stop.is_set():
        try:
            found = find(port, AE)
        except AssertionError as error:
            with lock:
                report.broken.append(f"{name}: {error}")
            continue
        problems = [p for p in map(check_answer, found) if p]
        accessions = sorted(str(i.get("AccessionNumber", "")) for i in found)
        if not set(BASE) <= set(accessions) or len(found) not in (len(BASE), len(BASE) + 1):
            problems.append(f"answer set {accessions}")
        with lock:
            report.queries[name] += 1
            report.answers[name] += len(found)
            report.broken += [f"{name}: {p}" for p in problems]


def run(workdir: Path, rounds: int, time_limit: float) -> Report:
    """``rounds`` passes over every (change, step), at most ``time_limit`` seconds."""
    root = workdir / "worklists"
    root.mkdir(parents=True)
    prepare(root)
    report = Report()
    wlmd_port, wlmscpfs_port = free_port(), free_port()
    wlmd_log, wlmscpfs_log = workdir / "wlmd.log", workdir / "wlmscpfs.log"
    started = time.monotonic()
    with wlmd_log.open("wb") as wlmd_out, wlmscpfs_log.open("wb") as wlmscpfs_out:
        servers = [start_wlmd(["-dfp", str(root)], wlmd_port, stderr=wlmd_out, stdout=wlmd_out)]
        try:
            servers.append(start_wlmscpfs(["-dfp", str(root)], wlmscpfs_port,
                                          stderr=wlmscpfs_out, stdout=wlmscpfs_out))
            stop, lock = threading.Event(), threading.Lock()
            loops = [threading.Thread(target=query_loop, args=(n, p, stop, report, lock))
                     for n, p in (("wlmd", wlmd_port), ("wlmscpfs", wlmscpfs_port))]
            for loop in loops:
                loop.start()
            try:
                _crash_rounds(root, rounds, started + time_limit, report)
            finally:
                stop.set()
                for loop in loops:
                    loop.join(60)
        finally:
            for server in servers:
                stop_process(server)
    for log in (wlmd_log, wlmscpfs_log):
        report.bad_file_warnings += [f"{log.name}: {line}" for line in
                                     log.read_text(errors="replace").splitlines()
                                     if any(text in line for text in BAD_FILE_WARNINGS)]
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _crash_rounds(root: Path, rounds: int, deadline: float, report: Report) -> None:
    for _ in range(rounds):
        for name, arguments, steps in changes():
            for step in steps:
                if time.monotonic() > deadline:
                    return
                _ensure_extra(root, name)
                result = wlmctl(root, *arguments, env={FAULT_ENV: step})
                if result.returncode == KILLED:
                    report.kills += 1
                else:
                    report.not_killed.append(f"{name} at {step}: exit {result.returncode} "
                                             f"{result.stderr.strip()}")
                completed = wlmctl(root, *arguments)  # the same change, to the end
                report.completed_changes += completed.returncode == 0


def _ensure_extra(root: Path, change: str) -> None:
    """``rm`` needs the extra entry to be there."""
    if change == "rm" and not (root / AE / EXTRA).exists():
        wlmctl(root, "add", AE, "--name", EXTRA, *entry_keys("X9", patient_id="P9"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.writer_crash",
                                     description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=1800.0)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    report = run(args.workdir, args.rounds, args.time_limit)
    print(json.dumps({**report.__dict__, "ok": report.ok}, indent=1))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
