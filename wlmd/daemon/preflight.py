"""``--check-config``: what start-up would trip on, found before a restart instead of after.

Each check looks at the machine the way the server will: the worklist tree, the index file's
directory, the listening port, the account to switch to. Errors stop start-up (or make the
service useless); warnings name what an administrator most likely wants to fix.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wlmd.config.settings import Settings
from wlmd.daemon.listeners import ListenerError, bind_listeners
from wlmd.worklist.store import is_safe_ae

LOCKFILE = "lockfile"


@dataclass(frozen=True)
class Finding:
    """One problem: ``fatal`` ones make ``--check-config`` exit with status 1."""

    fatal: bool
    message: str

    def __str__(self) -> str:
        return f"{'error' if self.fatal else 'warning'}: {self.message}"


def preflight(settings: Settings) -> list[Finding]:
    """Every finding for ``settings``, in the order start-up meets them."""
    return [*_data_path(settings.data_files_path), *_index_file(settings.index_file),
            *_port(settings), *_account(settings)]


def _data_path(root: Path) -> Iterator[Finding]:
    if not root.is_dir():
        yield Finding(True, f"data files path {root} is not a directory")
        return
    if not os.access(root, os.R_OK | os.X_OK):
        yield Finding(True, f"data files path {root} is not readable")
        return
    ae_dirs = sorted(entry for entry in root.iterdir() if entry.is_dir())
    if not ae_dirs:
        yield Finding(False, f"data files path {root} has no AE title directory: every "
                             "association will be rejected")
    for ae_dir in ae_dirs:
        if not is_safe_ae(ae_dir.name):
            yield Finding(False, f"{ae_dir.name!r} is not a valid AE title (1-16 "
                                 "characters, no '..'): never served")
            continue
        lockfile = ae_dir / LOCKFILE
        if not lockfile.is_file():
            yield Finding(False, f"{lockfile} is missing: writers cannot lock {ae_dir.name}")
        elif not os.access(lockfile, os.R_OK):
            yield Finding(False, f"{lockfile} is not readable")


def _index_file(index_file: Path | None) -> Iterator[Finding]:
    if index_file is None:
        return
    directory = index_file.parent
    if not directory.is_dir():
        yield Finding(False, f"index file directory {directory} does not exist: every start "
                             "parses every worklist file")
    elif not os.access(directory, os.W_OK | os.X_OK):
        yield Finding(False, f"index file directory {directory} is not writable")


def _port(settings: Settings) -> Iterator[Finding]:
    """Bind the configured port and let go at once: in use, or privileged, is found now."""
    try:
        for sock in bind_listeners(settings):
            sock.close()
    except ListenerError as exc:
        if exc.errno == errno.EACCES:
            yield Finding(False, f"{exc.strerror}: port {settings.port} needs root or "
                                 "CAP_NET_BIND_SERVICE (wlmd.service grants it)")
        elif exc.errno == errno.EADDRINUSE:
            yield Finding(False, f"{exc.strerror} (a running wlmd, or wlmd.socket, holds it?)")
        else:
            yield Finding(True, str(exc.strerror or exc))


def _account(settings: Settings) -> Iterator[Finding]:
    if settings.user is not None:
        try:
            pwd.getpwnam(settings.user)
        except KeyError:
            yield Finding(True, f"user {settings.user!r} does not exist")
    if settings.group is not None:
        try:
            grp.getgrnam(settings.group)
        except KeyError:
            yield Finding(True, f"group {settings.group!r} does not exist")
