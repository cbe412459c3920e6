"""Over-limit refusals answered by the supervisor's selector (docs/compat.md §7.1 step 4, §12.6)."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.wire import associate_rq, rj_reason
from wlmd.config.settings import Settings
from wlmd.daemon.refusals import Refusals


@pytest.fixture
def loop() -> Iterator[Callable[..., tuple[Refusals, socket.socket]]]:
    """A listener whose accepted connections are all refused, served by a selector thread."""
    selector = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    made: list[Refusals] = []

    def start(**settings: object) -> tuple[Refusals, socket.socket]:
        refusals = Refusals(selector, Settings(port=0, **settings))  # type: ignore[arg-type]
        made.append(refusals)

        def accept(sock: socket.socket) -> None:
            conn, peer = sock.accept()
            refusals.refuse(conn, peer)

        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, accept)

        def run() -> None:
            while not stop.is_set():
                for key, _ in selector.select(0.05):
                    key.data(key.fileobj)
                refusals.expire(time.monotonic())

        threading.Thread(target=run, daemon=True).start()
        client = socket.create_connection(listener.getsockname(), timeout=5)
        return refusals, client

    yield start
    stop.set()
    time.sleep(0.1)
    listener.close()


def read_reply(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(4096):
        data += chunk
    return data


def test_request_sent_in_pieces_gets_rj_2_3_2(loop) -> None:
    _, client = loop()
    request = associate_rq("CT01")
    for start in range(0, len(request), 7):  # the supervisor must never wait for the rest
        client.sendall(request[start:start + 7])
        time.sleep(0.001)
    reply = read_reply(client)
    assert reply[0] == 0x03  # A-ASSOCIATE-RJ
    assert rj_reason(reply[6:]) == (2, 3, 2)


def test_refuse_option_comes_before_the_limit(loop) -> None:
    _, client = loop(refuse=True)
    client.sendall(associate_rq("CT01"))
    assert rj_reason(read_reply(client)[6:]) == (1, 1, 1)


def test_not_a_request_gets_an_abort(loop) -> None:
    _, client = loop()
    client.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-RELEASE-RQ first
    assert read_reply(client)[0] == 0x07


def test_silent_client_is_closed_after_the_acse_timeout(loop) -> None:
    refusals, client = loop(acse_timeout=0.3)
    started = time.monotonic()
    assert read_reply(client) == b""
    assert 0.25 <= time.monotonic() - started < 3
    assert len(refusals) == 0
