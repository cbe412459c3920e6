"""Listening sockets: bound here from the settings, or inherited from systemd socket activation.

Both kinds come out the same: non-blocking, non-inheritable, listening, ready for a selector.
"""

from __future__ import annotations

import errno
import socket

from wlmd.config.settings import IpFamily, Settings

BACKLOG = 128
NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)  # -i0 on a host without IPv6


class ListenerError(OSError):
    """A socket cannot be bound or an inherited one is not a listening TCP socket."""


def bind_listeners(settings: Settings) -> list[socket.socket]:
    """Bind ``settings.port`` as ``-i4``/``-i6``/``-i0`` and ``--listen-address`` ask.

    Without an address: every address of the family, as wlmscpfs does (``-i0``: one IPv6 socket
    that also accepts IPv4, falling back to IPv4 on a host without IPv6).
    """
    family, host, dual = _plan(settings)
    try:
        sock = _bind(family, host, settings.port, dual)
    except OSError as exc:
        if not (dual and settings.listen_address is None and exc.errno in NO_IPV6):
            where = f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"
            raise ListenerError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
        sock = _bind(socket.AF_INET, "0.0.0.0", settings.port, dual=False)
    return [sock]


def bind_endpoint(endpoint: str, default_address: str | None) -> socket.socket:
    """A listener for a service's ``[address:]port`` (``[v6]:port`` for IPv6); without an
    address, ``default_address`` (``--listen-address``) or every IPv4 address."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]") or default_address or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _bind(family, host, int(port), dual=False)
    except (OSError, ValueError) as exc:
        raise ListenerError(getattr(exc, "errno", None) or errno.EINVAL,
                            f"cannot listen on {endpoint}: {exc}") from exc


def _plan(settings: Settings) -> tuple[socket.AddressFamily, str, bool]:
    """(family, address, dual stack) for the settings."""
    address = settings.listen_address
    if address is not None:
        address = address.strip("[]")
        if ":" in address:
            return socket.AF_INET6, address, settings.ip_family is IpFamily.AUTO
        if settings.ip_family is IpFamily.IPV6:
            raise ListenerError(f"--listen-address {address} is not an IPv6 address (-i6)")
        return socket.AF_INET, address, False
    if settings.ip_family is IpFamily.IPV4:
        return socket.AF_INET, "0.0.0.0", False
    return socket.AF_INET6, "::", settings.ip_family is IpFamily.AUTO


def _bind(family: socket.AddressFamily, host: str, port: int, dual: bool) -> socket.socket:
    # IPPROTO_TCP said out loud: asyncio (the HTTP and HL7 services) sets TCP_NODELAY only on
    # connections whose socket says so; without it a two-write answer waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def adopt_listeners(sockets: list[socket.socket]) -> list[socket.socket]:
    """Check and prepare inherited sockets (systemd ``LISTEN_FDS``) for the supervisor."""
    for sock in sockets:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET,
                                                                    socket.AF_INET6):
            raise ListenerError(f"inherited fd {sock.fileno()} is not a TCP socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ListenerError(f"inherited fd {sock.fileno()} is not listening")
        sock.set_inheritable(False)
        sock.setblocking(False)
    return sockets
