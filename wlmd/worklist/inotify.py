"""Which worklist files changed since the last look: Linux inotify through ctypes.

The store must see every change made before a query was sent. The kernel queues an inotify
event synchronously with the writer's system call (create, write, rename, unlink, chmod), so
draining the queue without blocking when a query arrives yields every name touched since the
previous query; only those need a ``stat``, instead of one per file in the directory.

On a directory other machines write to (NFS, CephFS, CIFS: see ``filesystems``), the kernel
sees none of their changes, so with ``RefreshMode.AUTO`` such a directory is never watched and
``changes()`` always answers None; ``RefreshMode.STAT`` does the same for every directory.

Whenever the events cannot be trusted to be complete -- a new watch, a queue overflow, a watch
the kernel dropped, the directory itself moved or deleted or replaced, a fork, or inotify not
being available at all -- ``changes()`` answers None and the caller scans the whole directory.

One inotify descriptor per process: a forked child shares its parent's queue, so it opens its
own on first use and starts with full scans -- unless its parent armed a queue for it just
before the fork (``Inotify.handover``), after which the parent brought its records up to date.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import struct
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field

from wlmd.config.settings import RefreshMode
from wlmd.worklist.filesystems import shared_filesystem

LOGGER = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
              | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
LOST = IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF  # events can no longer be trusted
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
READ_SIZE = 1 << 16
MAX_READS = 256  # bounded drain; a queue this long is treated like an overflow


@dataclass
class _Watch:
    """One watched directory: the names touched since the last ``changes()``."""

    wd: int
    identity: tuple[int, int]  # st_dev, st_ino of the directory when the watch was added
    names: set[str] = field(default_factory=set)
    lost: bool = False


class Inotify:
    """Directory watches of this process; ``changes(path)`` is all a caller needs."""

    def __init__(self, refresh: RefreshMode = RefreshMode.AUTO) -> None:
        self.refresh = refresh
        self._unwatchable: dict[str, bool] = {}  # per directory: scan it, never watch it
        self._creator = os.getpid()
        self._pid: int | None = -1  # the process whose queue this is; None: a handover's
        self._fd: int | None = None
        self._libc: ctypes.CDLL | None = None
        self._unavailable = False
        self._watches: dict[str, _Watch] = {}

    def changes(self, path: str) -> set[str] | None:
        """Names in directory ``path`` touched since the last call; None: scan everything.

        A None also (re)arms the watch, so the scan that follows it is the new baseline.
        """
        if self._scan_only(path):
            return None
        fd = self._descriptor()
        if fd is None:
            return None
        self._drain(fd)
        watch = self._watches.get(path)
        try:
            st = os.stat(path)
        except OSError:
            self._forget(path)
            return None
        identity = (st.st_dev, st.st_ino)
        if watch is None or watch.lost or watch.identity != identity:
            self._forget(path)
            self._add(fd, path, identity)
            return None
        names, watch.names = watch.names, set()
        return names

    def _scan_only(self, path: str) -> bool:
        """True if ``path`` must be scanned on every refresh (setting, or a shared directory)."""
        if self.refresh is RefreshMode.INOTIFY:
            return False
        if self.refresh is RefreshMode.STAT:
            return True
        known = self._unwatchable.get(path)
        if known is None:
            kind = shared_filesystem(path)
            if kind is not None:
                LOGGER.info("%s is on a shared file system (%s): its queries scan the "
                            "directory instead of relying on inotify", path, kind)
            known = self._unwatchable[path] = kind is not None
        return known

    @classmethod
    def handover(cls, paths: Iterable[str],
                 refresh: RefreshMode = RefreshMode.AUTO) -> Inotify:
        """Watches on ``paths`` armed now, for the next process forked from this one.

        That child's ``changes()`` answers from this queue: every change since this call.
        The parent must bring what it knows up to date after this call, and ``close()`` its
        copy after the fork.
        """
        inotify = cls(refresh)
        fd = inotify._descriptor()
        if fd is not None:
            for path in paths:
                if inotify._scan_only(path):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                inotify._add(fd, path, (st.st_dev, st.st_ino))
        inotify._pid = None
        return inotify

    def invalidate(self, path: str) -> None:
        """Make the next ``changes(path)`` ask for a full scan (the last one was incomplete)."""
        watch = self._watches.get(path)
        if watch is not None:
            watch.lost = True

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Drop every watch and the descriptor (this process's, or a handover's copy)."""
        if self._fd is not None and self._pid in (os.getpid(), None):
            os.close(self._fd)
        self._fd = None
        self._watches.clear()

    def _descriptor(self) -> int | None:
        """This process's inotify descriptor, opened on first use and again after a fork."""
        pid = os.getpid()
        if self._pid is None and pid != self._creator:
            self._pid = pid  # a child adopts the queue its parent armed for it
        if self._pid != pid:
            self._fd = None  # the inherited descriptor is the parent's queue: leave it alone
            self._watches.clear()
            self._pid = pid
            self._unavailable = False
        if self._fd is None and not self._unavailable:
            self._fd = self._open()
            self._unavailable = self._fd is None
        return self._fd

    def _open(self) -> int | None:
        """A non-blocking inotify descriptor, or None (logged once) where there is none."""
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError) as error:
            LOGGER.info("inotify unavailable (%s): every query scans its directory", error)
            return None
        if fd < 0:
            LOGGER.info("inotify unavailable (%s): every query scans its directory",
                        os.strerror(ctypes.get_errno()))
            return None
        return int(fd)

    def _add(self, fd: int, path: str, identity: tuple[int, int]) -> None:
        """Watch ``path``; without a watch, ``changes(path)`` keeps asking for full scans."""
        assert self._libc is not None
        wd = self._libc.inotify_add_watch(fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code not in (errno.ENOENT, errno.ENOTDIR):
                LOGGER.info("Cannot watch %s (%s): its queries scan the directory", path,
                            os.strerror(code))
            return
        self._watches[path] = _Watch(int(wd), identity)

    def _forget(self, path: str) -> None:
        """Stop watching ``path`` unless another path shares its watch descriptor."""
        watch = self._watches.pop(path, None)
        if watch is None or any(w.wd == watch.wd for w in self._watches.values()):
            return
        assert self._libc is not None and self._fd is not None
        self._libc.inotify_rm_watch(self._fd, watch.wd)  # fails harmlessly if already gone

    def _drain(self, fd: int) -> None:
        """Read every queued event without blocking and sort the names into their watches."""
        for _ in range(MAX_READS):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            self._dispatch(data)
        self._lose_all()

    def _dispatch(self, data: bytes) -> None:
        """Record the names of one buffer of events; mark watches whose events were lost."""
        offset = 0
        while offset + EVENT.size <= len(data):
            wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
            offset += EVENT.size
            name = data[offset:offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                self._lose_all()
                continue
            for watch in self._watches.values():
                if watch.wd != wd:
                    continue
                if mask & LOST:
                    watch.lost = True
                elif name:
                    watch.names.add(os.fsdecode(name))

    def _lose_all(self) -> None:
        for watch in self._watches.values():
            watch.lost = True


@contextlib.contextmanager
def handover_for_fork(paths: Collection[str], refresh: RefreshMode,
                      bring_up_to_date: Callable[[str], bool]) -> Iterator[Inotify]:
    """A queue on ``paths`` for the child forked inside this block (``Inotify.handover``).

    It is armed before ``bring_up_to_date(path)`` makes the parent's view of each path current,
    so the child's first ``changes()`` are those since; a False from it makes the child scan
    that path itself. The parent's copy is closed after the block.
    """
    handover = Inotify.handover(paths, refresh)
    try:
        for path in paths:
            if not bring_up_to_date(path):
                handover.invalidate(path)
        yield handover
    finally:
        handover.close()
