"""Fuzzing HL7 intake: the parser in-process (hypothesis), MLLP framing against a live child.

Whatever arrives, the intake answers with a well-formed ACK or closes, writes nothing for a
message it refuses, and the HL7 child keeps running (same PID) and keeps accepting orders.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hl7 import CALLED_AE, CR, FS, HOST, VT, Hl7Server, Order, ack_segments
from wlmd.hl7.ack import ENHANCED_CODES as ENHANCED
from wlmd.hl7.ack import Header
from wlmd.hl7.intake import Intake
from wlmd.hl7.mapping import Mapping

SEED = 20251203
FRAMING_CASES = 150
FRAMING_SECONDS = 40.0
SEPARATORS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", VT, FS, b"\x00", b"\xff", b"MSH|"]
VALID = [Order(), Order(kind="OMI^O23", version="2.5.1", charset="UNICODE UTF-8",
                        name="Łukasz^Ż"), Order(control="CA"), Order(control="SC", status="CM")]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid order with bytes flipped, cut, duplicated or separators thrown in."""
    data = bytearray(draw(st.sampled_from(VALID)).message())
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.sampled_from(SEPARATORS))
        elif position < len(data):
            del data[position:position + draw(st.integers(1, 20))]
    return bytes(data)


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Intake:
    root = tmp_path_factory.mktemp("hl7-fuzz")
    (root / CALLED_AE).mkdir()
    return Intake(root, dataclasses.replace(Mapping.default(), default_ae=CALLED_AE))


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(mutated_messages(), st.binary(max_size=600)))
def test_parser_answers_every_input_and_writes_nothing_it_refuses(intake: Intake,
                                                                  raw: bytes) -> None:
    before = {p: p.read_bytes() for p in intake.book.writer.root.glob("*/*.wl")}
    result = intake.handle(raw, "fuzz")
    assert result.ack_code in ("AA", "AE", "AR")
    if result.application_ack is not None:  # MSH-16 asked: the application's own code
        assert ack_segments(result.application_ack)["MSA"][1] == result.ack_code
    if result.reply is None:  # enhanced mode, and MSH-15 asked for no accept ACK here
        assert Header.of(raw).accept_ack_type() in ("NE", "ER", "SU")
        return
    segments = ack_segments(result.reply)
    assert segments["MSA"][1] in (result.ack_code, ENHANCED[result.ack_code])
    assert segments["MSH"][0] == "MSH"
    if result.ack_code != "AA":
        after = {p: p.read_bytes() for p in intake.book.writer.root.glob("*/*.wl")}
        assert after == before


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hl7Server]:
    running = Hl7Server(tmp_path_factory.mktemp("hl7-framing"), "--hl7-max-message-size",
                        "4096")
    yield running
    running.stop()


def framing_case(rng: random.Random) -> list[bytes]:
    """Chunks to send on one connection: junk, stray framing bytes, split or oversized blocks."""
    message = rng.choice(VALID).message()
    pieces = [
        lambda: VT + message + FS + CR,
        lambda: VT + message,  # never ends
        lambda: message + FS + CR,  # no start byte
        lambda: VT + VT + message + FS + FS + CR,
        lambda: FS + CR,
        lambda: VT + b"x" * rng.randint(4000, 9000) + FS + CR,  # over the size limit
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))),
        lambda: VT + FS + CR,
    ]
    data = b"".join(rng.choice(pieces)() for _ in range(rng.randint(1, 4)))
    cuts = sorted(rng.sample(range(len(data)), min(len(data) - 1, rng.randint(0, 5))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def send_chunks(port: int, chunks: list[bytes]) -> None:
    with socket.create_connection((HOST, port), timeout=2) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # closed by the server (size limit): allowed


def test_framing_never_takes_the_child_down(server: Hl7Server) -> None:
    child = server.hl7_child()
    rng = random.Random(SEED)
    deadline = time.monotonic() + FRAMING_SECONDS
    for number in range(FRAMING_CASES):
        if time.monotonic() > deadline:
            break
        send_chunks(server.hl7_port, framing_case(rng))
        if number % 25 == 0:
            assert child.is_running() and child.status() != "zombie"
    probe = Order(control_id="PROBE", placer="PROBE", filler="PROBE")
    with socket.create_connection((HOST, server.hl7_port), timeout=10) as sock:
        sock.sendall(VT + probe.message() + FS + CR)
        reply = b""
        while FS + CR not in reply:
            reply += sock.recv(4096)
    assert ack_segments(reply)["MSA"][1] == "AA"
    assert server.hl7_child().pid == child.pid
    assert "Traceback" not in server.log()
    assert (server.root / CALLED_AE / "hl7_PROBE_RP1001_SPS1001.wl").is_file()
    assert Path(server.journal / "journal.log").stat().st_mode & 0o077 == 0
