"""The supervisor ⇄ worker channel: one SOCK_SEQPACKET socketpair per worker.

Each message is one JSON object (SEQPACKET keeps message boundaries, so no framing is needed);
a connection travels as an SCM_RIGHTS file descriptor attached to its header message.

supervisor → worker: ``{"op": "serve", "peer": [host, port]}`` + fd, ``{"op": "stop"}``.
worker → supervisor: ``{"op": "ready"}``, ``{"op": "done", ...report fields}`` (encoded by
``send_report``, decoded by ``receive``: the report's fields are named here and nowhere else),
``{"op": "log", ...}``.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from wlmd.dicom.types import AssociationReport, Outcome

MAX_MESSAGE = 65536
OP_SERVE = "serve"
OP_STOP = "stop"
OP_READY = "ready"
OP_DONE = "done"
OP_LOG = "log"  # worker → supervisor: a log record to write once for all workers


class ChannelClosed(Exception):
    """The other end of the channel is gone (EOF): for a worker, the supervisor has died."""


@dataclass
class Message:
    """One decoded channel message, with the connection it carried (``serve`` only) or the
    association report it carried (``done`` only)."""

    op: str
    data: dict[str, Any] = field(default_factory=dict)
    conn: socket.socket | None = None
    report: AssociationReport | None = None


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A (supervisor end, worker end) pair; neither end leaks into exec'd programs."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return parent, child


# One encoder and decoder for all messages: ``json.dumps`` with options makes one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()


def _encode(op: str, data: dict[str, Any]) -> bytes:
    payload = _ENCODER.encode({"op": op, **data}).encode()
    if len(payload) > MAX_MESSAGE:
        raise ValueError(f"channel message too long ({len(payload)} bytes)")
    return payload


def _decode(payload: bytes) -> Message:
    if not payload:
        raise ChannelClosed("channel closed by peer")
    obj = _DECODER.decode(payload.decode())  # UnicodeDecodeError is a ValueError too
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise ValueError(f"malformed channel message {payload[:80]!r}")
    op = obj.pop("op")
    return Message(op=op, data=obj)


def send_connection(chan: socket.socket, conn: socket.socket, peer: tuple[str, int]) -> None:
    """Pass ``conn`` to the worker at the other end; the caller must then close its own copy."""
    socket.send_fds(chan, [_encode(OP_SERVE, {"peer": [peer[0], peer[1]]})], [conn.fileno()])


def send_message(chan: socket.socket, op: str, **data: Any) -> None:
    """Send a message without a file descriptor."""
    chan.send(_encode(op, data))


# Every field of a report but the outcome, with its default. A ``done`` message carries only
# the fields that differ from their default (most stay empty): less to encode and decode.
_REPORT_DEFAULTS: dict[str, Any] = {
    f.name: getattr(AssociationReport(Outcome.ERROR), f.name)
    for f in dataclasses.fields(AssociationReport) if f.name != "outcome"}


def send_report(chan: socket.socket, report: AssociationReport) -> None:
    """Tell the supervisor the association is over (``done``), with what happened on it."""
    send_message(chan, OP_DONE, outcome=report.outcome,
                 **{name: value for name, default in _REPORT_DEFAULTS.items()
                    if (value := getattr(report, name)) != default})


def _report_of(data: dict[str, Any]) -> AssociationReport:
    """The report a ``done`` message carries; ValueError if a field is missing or mistyped."""
    try:
        outcome = Outcome(data["outcome"])
    except (KeyError, ValueError):
        raise ValueError(f"done message with outcome {data.get('outcome')!r}") from None
    report = AssociationReport(outcome)
    for name, value in data.items():
        default = _REPORT_DEFAULTS.get(name)
        if default is None:  # the outcome, or a field this version does not know
            continue
        if not isinstance(value, type(default)) or (
                isinstance(value, list) and not all(type(v) is int for v in value)):
            raise ValueError(f"done message with {name} {value!r}")
        setattr(report, name, value)
    return report


def receive(chan: socket.socket) -> Message:
    """Read one message; a received connection is made blocking and non-inheritable.

    ``recv_fds`` ignores MSG_CMSG_CLOEXEC (gh-107898), so the fd arrives inheritable and its
    O_NONBLOCK state is whatever the sender's socket had: both are fixed here, once.
    """
    payload, fds, _flags, _addr = socket.recv_fds(chan, MAX_MESSAGE, 1)
    conns = [_adopt(fd) for fd in fds]
    try:
        message = _decode(payload)
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    if message.op == OP_SERVE:
        if len(conns) != 1:
            raise ValueError("serve message without a connection")
        message.conn = conns[0]
        return message
    for conn in conns:
        conn.close()
    if message.op == OP_DONE:
        message.report = _report_of(message.data)
    return message


def _adopt(fd: int) -> socket.socket:
    conn = socket.socket(fileno=fd)
    conn.set_inheritable(False)
    conn.setblocking(True)
    return conn
