"""Hostile N-CREATE/N-SET data sets and instance UIDs against a real wlmd with --mpps.

A seeded run of mutated requests over raw sockets: every request must get an N-CREATE-RSP or
N-SET-RSP (or an A-ABORT for undecodable data), the same server must keep answering, no
traceback may reach the log, and nothing may be written outside ``mpps_path`` or under a name
that is not ``<valid UID>.dcm``.
"""

from __future__ import annotations

import random
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.fuzz.generators import havoc
from tests.support import wire
from tests.support.mpps import create_attributes, final_modifications, n_create, write_entry
from tests.support.processes import free_port, start_wlmd, stop_process

MPPS = "1.2.840.10008.3.1.2.3.3"
N_SET_RQ, N_CREATE_RQ = 0x0120, 0x0140
SEED = 20261203
CASES = 300
SECONDS = 30.0
HOSTILE_UIDS = (b"../../../etc/passwd", b"1.2.3/../../x", b"", b"1.2." + b"9" * 80, b".",
                b"1.2.3\0evil", b"1..2", b"01.2", b"1.2.3 ", b"\xff\xfe", b"lockfile")
UID_NAME = re.compile(r"^([0-9.]{1,64}\.dcm|lockfile(\.[0-9]+)?)$")


class MppsServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "worklists"
        self.mpps = root / "mpps"
        (self.data / "CT01").mkdir(parents=True)
        (self.data / "CT01" / "lockfile").touch()
        write_entry(self.data / "CT01", "ACC1", "1.2.826.0.1.3680043.10.1366.1")
        self.log = root / "wlmd.log"
        self.port = free_port()
        self.proc = start_wlmd(["-dfp", str(self.data), "--mpps", "--mpps-path",
                                str(self.mpps)], self.port, stderr=self.log.open("w"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MppsServer]:
    srv = MppsServer(tmp_path_factory.mktemp("mpps-fuzz"))
    yield srv
    stop_process(srv.proc)


def _command(field_: int, uid: bytes, message_id: int) -> bytes:
    sop = MPPS.encode()
    class_elem = 0x0002 if field_ == N_CREATE_RQ else 0x0003
    uid_elem = 0x1000 if field_ == N_CREATE_RQ else 0x1001
    elements = [wire.element(class_elem, sop + b"\0" * (len(sop) % 2)),
                wire.element(0x0100, struct.pack("<H", field_)),
                wire.element(0x0110, struct.pack("<H", message_id)),
                wire.element(0x0800, struct.pack("<H", wire.HAS_DATASET))]
    if uid:
        elements.append(wire.element(uid_elem, uid + b"\0" * (len(uid) % 2)))
    return wire.command_set(sorted(elements, key=lambda e: struct.unpack_from("<HH", e)[::-1]))


def _case(rng: random.Random, existing: bytes) -> tuple[int, bytes, bytes]:
    """(command field, SOP Instance UID, data set bytes) of one hostile request."""
    field_ = rng.choice((N_CREATE_RQ, N_SET_RQ))
    if rng.random() < 0.25:
        uid = rng.choice(HOSTILE_UIDS)
    elif field_ == N_SET_RQ and rng.random() < 0.6:
        uid = existing
    else:
        uid = generate_uid().encode()
    ds = (create_attributes("ACC1", "1.2.826.0.1.3680043.10.1366.1") if field_ == N_CREATE_RQ
          else final_modifications(rng.choice(("COMPLETED", "DISCONTINUED", "IN PROGRESS",
                                                "BOGUS"))))
    for element in list(ds):
        if rng.random() < 0.08:
            del ds[element.tag]
    data = wire.encode_identifier(ds)  # explicit VR little endian, the accepted syntax
    if rng.random() < 0.6:
        data = havoc(rng, data, rng.randint(1, 6))
    return field_, uid, data


def _exchange(port: int, field_: int, uid: bytes, data: bytes) -> str:
    """Send one request on a new association; how the server answered."""
    conn = wire.Connection(port, timeout=5)
    try:
        contexts = ((1, MPPS, (wire.ELE,)),)
        conn.send(wire.pdu(wire.ASSOCIATE_RQ, wire.rq_fixed(b"CT01")
                           + b"".join(wire.rq_items(contexts))))
        kind, body = conn.read_pdu(10)
        assert kind == wire.ASSOCIATE_AC
        assert wire.accepted_syntax(body, 1) is not None, "MPPS context not accepted"
        conn.send(wire.p_data(wire.pdv(1, True, True, _command(field_, uid, 3))))
        conn.send(wire.p_data(wire.pdv(1, False, True, data or b"\0\0")))
        pdus: list[tuple[int, bytes]] = []
        while not wire.messages(pdus):
            kind, body = conn.read_pdu(10)  # TimeoutError or Closed fail the test
            if kind == wire.ABORT:
                return "abort"
            pdus.append((kind, body))
        replies = wire.messages(pdus)
        field_raw = replies[0].command.get(0x0100)
        assert field_raw == struct.pack("<H", field_ | 0x8000)
        return f"0x{replies[0].status:04x}"
    finally:
        conn.close()


def test_hostile_requests_never_crash_or_escape(server: MppsServer) -> None:
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + SECONDS
    for number in range(CASES):
        if time.monotonic() > deadline:
            break
        if number % 10 == 0:  # a fresh IN PROGRESS instance for the N-SETs to work on
            existing = generate_uid()
            assert n_create(server.port, "CT01", existing, create_attributes(
                "ACC1", "1.2.826.0.1.3680043.10.1366.1")).Status == 0
        outcome = _exchange(server.port, *_case(rng, existing.encode()))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert server.proc.poll() is None
    assert len(outcomes) > 3, outcomes  # the run reached several different refusals
    # the same server still serves a valid N-CREATE
    uid = generate_uid()
    assert n_create(server.port, "CT01", uid,
                    create_attributes("ACC1", "1.2.826.0.1.3680043.10.1366.1")).Status == 0
    written = [p for p in server.root.rglob("*") if p.is_file()]
    outside = [p for p in written if not p.is_relative_to(server.mpps)
               and not p.is_relative_to(server.data) and p != server.log]
    assert outside == []
    for path in (server.mpps / "CT01").iterdir():
        assert UID_NAME.match(path.name), path.name
    assert "Traceback" not in server.log.read_text()
