"""Run the benchmark scenarios: wlmd against a tuned wlmscpfs and Orthanc, alternating A B C.

The servers serve the same cached database on loopback; each scenario measures them in turn,
round after round, and reports medians, wlmd's ratios to both peers and whether the target
(against wlmscpfs) is met, as a Markdown table ready for the README.

    python -m benchmarks.run                       # everything (builds the databases once)
    python -m benchmarks.run --scenario small      # a group or scenario names
    python -m benchmarks.run --quick               # fewer rounds and samples
    python -m benchmarks.run --candidate wlmscpfs  # point both columns at wlmscpfs (runner test)
    python -m benchmarks.run --policy   # wlmd with a per-peer policy against wlmd without one
    python -m benchmarks.run --mpps --scenario small medium  # wlmd with MPPS on against off
    python -m benchmarks.run --no-orthanc          # without the Orthanc column
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import glob
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from math import isnan
from pathlib import Path

import psutil

from benchmarks import build_db
from benchmarks.loadgen import (
    Client,
    LoadResult,
    encode_identifier,
    find_once,
    run_load,
)

HOST = "127.0.0.1"
LOGS = build_db.CACHE / "logs"
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")  # Debian's path


@dataclass(frozen=True)
class Target:
    """A target: ``ratio_min``/``ratio_max`` compare wlmd with wlmscpfs, ``max`` is absolute."""

    kind: str
    value: float
    text: str

    def met(self, reference: float, candidate: float) -> bool | None:
        """Whether the candidate's median meets the target (None: no reference to compare with).

        A candidate without a figure (it failed or did not serve) does not meet its target.
        """
        if isnan(candidate):
            return False
        if self.kind != "max" and isnan(reference):
            return None
        if self.kind == "max":
            return candidate <= self.value
        ratio = candidate / reference if reference else float("nan")
        return ratio >= self.value if self.kind == "ratio_min" else ratio <= self.value


@dataclass
class Server:
    """One server under test: how to start it, and the running process."""

    label: str
    argv: Callable[[Path, int], list[str]]
    env: dict[str, str]
    index_of: Callable[[Path], Path] | None = None  # where it keeps its index of a database
    cannot: dict[str, str] = field(default_factory=dict)  # scenario name -> why it is skipped
    proc: subprocess.Popen | None = None
    port: int = 0
    root: Path = Path()
    broken: str = ""  # why the server could not serve this group's database
    unavailable: str = ""  # why the server is not run at all (not installed)
    # log lines of a server that serves while it loads: (loading began, loading done)
    loading_lines: tuple[str, str] | None = None
    log_path: Path = Path()

    def start(self, root: Path, query: bytes, timeout: float) -> float:
        """Start on a free port; the seconds from process start until a query succeeds."""
        self.root, self.port = root, free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{self.label.split()[0]}-{self.port}.log"
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv(root, self.port), env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        client = Client(HOST, self.port, build_db.CALLED_AE, [query])
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {LOGS}")
            remaining = deadline - time.perf_counter()
            if asyncio.run(find_once(client, remaining)) is not None:
                return time.perf_counter() - started
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.label} did not answer a query within {timeout:.0f}s")

    def settle(self, timeout: float) -> float:
        """Wait until a server that serves while it loads has loaded (wlmd with an index
        file: its workers answer from the files until then); the seconds waited."""
        started = time.perf_counter()
        if self.loading_lines is None:
            return 0.0
        began, done = self.loading_lines
        deadline = started + timeout
        while time.perf_counter() < deadline:
            log = self.log_path.read_text(errors="replace")
            if began not in log or done in log:
                return time.perf_counter() - started
            if self.proc is None or self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{self.label} did not finish loading within {timeout:.0f}s")

    def stop(self) -> None:
        """Terminate the process this runner started and, by PID, any child it leaves behind."""
        if self.proc is None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for child in children:  # e.g. a worker still busy when its supervisor was killed
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=3)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def forget_index(self) -> None:
        """Delete the server's on-disk index (and SQLite's side files): the next start is a
        first start."""
        if self.index_of is None:
            return
        index = self.index_of(self.root)
        for path in glob.glob(f"{glob.escape(str(index))}*"):
            os.unlink(path)

    def pss_mb(self) -> tuple[float, int]:
        """Total PSS (MB) of the process and all its descendants, and how many there are."""
        assert self.proc is not None
        parent = psutil.Process(self.proc.pid)
        total, count = 0, 0
        for proc in (parent, *parent.children(recursive=True)):
            try:
                total += proc.memory_full_info().pss
                count += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total / 2**20, count


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Options:
    """How much to measure: full or quick."""

    quick: bool
    rounds: int
    start_timeout: float
    load_timeout: float

    def pick(self, full: float, quick: float) -> float:
        """The full or the quick value of a knob."""
        return quick if self.quick else full


@dataclass
class Sample:
    """One measurement of one server in one round."""

    value: float
    failures: int = 0
    note: str = ""


@dataclass
class Scenario:
    """One row of the table."""

    name: str
    group: str
    size: int
    title: str
    unit: str
    target: Target
    measure: Callable[[Server, Options], Sample]
    max_rounds: int = 99
    samples: dict[str, list[Sample]] = field(default_factory=dict)


def small_query() -> bytes:
    """The small scenarios' query: every entry (10 responses), typical return keys."""
    return encode_identifier(build_db.all_entries_query())


def selective_query() -> bytes:
    """One station on one day: about 1 % of the entries."""
    return encode_identifier(build_db.selective_query())


def load(server: Server, opts: Options, query: bytes, *, assocs: int, conc: int, budget: float,
         per_assoc: int = 1) -> LoadResult:
    """One bounded load run against ``server``."""
    client = Client(HOST, server.port, build_db.CALLED_AE, [query], per_assoc)
    result = asyncio.run(run_load(client, assocs=assocs, concurrency=conc, budget=budget,
                                  timeout=opts.load_timeout))
    print(f"    {server.label}: {result.summary()}", file=sys.stderr)
    return result


def latency_ms(result: LoadResult) -> Sample:
    """Median association latency in milliseconds."""
    lat = result.assoc_latencies
    return Sample(statistics.median(lat) * 1000 if lat else float("nan"), result.failures)


def small_rate(server: Server, opts: Options) -> Sample:
    """Associations per second, 8 at a time."""
    r = load(server, opts, small_query(), assocs=int(opts.pick(1000, 300)), conc=8,
             budget=opts.pick(10, 3))
    return Sample(r.assoc_rate, r.failures)


def small_latency(server: Server, opts: Options) -> Sample:
    """Median latency of sequential associations."""
    return latency_ms(load(server, opts, small_query(), assocs=int(opts.pick(300, 100)), conc=1,
                           budget=opts.pick(10, 3)))


def small_queries(server: Server, opts: Options) -> Sample:
    """Queries per second, 20 per association, one association at a time."""
    r = load(server, opts, small_query(), assocs=int(opts.pick(150, 10)), conc=1,
             budget=opts.pick(10, 3), per_assoc=20)
    return Sample(r.query_rate, r.failures)


def selective(server: Server, opts: Options) -> Sample:
    """Median latency of sequential associations with one selective query each."""
    return latency_ms(load(server, opts, selective_query(), assocs=int(opts.pick(30, 5)), conc=1,
                           budget=opts.pick(8, 3)))


_changes = itertools.count(1)  # a new name for every change, so a stale answer never passes


def change_then_query(server: Server, opts: Options) -> Sample:
    """Rewrite one matching entry with a new name, query, and check that the name is returned."""
    index = build_db.selective_index(build_db.database_size(server.root))
    client = Client(HOST, server.port, build_db.CALLED_AE, [selective_query()])
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + opts.pick(8, 3)
    stale = 0
    try:
        for _ in range(int(opts.pick(10, 3))):
            if time.perf_counter() >= deadline:
                break
            marker = f"CHANGED^N{next(_changes):06d}"
            build_db.rewrite_entry(server.root, index, marker)
            found = asyncio.run(find_once(client, opts.load_timeout, result))
            if found is not None and not any(marker.encode() in i for i in found.identifiers):
                stale += 1
    finally:
        build_db.rewrite_entry(server.root, index, None)
    result.wall = time.perf_counter() - started
    print(f"    {server.label}: {result.summary()} stale={stale}", file=sys.stderr)
    sample = latency_ms(result)
    sample.failures += stale
    sample.note = f"{stale} stale" if stale else ""
    return sample


def pss(server: Server, opts: Options) -> Sample:
    """Peak total PSS while 8 selective queries run at once (8 busy workers)."""
    peak = [0.0, 0]

    async def sampled() -> LoadResult:
        client = Client(HOST, server.port, build_db.CALLED_AE, [selective_query()])
        # 8 queries at once on 100,000 entries keep wlmscpfs busy for 20-40 s on 2 cores
        task = asyncio.ensure_future(run_load(client, assocs=8, concurrency=8, budget=1,
                                              timeout=4 * opts.load_timeout))
        while not task.done():
            total, count = await asyncio.to_thread(server.pss_mb)
            if total > peak[0]:
                peak[:] = [total, count]
            await asyncio.sleep(0.25)
        return task.result()

    result = asyncio.run(sampled())
    total, count = server.pss_mb()
    if total > peak[0]:
        peak[:] = [total, count]
    print(f"    {server.label}: {result.summary()} peak PSS {peak[0]:.0f} MB over "
          f"{peak[1]} processes", file=sys.stderr)
    return Sample(peak[0], result.failures, f"{peak[1]} processes")


def startup(first: bool) -> Callable[[Server, Options], Sample]:
    """Restart the server (after deleting its index for a first start); time until serving."""
    def measure(server: Server, opts: Options) -> Sample:
        root = server.root
        server.stop()
        if first:
            server.forget_index()
        seconds = server.start(root, selective_query(), opts.start_timeout)
        loaded = seconds + server.settle(opts.start_timeout)
        print(f"    {server.label}: serving after {seconds:.2f}s, loaded after {loaded:.2f}s",
              file=sys.stderr)
        return Sample(seconds, note=f"loaded after {loaded:.1f} s" if loaded > seconds else "")
    return measure


def cold_query(key: str) -> Callable[[Server, Options], Sample]:
    """Restart the server (keeping its index), then time the first query of one key alone.

    wlmd answers it from a worker that has served nothing yet (every worker is new), the
    cold case that pool growth, ``--worker-max-uses`` and reloads create every day.
    """
    def measure(server: Server, opts: Options) -> Sample:
        root = server.root
        server.stop()
        server.start(root, selective_query(), opts.start_timeout)
        server.settle(opts.start_timeout)  # the fresh workers are those of the loaded worklist
        client = Client(HOST, server.port, build_db.CALLED_AE,
                        [encode_identifier(build_db.key_query(key))])
        result = LoadResult()
        found = asyncio.run(find_once(client, opts.load_timeout, result))
        answers = 0 if found is None else len(found.identifiers)
        print(f"    {server.label}: {result.summary()} answers={answers}", file=sys.stderr)
        sample = latency_ms(result)
        sample.note = f"{answers} answers"
        return sample
    return measure


def scenarios() -> list[Scenario]:
    """The rows of the target table, in running order: issue #5's targets, raised by issue #16
    (8 concurrent ≥ 2.5×, total PSS ≤ 200 MB, first start ≤ 8 s)."""
    return [
        Scenario("small-rate", "small", 10, "10 entries, 1 query/assoc, 8 concurrent", "assoc/s",
                 Target("ratio_min", 2.5, "≥ 2.5×"), small_rate),
        Scenario("small-latency", "small", 10, "10 entries, sequential associations: p50",
                 "ms", Target("ratio_max", 1.0, "≤ 1.0×"), small_latency),
        Scenario("small-queries", "small", 10, "10 entries, 20 queries/assoc", "queries/s",
                 Target("ratio_min", 1.0, "≥ 1.0×"), small_queries),
        Scenario("medium-selective", "medium", 10_000,
                 "10,000 entries, selective query (~1 %): p50", "ms",
                 Target("ratio_max", 1 / 20, "≤ 1/20"), selective),
        Scenario("large-selective", "large", 100_000, "100,000 entries, selective query: p50", "ms",
                 Target("max", 30, "≤ 30 ms"), selective),
        Scenario("large-change", "large", 100_000,
                 "100,000 entries, one file changed then a query (verified): p50", "ms",
                 Target("max", 50, "≤ 50 ms"), change_then_query),
        Scenario("large-pss", "large", 100_000, "100,000 entries, 8 busy workers: total PSS", "MB",
                 Target("max", 200, "≤ 200 MB"), pss, max_rounds=1),
        Scenario("large-start-first", "large", 100_000,
                 "100,000 entries: start to serving, first start", "s",
                 Target("max", 8, "≤ 8 s"), startup(first=True), max_rounds=2),
        Scenario("large-start-index", "large", 100_000,
                 "100,000 entries: start to serving, existing index", "s",
                 Target("max", 3, "≤ 3 s"), startup(first=False), max_rounds=2),
        # last: each restarts the server, so the rows above keep measuring a warm pool
        *(Scenario(f"large-cold-{key}", "large", 100_000,
                   f"100,000 entries, {keyword} alone ({value}), fresh worker: p50", "ms",
                   Target("ratio_max", 1 / 20, "≤ 1/20"), cold_query(key), max_rounds=2)
          for key, (keyword, value) in build_db.KEY_QUERIES.items()),
    ]


def reference_server() -> Server:
    """DCMTK's wlmscpfs in its best configuration: TCP_NODELAY=1 (it listens on every address)."""
    return Server("wlmscpfs", lambda root, port: ["wlmscpfs", "-dfp", str(root), str(port)],
                  dict(os.environ, TCP_NODELAY="1"))


def wlmd_server(extra: list[str], label: str = "wlmd") -> Server:
    """wlmd in its default (fork) mode, listening on loopback only, with an index file.

    The index file lies next to the database, as the packaged one lies outside
    ``/var/lib/wlmd/worklists``; one per label, as two wlmd may run on one database.
    """
    suffix = "" if label == "wlmd" else f"-{label.removeprefix('wlmd+')}"

    def index_of(root: Path) -> Path:
        return root.with_name(f"{root.name}.wlmd-index{suffix}")

    return Server(label, lambda root, port: [
        sys.executable, "-m", "wlmd", "--listen-address", HOST, "--index-file",
        str(index_of(root)), *extra, "-dfp", str(root), str(port)], dict(os.environ), index_of,
        loading_lines=WLMD_LOADING_LINES)


# What wlmd logs (at the default level) when it begins to load the worklist while serving, and
# when the loaded worklist is served (wlmd/daemon/supervisor.py): rows other than the start
# rows measure the loaded server.
WLMD_LOADING_LINES = ("loading the worklist", "worklist loaded")


# --policy (issue #17): wlmd with benchmarks/policy.toml against wlmd without it, on the
# C-FIND figures; the policy may cost at most 10 %.
POLICY_FILE = Path(__file__).with_name("policy.toml")
CFIND_SCENARIOS = ("small-rate", "small-latency", "small-queries", "medium-selective",
                   "large-selective")


# --mpps (issue #12): wlmd with the MPPS SCP on against wlmd without it: the C-FIND figures must
# stay unchanged (within the same 10 %). Its MPPS directory is made afresh next to the databases.
MPPS_DIRECTORY = build_db.CACHE / "mpps"


def cfind_rows(rows: list[Scenario]) -> list[Scenario]:
    """The C-FIND rows among ``rows``, each with the "within 10 %" target."""
    return [dataclasses.replace(row, target=(
        Target("ratio_max", 1.1, "≤ 1.1×") if row.unit == "ms"
        else Target("ratio_min", 0.9, "≥ 0.9×"))) for row in rows if row.name in CFIND_SCENARIOS]


def orthanc_server() -> Server:
    """Orthanc with its ModalityWorklists plugin serving the database's one flat folder of files.

    The runner writes its JSON configuration next to the logs. Orthanc 1.10 cannot bind to one
    address: its DICOM port listens on every address (as wlmscpfs's does) and is sent traffic on
    127.0.0.1 only; its HTTP server, which the benchmark does not use, is switched off. It is
    built on DCMTK's network layer, so ``TCP_NODELAY=1`` tunes it as it tunes wlmscpfs.
    """
    def argv(root: Path, port: int) -> list[str]:
        home = build_db.CACHE / "orthanc" / str(port)
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        config = {
            "Name": "wlmd-bench", "DicomAet": "ORTHANC", "DicomPort": port,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowFindWorklist": True,
            "HttpServerEnabled": False, "RemoteAccessAllowed": False,
            "StorageDirectory": str(home / "storage"), "IndexDirectory": str(home / "index"),
            "Plugins": [str(ORTHANC_PLUGIN)],
            "Worklists": {"Enable": True, "Database": str(root / build_db.CALLED_AE)},
        }
        (home / "orthanc.json").write_text(json.dumps(config, indent=1))
        return ["Orthanc", str(home / "orthanc.json")]

    return Server("Orthanc", argv, dict(os.environ, TCP_NODELAY="1"),
                  unavailable=orthanc_missing(),
                  cannot={"large-start-index": "keeps no index: reads every file on every query"})


def orthanc_missing() -> str:
    """Why Orthanc cannot be a column here ("" when it can)."""
    if shutil.which("Orthanc") is None or not ORTHANC_PLUGIN.exists():
        return "not installed (apt-get install orthanc)"
    return ""


def run_group(size: int, rows: list[Scenario], servers: list[Server], opts: Options) -> None:
    """Start the servers on one database, then run each scenario's rounds, alternating."""
    root = build_db.build(size)
    try:
        for server in servers:
            server.broken = server.unavailable
            if server.broken:
                continue
            try:
                seconds = server.start(root, selective_query(), opts.start_timeout)
                server.settle(opts.start_timeout)
            except (RuntimeError, TimeoutError) as exc:
                server.broken = "not serving"
                print(f"  {server.label}: {exc}", file=sys.stderr)
                continue
            print(f"  {server.label} serving {size} entries after {seconds:.2f}s", file=sys.stderr)
        for row in rows:
            for round_no in range(min(opts.rounds, row.max_rounds)):
                for server in servers:
                    print(f"[{row.name}] round {round_no + 1} {server.label}", file=sys.stderr)
                    sample = measure(row, server, opts)
                    row.samples.setdefault(server.label, []).append(sample)
    finally:
        for server in servers:
            server.stop()


def measure(row: Scenario, server: Server, opts: Options) -> Sample:
    """One sample; a server that cannot serve (or stops serving) gives no value and a note."""
    if server.broken:
        return Sample(float("nan"), 0, server.broken)
    if row.name in server.cannot:
        return Sample(float("nan"), 0, server.cannot[row.name])
    try:
        return row.measure(server, opts)
    except (RuntimeError, TimeoutError) as exc:
        print(f"    {server.label}: {exc}", file=sys.stderr)
        server.broken = "not serving"
        return Sample(float("nan"), 1, server.broken)


def median(samples: list[Sample]) -> float:
    """Median of the samples that produced a value."""
    values = [s.value for s in samples if not isnan(s.value)]
    return statistics.median(values) if values else float("nan")


def fmt(value: float) -> str:
    """A figure for the table."""
    if isnan(value):
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def cell(samples: list[Sample], unit: str) -> str:
    """Median with unit, plus failures and notes."""
    value = median(samples)
    text = "—" if isnan(value) else f"{fmt(value)} {unit}"
    if not samples:
        return text
    failures = sum(s.failures for s in samples)
    notes = sorted({s.note for s in samples if s.note})
    extra = ([f"{failures} failed"] if failures else []) + notes
    return text + (f" ({'; '.join(extra)})" if extra else "")


def machine() -> str:
    """CPU model, cores, kernel, Python and DCMTK versions."""
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    dcmtk = subprocess.run(["wlmscpfs", "--version"], capture_output=True, text=True,
                           check=False).stdout.split("$")[1].strip()
    return (f"{model}, {os.cpu_count()} logical CPUs ({psutil.cpu_count(logical=False)} cores), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; Linux {platform.release()}; "
            f"Python {platform.python_version()}; {dcmtk}")


def ratio(reference: float, candidate: float) -> str:
    """``candidate/reference`` for the table."""
    value = candidate / reference if reference else float("nan")
    return "—" if isnan(value) else f"{fmt(value)}×"


def table(rows: list[Scenario], reference: Server, candidate: Server, opts: Options,
          peer: Server | None = None) -> str:
    """The Markdown table for the README: the reference, the peer (if any), the candidate."""
    ref, cand = reference.label, candidate.label
    peers = [ref] + ([peer.label] if peer else [])
    order = " / ".join([*peers, cand])
    head = " | ".join([*peers, cand, *(f"{cand}/{p}" for p in peers)])
    lines = [f"Machine: {machine()}.",
             f"{time.strftime('%Y-%m-%d')}; loopback; {opts.rounds} round(s) alternating "
             f"{order}{' (quick mode)' if opts.quick else ''}; medians of the rounds.",
             "",
             f"| scenario | {head} | target | met |",
             "|---|" + "---|" * (2 * len(peers) + 3)]
    for row in rows:
        if ref not in row.samples:
            continue
        b = median(row.samples[cand])
        figures = [cell(row.samples.get(p, []), row.unit) for p in [*peers, cand]]
        ratios = [ratio(median(row.samples.get(p, [])), b) for p in peers]
        met = row.target.met(median(row.samples[ref]), b)
        verdict = "—" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {row.title} | {' | '.join(figures + ratios)} | "
                     f"{row.target.text} | {verdict} |")
    if peer and peer.unavailable:
        lines.append(f"\n{peer.label}: {peer.unavailable}.")
    return "\n".join(lines)


def select(rows: list[Scenario], names: list[str]) -> list[Scenario]:
    """The scenarios named, or of the groups named ("all" for every one)."""
    wanted = {n for name in names for n in name.replace(",", " ").split()}
    known = {r.name for r in rows} | {r.group for r in rows} | {"all"}
    if unknown := wanted - known:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    return [r for r in rows if "all" in wanted or r.name in wanted or r.group in wanted]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", nargs="+", default=["all"],
                        help="scenario names or groups: small, medium, large, all")
    parser.add_argument("--quick", action="store_true", help="1 round, fewer samples")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3, quick 1)")
    parser.add_argument("--candidate", choices=("wlmd", "wlmscpfs"), default="wlmd",
                        help="what the second column runs (wlmscpfs: test the runner itself)")
    parser.add_argument("--policy", action="store_true",
                        help="compare wlmd with benchmarks/policy.toml (every per-peer policy "
                             "feature on) against wlmd without it, C-FIND scenarios only")
    parser.add_argument("--mpps", action="store_true",
                        help="compare wlmd with --mpps (the MPPS SCP on the same port) against "
                             "wlmd without it, C-FIND scenarios only")
    parser.add_argument("--no-orthanc", action="store_true",
                        help="leave out the Orthanc column (it is skipped if not installed)")
    parser.add_argument("--wlmd-arg", action="append", default=[],
                        help="one more wlmd argument (repeatable, one word each): "
                             "--wlmd-arg=--max-spare-workers --wlmd-arg=8")
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--load-timeout", type=float, default=30.0,
                        help="abandon associations still running this long after a load's budget")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios and print the table."""
    args = parse_args(argv)
    if shutil.which("wlmscpfs") is None:
        raise SystemExit("wlmscpfs not found: the reference needs DCMTK (apt-get install dcmtk)")
    opts = Options(args.quick, args.rounds or (1 if args.quick else 3), args.start_timeout,
                   args.load_timeout)
    rows = select(scenarios(), args.scenario)
    reference = reference_server()
    if args.policy:
        rows = cfind_rows(rows)
        reference = wlmd_server(args.wlmd_arg)
        candidate = wlmd_server([*args.wlmd_arg, "--config", str(POLICY_FILE)], "wlmd+policy")
    elif args.mpps:
        rows = cfind_rows(rows)
        shutil.rmtree(MPPS_DIRECTORY, ignore_errors=True)
        reference = wlmd_server(args.wlmd_arg)
        candidate = wlmd_server(
            [*args.wlmd_arg, "--mpps", "--mpps-path", str(MPPS_DIRECTORY)], "wlmd+mpps")
    elif args.candidate == "wlmd":
        candidate = wlmd_server(args.wlmd_arg)
    else:
        candidate = reference_server()
        candidate.label = "wlmscpfs (B)"
    peer = None if args.no_orthanc or args.policy else orthanc_server()
    servers = [reference, candidate] if peer is None else [reference, peer, candidate]
    for size in sorted({r.size for r in rows}):
        run_group(size, [r for r in rows if r.size == size], servers, opts)
    report = table(rows, reference, candidate, opts, peer)
    print(report)
    build_db.CACHE.mkdir(exist_ok=True)
    (build_db.CACHE / "last-run.md").write_text(report + "\n")
    if args.json:
        args.json.write_text(json.dumps(
            {r.name: {label: [s.__dict__ for s in samples] for label, samples in r.samples.items()}
             for r in rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
