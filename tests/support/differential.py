"""Send queries with DCMTK findscu to two servers and compare what came back.

One findscu call per called AE sends all its queries on one association (``-X`` extracts each
response to ``rspNNNN.dcm``; ``-d`` logs every C-FIND-RSP command set). The log is split per
query, so each query yields an ``Outcome``: the multiset of (status, response dataset) pairs,
the final status and its status detail (offending elements, error comment). Datasets are
compared in a canonical text form that keeps VRs and the exact value bytes (padding included).
Response order is not compared: it is a documented departure of wlmd.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread

from tests.support import processes
from tests.support.corpus import dcmtk

FINDSCU_TIMEOUT = 60.0
STATUS = re.compile(r"^D: DIMSE Status\s+: (0x[0-9a-f]{4})")
WRITING = re.compile(r"^I: Writing response dataset to file: (.+)$")


@dataclass
class Outcome:
    """What one C-FIND produced, as findscu saw it."""

    responses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, dataset)
    final: str | None = None  # None: no final response (association died)
    detail: list[str] = field(default_factory=list)  # the final response's status detail


@dataclass(frozen=True)
class Session:
    """One findscu run: its exit status, its messages and one Outcome per query sent."""

    returncode: int
    messages: tuple[str, ...]
    outcomes: dict[str, Outcome]


def canonical(ds: Dataset, indent: str = "") -> Iterator[str]:
    """Lines naming each element's tag, VR and exact value bytes; items are indented."""
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None) or ds[tag].VR
        if vr == "SQ":
            items = ds[tag].value
            yield f"{indent}{tag} SQ items={len(items)}"
            for number, item in enumerate(items):
                yield f"{indent}  item {number}"
                yield from canonical(item, indent + "    ")
        else:
            value = raw.value if isinstance(raw.value, bytes) else repr(ds[tag].value)
            yield f"{indent}{tag} {vr} {value!r}"


def read_response(path: Path) -> str:
    """The canonical text of one extracted response file."""
    return "\n".join(canonical(dcmread(path)))


def parse_log(log: str, names: list[str]) -> dict[str, Outcome]:
    """Split findscu's debug log into one Outcome per query, in the order they were sent."""
    outcomes: dict[str, Outcome] = {}
    current: Outcome | None = None
    status, final, in_detail = "", False, False
    pending_names = iter(names)
    for line in log.splitlines():
        if line.startswith("I: Sending Find Request"):
            current = outcomes[next(pending_names)] = Outcome()
            final, in_detail = False, False
        elif current is None:
            continue
        elif line.startswith("I: Received Final Find Response"):
            final = True
        elif match := STATUS.match(line):
            status = match.group(1)
            if final:
                current.final = status
        elif line.startswith("D: Status Detail:"):
            in_detail = True
        elif in_detail and line.startswith("D: ("):
            current.detail.append(line[3:])
        elif match := WRITING.match(line):
            current.responses[(status, read_response(Path(match.group(1))))] += 1
        elif line.startswith("I: ") and in_detail:
            in_detail = False
    for name in pending_names:
        outcomes[name] = Outcome()
    return outcomes


def messages(log: str, out_dir: Path, port: int) -> tuple[str, ...]:
    """findscu's warnings and errors, with run-specific paths and ports blanked."""
    keep = (line for line in log.splitlines() if line[:3] in ("W: ", "E: ", "F: "))
    return tuple(line.replace(str(out_dir), "<out>").replace(str(port), "<port>")
                 for line in keep)


def run_findscu(port: int, ae: str, queries: dict[str, Path], out_dir: Path,
                options: Iterable[str] = ()) -> Session:
    """Send ``queries`` (name → .dcm) to ``ae`` on one association and collect the outcomes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [dcmtk("findscu"), "-d", "-X", "-od", str(out_dir), "-aec", ae, *options,
           "127.0.0.1", str(port), *map(str, queries.values())]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                          timeout=FINDSCU_TIMEOUT, check=False)
    log = proc.stdout + proc.stderr
    return Session(proc.returncode, messages(log, out_dir, port),
                   parse_log(log, list(queries)))


def similarity(a: str, b: str) -> float:
    """How alike two canonical datasets are (to pair a missing response with its twin)."""
    return difflib.SequenceMatcher(None, a, b).ratio()


def dataset_diff(expected: str, got: str) -> str:
    """Only the lines that differ between two canonical datasets (with their nesting)."""
    diff = difflib.unified_diff(expected.splitlines(), got.splitlines(), lineterm="", n=0)
    return "\n".join(f"      {line}" for line in diff
                     if not line.startswith(("---", "+++", "@@")))


def difference(name: str, expected: Outcome, got: Outcome) -> list[str]:
    """Human-readable differences between the reference's and the candidate's outcome."""
    found = []
    if expected.final != got.final:
        found.append(f"{name}: final status expected {expected.final} got {got.final}")
    if expected.detail != got.detail:
        found.append(f"{name}: status detail expected {expected.detail} got {got.detail}")
    missing = list((expected.responses - got.responses).elements())
    extra = list((got.responses - expected.responses).elements())
    if missing or extra:
        found.append(f"{name}: {sum(expected.responses.values())} responses expected, "
                     f"{sum(got.responses.values())} received; "
                     f"{len(missing)} missing, {len(extra)} unexpected")
    for status, text in missing[:3]:
        if not extra:
            found.append(f"  missing {status}:\n{text}")
            continue
        other_status, other = max(extra, key=lambda pair: similarity(text, pair[1]))
        found.append(f"  expected {status} (-) vs closest received {other_status} (+):\n"
                     + dataset_diff(text, other))
    if not missing:
        found += [f"  unexpected {status}:\n{text}" for status, text in extra[:3]]
    return found


def compare(expected: Session, got: Session, label: str) -> list[str]:
    """All differences between two sessions (exit status, messages, every query)."""
    found = []
    if expected.returncode != got.returncode:
        found.append(f"{label}: findscu exit status expected {expected.returncode} "
                     f"got {got.returncode}")
    if expected.messages != got.messages:
        found.append(f"{label}: findscu messages expected {expected.messages} "
                     f"got {got.messages}")
    for name, outcome in expected.outcomes.items():
        found += difference(name, outcome, got.outcomes[name])
    return found


def responses_compared(session: Session) -> int:
    """How many response datasets a session holds."""
    return sum(sum(o.responses.values()) for o in session.outcomes.values())


# --- servers -------------------------------------------------------------------------------

def candidate_is_wlmscpfs() -> bool:
    """WLMD_DIFF_CANDIDATE=wlmscpfs checks the harness itself: wlmscpfs against wlmscpfs."""
    return os.environ.get("WLMD_DIFF_CANDIDATE", "wlmd") == "wlmscpfs"


def start_server(kind: str, db: Path, options: Iterable[str], log: Path
                 ) -> tuple[subprocess.Popen, int]:
    """Start the reference ("wlmscpfs") or the candidate ("wlmd") on a free loopback port.

    Logs go to a file: a server blocked on a full stderr pipe would stall the suite.
    """
    port = processes.free_port()
    args = ["-dfp", str(db), *options]
    with log.open("wb") as sink:
        if kind == "wlmd" and not candidate_is_wlmscpfs():
            proc = processes.start_wlmd(args, port, stdout=sink, stderr=subprocess.STDOUT)
        else:
            proc = processes.start_wlmscpfs(args, port, stdout=sink, stderr=subprocess.STDOUT)
    return proc, port
