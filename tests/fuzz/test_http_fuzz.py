"""Hostile HTTP input never takes the HTTP child down and never gets a 500.

A real ``python -m wlmd --http-listen`` on loopback gets generated searches, entries and MPPS
bodies (hypothesis, derandomized so a run is repeatable), path tricks, malformed request lines
and slow clients over raw sockets. After each case the server must answer with a client error
or success, keep its PID, and log no traceback; nothing may appear outside the data
directories.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import free_port, wait_until
from tests.support.server import Wlmd

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"
TOKEN = "fuzz-writer-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Target:
    def __init__(self, server: Wlmd, http_port: int, root: Path) -> None:
        self.server = server
        self.port = http_port
        self.base = f"http://127.0.0.1:{http_port}"
        self.root = root
        self.child = self._child()

    def _child(self) -> int:
        for child in self.server.children():
            if any(c.laddr.port == self.port and c.status == "LISTEN"
                   for c in child.net_connections(kind="tcp")):
                return child.pid
        raise AssertionError("no HTTP child")

    def check_alive(self) -> None:
        assert httpx.get(self.base + "/healthz", timeout=10).status_code == 200
        assert self._child() == self.child, "the HTTP child was replaced"
        assert "Traceback" not in self.server.log()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    work = tmp_path_factory.mktemp("httpfuzz")
    root = work / "worklists"
    shutil.copytree(EXAMPLES, root)
    tokens = work / "tokens"
    tokens.write_text(f"fuzz write sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    http_port = free_port()
    server = Wlmd(work, ["-dfp", str(root), "--mpps", "--mpps-path", str(work / "mpps"),
                         "--http-listen", f"127.0.0.1:{http_port}", "--http-tokens",
                         str(tokens), "--http-rate", "100000", "--http-max-body", "65536"])
    wait_until(lambda: _answers(f"http://127.0.0.1:{http_port}/healthz"), what="HTTP child")
    yield Target(server, http_port, root)
    server.stop()
    outside = [p for p in work.rglob("*") if p.is_file() and not p.is_relative_to(root)
               and not p.is_relative_to(work / "mpps") and p.suffix in (".wl", ".dcm")]
    assert outside == []


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
keys = st.sampled_from(["PatientName", "00100020", "ScheduledProcedureStepSequence.Modality",
                        "00400100.00400002", "includefield", "limit", "offset",
                        "fuzzymatching", "PixelData", "Foo", "00400100.00400100.00080060",
                        "ffffffff", "0040010", ""]) | text


@FUZZ
@given(params=st.lists(st.tuples(keys, text), max_size=6))
def test_searches(target: Target, params: list[tuple[str, str]]) -> None:
    response = httpx.get(target.base + "/aets/CT01/rs/modality-scheduled-procedure-steps",
                         params=params, headers=AUTH, timeout=30)
    assert response.status_code in (200, 204, 400, 413), response.text
    target.check_alive()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20)
elements = st.dictionaries(
    st.sampled_from(["00100010", "00100020", "00080050", "00400100", "0020000D", "7FE00010",
                     "00400270", "00400252", "ZZZZZZZZ"]),
    st.fixed_dictionaries({"vr": st.sampled_from(["PN", "LO", "SQ", "UI", "CS", "OB", "XX",
                                                   ""])},
                          optional={"Value": st.lists(json_values, max_size=3),
                                    "InlineBinary": text}),
    max_size=6)


@FUZZ
@given(body=elements | json_values)
def test_entry_and_step_bodies(target: Target, body: object) -> None:
    data = json.dumps(body).encode()
    entry = httpx.post(target.base + "/aets/CT01/entries", content=data, headers=AUTH,
                       timeout=30)
    assert entry.status_code in (201, 400, 409, 422), entry.text
    step = httpx.post(target.base + "/aets/CT01/rs/modality-performed-procedure-steps/"
                      "1.2.826.0.1.3680043.2.1143.777", content=data, headers=AUTH, timeout=30)
    assert step.status_code in (200, 201, 400, 409), step.text
    target.check_alive()


@pytest.mark.parametrize("path", [
    "/aets/../CT01/entries", "/aets/CT01/entries/..%2F..%2Fetc%2Fpasswd.wl",
    "/aets/CT01/entries/%00.wl", "/aets/%2e%2e/entries", "/aets/CT01/entries/.lockfile.wl",
    "/aets/CT01/rs/modality-performed-procedure-steps/..%2F..%2Fx",
    "/aets/" + "A" * 5000 + "/entries", "/%ff%fe", "//etc/passwd",
])
def test_path_tricks(target: Target, path: str) -> None:
    for method in ("GET", "PUT", "DELETE", "POST"):
        response = httpx.request(method, target.base + path, content=b"{}", headers=AUTH,
                                 timeout=30)
        assert response.status_code in (400, 404, 405, 422), (method, path, response.text)
    target.check_alive()


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01" + b"\0" * 200,
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /aets/CT01/entries HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffff\r\n" + b"x" * 1000,
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n",
])
def test_malformed_requests(target: Target, raw: bytes) -> None:
    reply = b""
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:  # the server may answer and close before all of it was sent
            pass
    assert reply == b"" or reply.split(b" ", 2)[1][:1] in (b"2", b"4"), reply[:100]
    target.check_alive()


def test_slow_clients_do_not_block_others(target: Target) -> None:
    """Ten clients trickle their headers; everyone else is still served meanwhile."""
    slow = [socket.create_connection(("127.0.0.1", target.port), timeout=10) for _ in range(10)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):
            assert httpx.get(target.base + "/healthz", timeout=10).status_code == 200
        for sock in slow:
            sock.sendall(b"X-Slow: 1\r\n")
    finally:
        for sock in slow:
            sock.close()
    target.check_alive()
