"""The little of systemd's protocols wlmd needs: socket activation and sd_notify.

Everything is a no-op outside systemd (no ``LISTEN_*``, no ``NOTIFY_SOCKET``), so the same
code path serves a terminal, ``--daemon`` under another init system and a systemd unit.
"""

from __future__ import annotations

import logging
import os
import socket

LOGGER = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3  # the first inherited fd (sd_listen_fds(3))
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(unset_env: bool = True) -> list[socket.socket]:
    """The sockets systemd passed to this process, as non-inheritable socket objects.

    Only honoured when ``LISTEN_PID`` is our pid, so a child that inherited the environment
    does not grab its parent's fds. ``unset_env`` removes the variables, as
    sd_listen_fds(unset_environment=1) does, for the same reason. Raises ValueError if the
    variables are malformed.
    """
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if unset_env:
        for name in _LISTEN_VARS:
            os.environ.pop(name, None)
    if pid is None or count is None:
        return []
    if not (pid.isdigit() and count.isdigit()):
        raise ValueError(f"malformed LISTEN_PID={pid!r} or LISTEN_FDS={count!r}")
    if int(pid) != os.getpid():
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)  # systemd hands them over without FD_CLOEXEC
        sockets.append(socket.socket(fileno=fd))
    return sockets


def notify(state: str) -> bool:
    """Send one sd_notify datagram (``KEY=VALUE`` lines); False if there is no notify socket.

    An abstract socket is written ``@name``. Failures are logged, never raised: a lost
    status message must not take the server down.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        LOGGER.debug("sd_notify %r failed: %s", state, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` (ping at half of it), or None."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid is not None and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000
