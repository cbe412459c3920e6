"""HTTP benchmark (issue #13): DICOMweb search against C-FIND, measured in the same run.

    python -m benchmarks.http            # 10 and 100,000 entries
    python -m benchmarks.http --quick    # 10 and 10,000 entries, shorter runs

One wlmd (fork mode, 8 spare workers, --http-listen, the default HTTP processes: one per CPU)
per database, with its index file next to the database (as ``benchmarks.run`` keeps one), so
that only the first run parses the 100,000 entries. Rows:
- 10 entries: HTTP searches/s at 8 concurrent (aiohttp, keep-alive, as a DICOMweb client works)
  against C-FIND associations/s at 8 concurrent (one query each), target ratio >= 1.0;
- the large database, the selective query (one station, one day): median latency of
  sequential HTTP searches against sequential C-FIND associations, target <= 1.5x;
- C-FIND associations/s at 8 concurrent while 4 HTTP clients search at full speed, against
  C-FIND alone: the C-FIND figure should stay where it is.
The HTTP client is aiohttp: client and server share the machine's cores, and httpx's client
costs about 3.5 ms of CPU per search here against aiohttp's 0.6 ms (the C-FIND load generator
is as lean), so with httpx the row measured the client. Every load is bounded in count and
time. Prints a Markdown table, with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import aiohttp

from benchmarks.build_db import (
    CALLED_AE,
    SELECTIVE_DATE,
    SELECTIVE_STATION,
    all_entries_query,
    build,
    selective_query,
)
from benchmarks.loadgen import Client, LoadResult, encode_identifier, find_once, run_load
from benchmarks.run import free_port

HOST = "127.0.0.1"
TOKEN = "benchmark-reader"
SEARCH = f"/aets/{CALLED_AE}/rs/modality-scheduled-procedure-steps"
SELECTIVE_PARAMS = {"00400100.00400001": SELECTIVE_STATION,
                    "00400100.00400002": SELECTIVE_DATE.strftime("%Y%m%d")}
MAX_SECONDS = 60.0
# A first start parses every entry into the index file (a minute for 100,000 on an idle
# two-core machine, several on a busy one); later starts read the index.
START_SECONDS = 900.0


@contextmanager
def wlmd(root: Path, workdir: Path) -> Iterator[tuple[int, str]]:
    """A wlmd serving ``root`` with HTTP on; yields (DICOM port, HTTP base URL)."""
    tokens = workdir / "tokens"
    index = root.with_name(f"{root.name}.wlmd-index-http")
    tokens.write_text(f"bench read sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wlmd", "--listen-address", HOST, "-dfp", str(root),
         "--min-spare-workers", "8", "--index-file", str(index),
         "--http-listen", f"{HOST}:{http_port}", "--http-tokens", str(tokens),
         "--http-rate", "1000000", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://{HOST}:{http_port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not asyncio.run(_ready(base)):
            if proc.poll() is not None:
                raise RuntimeError(f"wlmd exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"wlmd was not ready within {START_SECONDS:g} s")
            time.sleep(0.2)
        yield port, base
    finally:
        proc.terminate()
        proc.wait(30)


async def _ready(base: str) -> bool:
    try:
        async with (aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(2)) as session,
                    session.get("/readyz") as response):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _session(base: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=aiohttp.ClientTimeout(30))


async def _search(session: aiohttp.ClientSession, params: dict[str, str]) -> int:
    async with session.get(SEARCH, params=params) as response:
        await response.read()
        return response.status


def cfind_rate(port: int, query: bytes, count: int) -> float:
    client = Client(HOST, port, CALLED_AE, [query], 1)
    result: LoadResult = asyncio.run(run_load(client, assocs=count, concurrency=8,
                                              budget=MAX_SECONDS))
    return result.assoc_rate


async def _http_lanes(base: str, params: dict[str, str], count: int, lanes: int,
                      stop: Callable[[], bool] = lambda: False) -> float:
    """Searches per second over ``lanes`` keep-alive connections, ``count`` in all."""
    done = 0
    started = time.perf_counter()

    async def lane() -> None:
        nonlocal done
        async with _session(base) as session:  # one keep-alive connection per lane
            while done < count and time.perf_counter() - started < MAX_SECONDS:
                if stop():
                    return
                status = await _search(session, params)
                assert status in (200, 204), status
                done += 1

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return done / (time.perf_counter() - started)


def http_rate(base: str, params: dict[str, str], count: int) -> float:
    return asyncio.run(_http_lanes(base, params, count, 8))


def cfind_p50(port: int, query: bytes, count: int) -> float:
    client = Client(HOST, port, CALLED_AE, [query], 1)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        asyncio.run(find_once(client, 30))
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def http_p50(base: str, params: dict[str, str], count: int) -> float:
    async def sequential() -> list[float]:
        samples = []
        async with _session(base) as session:
            await _search(session, params)  # the connection, as a DICOMweb client keeps it
            for _ in range(count):
                started = time.perf_counter()
                status = await _search(session, params)
                samples.append(time.perf_counter() - started)
                assert status == 200, status
        return samples

    return statistics.median(asyncio.run(sequential()))


def _keep_busy(base: str, stop: EventType) -> None:
    """4 HTTP clients searching at full speed until ``stop`` (or MAX_SECONDS)."""
    asyncio.run(_http_lanes(base, {}, 10**9, 4, stop.is_set))


def cfind_rate_with_http_busy(port: int, base: str, query: bytes, count: int) -> float:
    """C-FIND associations/s while another process (as a RIS or a second modality would be)
    keeps the HTTP service busy; in this process its clients would slow the C-FIND client."""
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    busy = context.Process(target=_keep_busy, args=(base, stop))
    busy.start()
    try:
        time.sleep(1)  # its connections open and searching
        return cfind_rate(port, query, count)
    finally:
        stop.set()
        busy.join(MAX_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    large = 10_000 if args.quick else 100_000
    n = 300 if args.quick else 2000
    small_query = encode_identifier(all_entries_query())
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        with wlmd(build(10), workdir) as (port, base):
            cfind_rate(port, small_query, n // 4)  # warm every worker
            cfind = cfind_rate(port, small_query, n)
            http = http_rate(base, {}, n)
            rows.append(("10 entries, 8 concurrent: searches/s vs C-FIND assoc/s",
                         f"{cfind:.0f}/s", f"{http:.0f}/s", http / cfind, ">= 1.0"))
            busy = cfind_rate_with_http_busy(port, base, small_query, n)
            alone = cfind_rate(port, small_query, n)
            rows.append(("10 entries: C-FIND assoc/s with HTTP busy vs alone",
                         f"{alone:.0f}/s", f"{busy:.0f}/s", busy / alone, "~ 1.0"))
        with wlmd(build(large), workdir) as (port, base):
            query = encode_identifier(selective_query())
            samples = 20 if args.quick else 50
            cfind_p50(port, query, 5)
            http_p50(base, SELECTIVE_PARAMS, 5)
            c50 = cfind_p50(port, query, samples)
            h50 = http_p50(base, SELECTIVE_PARAMS, samples)
            rows.append((f"{large:,} entries, selective: p50 HTTP vs C-FIND",
                         f"{c50 * 1000:.1f} ms", f"{h50 * 1000:.1f} ms", h50 / c50, "<= 1.5"))
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}; after: {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}; {len(os.sched_getaffinity(0))} CPUs\n")
    print("| scenario | C-FIND | HTTP | ratio | target |")
    print("|---|---|---|---|---|")
    for name, cfind_text, http_text, ratio, target in rows:
        print(f"| {name} | {cfind_text} | {http_text} | {ratio:.2f} | {target} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
