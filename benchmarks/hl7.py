"""HL7 intake benchmark (issue #14): orders per second over one MLLP connection, each ACK sent
only after the entry is fsync-ed, and the time until a new order is visible to C-FIND.

It also prints the CPU time per order of the HL7 child and of this sender: on a shared machine
the rate follows the load average (each order waits for three ``fsync``s and for its turn on a
CPU), the CPU per order does not.

    python -m benchmarks.hl7            # 1000 orders, 50 visibility samples
    python -m benchmarks.hl7 --quick    # 200 orders, 20 samples

Sender: python-hl7's ``MLLPClient`` (send, wait for the ACK, send the next). C-FIND: the
benchmarks' load generator, polled until the entry answers. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from hl7.client import MLLPClient  # type: ignore[import-untyped]
from pydicom import Dataset

from benchmarks.loadgen import Client, encode_identifier, find_once
from tests.support.hl7 import CALLED_AE, HOST, Hl7Server, Order, ack_segments

ORDERS_TARGET = 200.0  # orders/s
VISIBLE_TARGET = 0.050  # seconds
MAX_SECONDS = 120.0  # bound on each phase
POLL = 0.002


def order(number: int, prefix: str) -> Order:
    tag = f"{prefix}{number:06d}"
    return Order(control_id=tag, placer=f"P{tag}", filler=f"F{tag}", accession=f"A{tag}",
                 procedure=f"R{tag}", step=f"S{tag}", patient_id=f"I{tag}")


@dataclass
class Throughput:
    """One throughput run: the rate and the CPU seconds per order on each side."""

    rate: float
    sent: int
    child_cpu: float  # the HL7 child (parse, map, journal, write, ACK)
    sender_cpu: float  # this process (python-hl7's client, the ACK check)


def throughput(server: Hl7Server, count: int) -> Throughput:
    """``count`` orders, one at a time on one connection, each sent when the last is ACKed."""
    messages = [order(n, "T").message() for n in range(count)]
    child = server.hl7_child()
    child_before, sender_before = _cpu(child), time.process_time()
    started = time.perf_counter()
    sent = 0
    with MLLPClient(HOST, server.hl7_port) as client:
        for message in messages:
            reply = client.send_message(message)
            assert ack_segments(reply.encode() if isinstance(reply, str) else reply
                                )["MSA"][1] == "AA"
            sent += 1
            if time.perf_counter() - started > MAX_SECONDS:
                break
    rate = sent / (time.perf_counter() - started)
    return Throughput(rate, sent, (_cpu(child) - child_before) / sent,
                      (time.process_time() - sender_before) / sent)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def visibility(server: Hl7Server, samples: int) -> tuple[list[float], list[float]]:
    """Seconds from sending an order to the first C-FIND that returns it, and from its ACK.

    C-FIND by the benchmark's own load generator (one short association per look): pynetdicom
    adds tens of milliseconds of its own to every query.
    """
    delays, after_ack = [], []
    deadline = time.monotonic() + MAX_SECONDS
    with MLLPClient(HOST, server.hl7_port) as sender:
        for number in range(samples):
            item = order(number, "V")
            query = Dataset()  # by patient ID, a key the store indexes, as a modality may ask
            query.PatientID = item.patient_id
            query.PatientName = ""
            client = Client(HOST, server.port, CALLED_AE, [encode_identifier(query)])
            started = time.perf_counter()
            sender.send_message(item.message())
            acknowledged = time.perf_counter()
            while not found(client):
                if time.monotonic() > deadline:
                    raise TimeoutError("order never became visible")
                time.sleep(POLL)
            delays.append(time.perf_counter() - started)
            after_ack.append(time.perf_counter() - acknowledged)
    return delays, after_ack


def found(client: Client) -> bool:
    answer = asyncio.run(find_once(client, timeout=10.0))
    assert answer is not None, "C-FIND failed"
    return answer.pending > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    count, samples = (200, 20) if args.quick else (1000, 50)
    with tempfile.TemporaryDirectory(prefix="wlmd-hl7-bench-") as work:
        server = Hl7Server(Path(work), verbose=False)  # -v explains every file of every query
        try:
            run = throughput(server, count)
            delays, after_ack = visibility(server, samples)
        finally:
            server.stop()
    median = statistics.median(delays)
    p95 = sorted(delays)[max(0, int(len(delays) * 0.95) - 1)]
    print("| HL7 intake | measured | target | met |")
    print("|---|---|---|---|")
    print(f"| orders/s, one MLLP connection, ACK after fsync ({run.sent} orders) | "
          f"{run.rate:.0f} | >= {ORDERS_TARGET:.0f} | "
          f"{'yes' if run.rate >= ORDERS_TARGET else 'no'} |")
    print(f"| CPU per order: HL7 child / sender | {run.child_cpu * 1000:.2f} ms / "
          f"{run.sender_cpu * 1000:.2f} ms | | |")
    print(f"| send to visible in C-FIND, median ({len(delays)} orders) | {median * 1000:.1f} ms "
          f"| <= {VISIBLE_TARGET * 1000:.0f} ms | {'yes' if median <= VISIBLE_TARGET else 'no'} |")
    print(f"| send to visible in C-FIND, p95 | {p95 * 1000:.1f} ms | | |")
    print(f"| ACK to visible in C-FIND, median | {statistics.median(after_ack) * 1000:.1f} ms "
          "| | |")
    print(f"| load average during the run | {os.getloadavg()[0]:.1f} | | |")
    return 0 if run.rate >= ORDERS_TARGET and median <= VISIBLE_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
