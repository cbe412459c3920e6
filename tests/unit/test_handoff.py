"""The supervisor ⇄ worker channel, within one process: real sockets, real fd passing."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from wlmd.daemon import handoff
from wlmd.dicom.types import AssociationReport, Outcome


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (client, server side as accept() returns it)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    parent, child = handoff.channel_pair()
    yield parent, child
    parent.close()
    child.close()


def test_connection_arrives_usable_blocking_and_not_inheritable(tcp_pair, channel):
    client, server = tcp_pair
    parent, child = channel
    server.setblocking(False)  # as the supervisor's listener hands it out
    handoff.send_connection(parent, server, ("127.0.0.1", 4242))
    server.close()  # the supervisor's copy: the connection must survive it

    message = handoff.receive(child)
    assert message.op == handoff.OP_SERVE
    assert message.data["peer"] == ["127.0.0.1", 4242]
    conn = message.conn
    assert conn is not None
    with conn:
        assert conn.getblocking()
        assert not conn.get_inheritable()
        client.sendall(b"A-ASSOCIATE-RQ")
        assert conn.recv(64) == b"A-ASSOCIATE-RQ"
        conn.sendall(b"A-ASSOCIATE-AC")
        assert client.recv(64) == b"A-ASSOCIATE-AC"


def test_messages_keep_their_boundaries_and_fields(channel):
    parent, child = channel
    handoff.send_message(child, handoff.OP_READY)
    handoff.send_message(child, handoff.OP_LOG, version="v1", message="bad file")
    first, second = handoff.receive(parent), handoff.receive(parent)
    assert (first.op, first.data, first.conn) == (handoff.OP_READY, {}, None)
    assert second.op == handoff.OP_LOG
    assert second.data == {"version": "v1", "message": "bad file"}


@pytest.mark.parametrize("report", [
    AssociationReport(Outcome.TLS_FAILED, calling_ae="MOD\1", called_ae="WL", queries=3,
                      matches=7, detail="certificate unknown"),
    AssociationReport(Outcome.RELEASED, queries=3, matches=7, match_counts=[3, 0, 4],
                      find_micros=[1200, 80, 95], n_set_statuses=[0, 0x0110], policy="ward"),
    AssociationReport(Outcome.CLOSED),  # every field at its default
])
def test_a_report_arrives_as_it_was_sent(channel, report):
    parent, child = channel
    handoff.send_report(child, report)
    message = handoff.receive(parent)
    assert message.op == handoff.OP_DONE
    assert message.report == report
    assert message.report.outcome is report.outcome


@pytest.mark.parametrize("fields", [
    {"queries": 1},  # no outcome
    {"outcome": "fine"},  # not an outcome
    {"outcome": "released", "queries": "3"},  # mistyped
    {"outcome": "released", "calling_ae": None},
    {"outcome": "released", "match_counts": [1, "2"]},
])
def test_a_malformed_report_is_refused(channel, fields):
    parent, child = channel
    handoff.send_message(child, handoff.OP_DONE, **fields)
    with pytest.raises(ValueError, match="done message"):
        handoff.receive(parent)


def test_eof_means_the_other_side_is_gone(channel):
    parent, child = channel
    parent.close()
    with pytest.raises(handoff.ChannelClosed):
        handoff.receive(child)


def test_a_serve_message_without_a_connection_is_refused(channel):
    parent, child = channel
    handoff.send_message(parent, handoff.OP_SERVE, peer=["127.0.0.1", 1])
    with pytest.raises(ValueError, match="without a connection"):
        handoff.receive(child)


def test_oversized_message_is_refused_before_sending(channel):
    parent, child = channel
    with pytest.raises(ValueError, match="too long"):
        handoff.send_message(child, handoff.OP_DONE, detail="x" * handoff.MAX_MESSAGE)
    child.setblocking(False)
    parent.setblocking(False)
    with pytest.raises(BlockingIOError):
        parent.recv(1)
