"""A lean Modality Worklist load generator: pre-encoded PDUs replayed over asyncio.

Every PDU the client sends is encoded once, so the client spends little CPU per association and
the figures measure the server. Each association: A-ASSOCIATE-RQ (MWL FIND, implicit VR little
endian) -> Q x (C-FIND-RQ, read responses until a final status) -> A-RELEASE-RQ/RP.

    python -m benchmarks.loadgen 127.0.0.1 11112 WORKLIST query.dcm --assocs 1000 --conc 8

Every run is bounded: no association starts after ``budget`` seconds, and whatever is still
running ``timeout`` seconds later is abandoned and counted as a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

MWL_FIND = b"1.2.840.10008.5.1.4.31"
IMPLICIT_LE = b"1.2.840.10008.1.2"
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"2.25.96027337581926415346917683931813573571"
MAX_PDU = 16384
PENDING = (0xFF00, 0xFF01)
RELEASE_RQ = struct.pack(">BBI", 5, 0, 4) + bytes(4)
ASSOCIATE_AC, P_DATA, RELEASE_RP = 2, 4, 6


class ProtocolFailure(Exception):
    """The server answered with something other than the expected PDU or status."""


def _item(item_type: int, body: bytes) -> bytes:
    """An A-ASSOCIATE sub-item."""
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _uid(value: bytes) -> bytes:
    """A UID value padded to even length."""
    return value + b"\0" * (len(value) % 2)


def associate_rq(called: str, calling: str = "WLMD_BENCH") -> bytes:
    """An A-ASSOCIATE-RQ proposing MWL FIND with implicit VR little endian (context 1)."""
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, MWL_FIND) + _item(0x40, IMPLICIT_LE))
    user = (_item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, IMPLEMENTATION_UID)
            + _item(0x55, b"WLMD_BENCH"))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
            + bytes(32) + _item(0x10, APP_CONTEXT) + context + _item(0x50, user))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _element(group: int, element: int, value: bytes) -> bytes:
    """An implicit VR little endian element."""
    return struct.pack("<HHI", group, element, len(value)) + value


def _pdata(value_type: int, payload: bytes) -> bytes:
    """One P-DATA-TF PDU with one PDV on context 1 (payloads here are far below MAX_PDU)."""
    pdv = struct.pack(">IBB", len(payload) + 2, 1, value_type) + payload
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def cfind_rq(message_id: int, identifier: bytes) -> bytes:
    """C-FIND-RQ command and identifier, each in its own P-DATA-TF, as one buffer."""
    fields = (_element(0, 0x0002, _uid(MWL_FIND)) + _element(0, 0x0100, struct.pack("<H", 0x20))
              + _element(0, 0x0110, struct.pack("<H", message_id))
              + _element(0, 0x0700, struct.pack("<H", 0))
              + _element(0, 0x0800, struct.pack("<H", 0x0102)))
    command = _element(0, 0x0000, struct.pack("<I", len(fields))) + fields
    return _pdata(0x03, command) + _pdata(0x02, identifier)


def encode_identifier(ds: Dataset) -> bytes:
    """A query dataset in implicit VR little endian."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def command_status(command: bytes) -> int | None:
    """Status (0000,0900) of an implicit VR little endian command set."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        if (group, element) == (0, 0x0900):
            return struct.unpack_from("<H", command, offset + 8)[0]
        offset += 8 + length
    return None


@dataclass
class FindResult:
    """What one C-FIND returned: final status and the identifiers of the pending responses."""

    status: int
    pending: int
    identifiers: list[bytes]


@dataclass
class LoadResult:
    """Counters and latencies of one load run."""

    assocs: int = 0
    queries: int = 0
    responses: int = 0
    failures: int = 0
    wall: float = 0.0
    assoc_latencies: list[float] = field(default_factory=list)
    query_latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        """Count one failed association and why."""
        self.failures += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @property
    def assoc_rate(self) -> float:
        """Completed associations per second."""
        return self.assocs / self.wall if self.wall else 0.0

    @property
    def query_rate(self) -> float:
        """Completed queries per second."""
        return self.queries / self.wall if self.wall else 0.0

    def summary(self) -> str:
        """One line in the format of mwl-loadgen (the yardstick), plus query figures."""
        return (f"assocs={self.assocs} queries={self.queries} responses={self.responses} "
                f"failures={self.failures} wall={self.wall:.3f}s rate={self.assoc_rate:.1f}/s "
                f"qrate={self.query_rate:.1f}/s p50={ms(percentile(self.assoc_latencies, 50))} "
                f"p99={ms(percentile(self.assoc_latencies, 99))} "
                f"query_p50={ms(percentile(self.query_latencies, 50))}"
                + (f" errors={self.errors}" if self.errors else ""))


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank); NaN when there are no values."""
    if not values:
        return float("nan")
    if pct == 50:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def ms(seconds: float) -> str:
    """Seconds as milliseconds for a report."""
    return f"{seconds * 1000:.1f}ms"


async def _read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One PDU: its type and body."""
    pdu_type, _, length = struct.unpack(">BBI", await reader.readexactly(6))
    return pdu_type, await reader.readexactly(length)


async def _read_find(reader: asyncio.StreamReader, keep: bool) -> FindResult:
    """Read C-FIND responses until a final status; keep identifiers only when asked."""
    command = b""
    dataset = b""
    result = FindResult(-1, 0, [])
    while True:
        pdu_type, body = await _read_pdu(reader)
        if pdu_type != P_DATA:
            raise ProtocolFailure(f"pdu-{pdu_type}")
        offset = 0
        while offset < len(body):
            length, _, header = struct.unpack_from(">IBB", body, offset)
            fragment = body[offset + 6:offset + 4 + length]
            offset += 4 + length
            if header & 1:
                command += fragment
                if header & 2:
                    status = command_status(command)
                    command = b""
                    if status not in PENDING:
                        result.status = -1 if status is None else status
                        return result
                    result.pending += 1
            elif keep:
                dataset += fragment
                if header & 2:
                    result.identifiers.append(dataset)
                    dataset = b""


class Client:
    """Pre-encoded PDUs for one server, called AE and set of queries."""

    def __init__(self, host: str, port: int, called: str, queries: Sequence[bytes],
                 queries_per_assoc: int = 1) -> None:
        self.host, self.port = host, port
        self.associate = associate_rq(called)
        rotation = itertools.cycle(queries)
        self.finds = [cfind_rq(i + 1, next(rotation)) for i in range(queries_per_assoc)]

    async def association(self, result: LoadResult, keep: bool = False) -> list[FindResult]:
        """Run one association; count it in ``result``; return what each query found."""
        started = time.perf_counter()
        found: list[FindResult] = []
        writer = None
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(self.associate)
            pdu_type, _ = await _read_pdu(reader)
            if pdu_type != ASSOCIATE_AC:
                raise ProtocolFailure(f"associate-pdu-{pdu_type}")
            for find in self.finds:
                sent = time.perf_counter()
                writer.write(find)
                answer = await _read_find(reader, keep)
                if answer.status != 0:
                    raise ProtocolFailure(f"status-{answer.status:04x}")
                result.query_latencies.append(time.perf_counter() - sent)
                result.queries += 1
                result.responses += answer.pending
                found.append(answer)
            writer.write(RELEASE_RQ)
            pdu_type, _ = await _read_pdu(reader)
            if pdu_type != RELEASE_RP:
                raise ProtocolFailure(f"release-pdu-{pdu_type}")
            result.assocs += 1
            result.assoc_latencies.append(time.perf_counter() - started)
        except ProtocolFailure as exc:
            result.fail(str(exc))
        except (OSError, asyncio.IncompleteReadError) as exc:
            result.fail(type(exc).__name__)
        finally:
            if writer is not None:
                writer.close()
        return found


async def run_load(client: Client, *, assocs: int, concurrency: int, budget: float,
                   timeout: float = 30.0, keep: bool = False) -> LoadResult:
    """Up to ``assocs`` associations, ``concurrency`` at a time, none started after ``budget`` s."""
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + budget
    launched = itertools.count()
    running = 0

    async def lane() -> None:
        nonlocal running
        while next(launched) < assocs and time.perf_counter() < deadline:
            running += 1
            await client.association(result, keep)
            running -= 1

    lanes = [asyncio.ensure_future(lane()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.wait_for(asyncio.gather(*lanes), budget + timeout)
    except TimeoutError:
        for _ in range(running):
            result.fail("timeout")
    result.wall = time.perf_counter() - started
    return result


async def find_once(client: Client, timeout: float,
                    result: LoadResult | None = None) -> FindResult | None:
    """One association with the client's first query, counted in ``result``: the answer
    (identifiers kept), or None if the association failed or timed out."""
    result = LoadResult() if result is None else result
    try:
        found = await asyncio.wait_for(client.association(result, keep=True), timeout)
    except TimeoutError:
        result.fail("timeout")
        return None
    return found[0] if found and len(found) == len(client.finds) else None


def main(argv: list[str] | None = None) -> int:
    """Command line: run one load and print one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("called", help="called AE title")
    parser.add_argument("queries", nargs="+", help="query datasets (DICOM files), used in turn")
    parser.add_argument("--assocs", type=int, default=100)
    parser.add_argument("--conc", type=int, default=8)
    parser.add_argument("--queries-per-assoc", type=int, default=1)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="start no association after this many seconds")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="abandon associations still running this long after the budget")
    args = parser.parse_args(argv)
    queries = [encode_identifier(dcmread(path, force=True)) for path in args.queries]
    client = Client(args.host, args.port, args.called, queries, args.queries_per_assoc)
    result = asyncio.run(run_load(client, assocs=args.assocs, concurrency=args.conc,
                                  budget=args.budget, timeout=args.timeout))
    print(result.summary())
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
