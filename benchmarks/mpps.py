"""The MPPS benchmark (issue #12): N-CREATE + N-SET COMPLETED pairs per second, 8 concurrent.

Each pair is one association (A-ASSOCIATE-RQ -> N-CREATE IN PROGRESS -> N-SET COMPLETED ->
A-RELEASE) linked to a worklist entry, so every pair also updates the entry (the default
``mark`` policy: STARTED, then COMPLETED) and fsyncs the instance twice. The PDUs are encoded
by this client ahead of time, so its CPU cost stays small next to the server's. wlmd runs a
warm pool that does not follow every swing of the load (``--min-spare-workers`` = concurrency,
``--max-spare-workers`` twice that): a pool that forks and retires workers all the time spends
the machine on forks instead of steps.

    python -m benchmarks.mpps                      # 1,000 entries, 8 concurrent, 20 s
    python -m benchmarks.mpps --pairs 4000 --conc 8 --budget 30

Bounded: no pair starts after ``--budget`` seconds and the run stops after ``--pairs`` pairs.

The rate is CPU-bound (two cores shared by wlmd, this load generator and whatever else runs;
concurrent fsyncs share the file system's journal commits), so it also prints the CPU per
pair of the server (supervisor and every worker, from psutil) and of this process, and the load
average: on a shared machine the rate follows the load, the CPU per pair much less so.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from tests.support.mpps import create_attributes, final_modifications, write_entry
from tests.support.processes import free_port, stop_process, wait_for_port

MPPS = b"1.2.840.10008.3.1.2.3.3"
EXPLICIT_LE = b"1.2.840.10008.1.2.1"
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"2.25.96027337581926415346917683931813573571"
HOST = "127.0.0.1"
AE_TITLE = "MPPSBENCH"
RELEASE_RQ = struct.pack(">BBI", 5, 0, 4) + bytes(4)


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(called: str) -> bytes:
    context = (struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, MPPS) + _item(0x40, EXPLICIT_LE))
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, IMPLEMENTATION_UID)
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + b"BENCHSCU".ljust(16)
            + bytes(32) + _item(0x10, APP_CONTEXT) + _item(0x20, context) + _item(0x50, user))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, elem, len(value)) + value


def _uid(value: bytes) -> bytes:
    return value + b"\0" * (len(value) % 2)


def command(field_: int, uid: bytes) -> bytes:
    class_elem, uid_elem = (0x0002, 0x1000) if field_ == 0x0140 else (0x0003, 0x1001)
    elements = sorted([(class_elem, _uid(MPPS)), (0x0100, struct.pack("<H", field_)),
                       (0x0110, struct.pack("<H", 1)), (0x0800, struct.pack("<H", 1)),
                       (uid_elem, _uid(uid))])
    body = b"".join(_element(e, v) for e, v in elements)
    return _element(0, struct.pack("<L", len(body))) + body


def p_data(is_command: bool, data: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(data) + 2, 1, 3 if is_command else 2) + data
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind, _, length = struct.unpack(">BBI", await reader.readexactly(6))
    return kind, await reader.readexactly(length)


async def response_status(reader: asyncio.StreamReader) -> int:
    """Read one N-*-RSP (command only) and return its status."""
    kind, body = await read_pdu(reader)
    if kind != 4:
        raise RuntimeError(f"PDU type {kind} instead of P-DATA")
    data, pos = body[6:], 0
    while pos + 8 <= len(data):
        _, elem, length = struct.unpack_from("<HHL", data, pos)
        if elem == 0x0900:
            return int(struct.unpack_from("<H", data, pos + 8)[0])
        pos += 8 + length
    raise RuntimeError("no status")


async def one_pair(port: int, called: str, create_data: bytes, set_data: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(associate_rq(called))
        if (await read_pdu(reader))[0] != 2:
            raise RuntimeError("association refused")
        uid = generate_uid().encode()
        writer.write(p_data(True, command(0x0140, uid)) + p_data(False, create_data))
        if (status := await response_status(reader)) != 0:
            raise RuntimeError(f"N-CREATE status 0x{status:04x}")
        writer.write(p_data(True, command(0x0120, uid)) + p_data(False, set_data))
        if (status := await response_status(reader)) != 0:
            raise RuntimeError(f"N-SET status 0x{status:04x}")
        writer.write(RELEASE_RQ)
        await read_pdu(reader)
    finally:
        writer.close()


async def run_pairs(port: int, creates: list[bytes], set_data: bytes, pairs: int, conc: int,
                    budget: float) -> tuple[int, int, float]:
    """(pairs done, failures, seconds)."""
    counter = itertools.count()
    done = failed = 0
    start = time.monotonic()

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() - start < budget:
            n = next(counter)
            if n >= pairs:
                return
            try:
                await asyncio.wait_for(
                    one_pair(port, AE_TITLE, creates[n % len(creates)], set_data), 30)
                done += 1
            except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    return done, failed, time.monotonic() - start


def server_cpu(server: psutil.Process) -> float:
    """CPU seconds of the server and its workers (those that exited are in ``children_*``)."""
    total = 0.0
    for process in (server, *server.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--conc", type=int, default=8)
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a 5 s budget")
    parser.add_argument("--wlmd-arg", action="append", default=[])
    parser.add_argument("--server-log", type=Path, help="wlmd's standard error (default: none)")
    args = parser.parse_args(argv)
    budget = 5.0 if args.quick else args.budget
    root = Path(tempfile.mkdtemp(prefix="wlmd-mpps-bench-"))
    data, mpps = root / "worklists", root / "mpps"
    (data / AE_TITLE).mkdir(parents=True)
    (data / AE_TITLE / "lockfile").touch()
    creates = []
    for n in range(args.entries):
        accession, study = f"B{n:07d}", f"1.2.826.0.1.3680043.10.1366.7.{n}"
        write_entry(data / AE_TITLE, accession, study)
        creates.append(encode(create_attributes(accession, study)))
    set_data = encode(final_modifications())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wlmd", "--listen-address", HOST, "--min-spare-workers",
         str(args.conc), "--max-spare-workers", str(2 * args.conc), "--mpps", "--mpps-path",
         str(mpps), *args.wlmd_arg, "-dfp", str(data), str(port)], stdout=subprocess.DEVNULL,
        stderr=args.server_log.open("w") if args.server_log else subprocess.DEVNULL)
    try:
        wait_for_port(port, HOST, proc=proc)
        asyncio.run(run_pairs(port, creates[:20], set_data, 40, args.conc, 10))  # warm-up
        server, load_before = psutil.Process(proc.pid), os.getloadavg()[0]
        server_before, client_before = server_cpu(server), time.process_time()
        done, failed, seconds = asyncio.run(
            run_pairs(port, creates, set_data, args.pairs, args.conc, budget))
        server_ms = (server_cpu(server) - server_before) * 1000 / max(done, 1)
        client_ms = (time.process_time() - client_before) * 1000 / max(done, 1)
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
    print(f"| mpps-pairs | {args.entries} entries | {args.conc} concurrent | "
          f"{done / seconds:.0f} pairs/s ({done} pairs, {failed} failures, {seconds:.1f} s, "
          f"{os.cpu_count()} CPUs) | target >= 200/s |\n"
          f"| CPU per pair: server / load generator | {server_ms:.1f} ms / {client_ms:.1f} ms | "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} |")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
