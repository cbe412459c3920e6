"""The preloaded worklist's large immutable bytes, moved out of the heap into a shared mapping.

After the preload, most of the memory the supervisor and every worker share is two kinds of
buffers that never change again: the records' compressed file bytes (``records.Shelf``) and
their packed matching keys (``index.PackedKeys``), some 80 MB at 100,000 entries. In the heap
they are anonymous memory: every process that reads a page is charged its share of it, the
kernel can never drop it, and the objects around them decide which pages a fork un-shares.

Here they are written, one after the other, into one file that has no name (``O_TMPFILE``,
owner-only, in the directory the admin chose for ``--index-file``) and mapped read-only and
shared: clean page-cache pages, like the ``.wl`` files wlmscpfs and Orthanc read on every
query. A process is charged only for the pages it reads, and the kernel may drop them under
memory pressure and read them again. The supervisor writes them with ``os.write`` and never
reads them back through the mapping, so its own memory holds none of them; forked workers
inherit the mapping. The mapping lives as long as some buffer still views it (a reload's new
preload makes a new one; the old one goes when the last worker that used it is gone), and so
does the one descriptor Python's ``mmap`` keeps of the file (a duplicate, closed with it).

Without ``--index-file`` nothing is written anywhere: the buffers stay in the heap, as a file
of patient data must not appear in a directory the admin did not choose. A file that cannot be
written or mapped (full disk, read-only or foreign filesystem) leaves them in the heap too,
with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

LOGGER = logging.getLogger(__name__)

# O_TMPFILE refused by the kernel or the filesystem: name a file, then unlink it at once
_NO_TMPFILE = frozenset((errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT))


class Sealed(Protocol):
    """A store of buffers of which some are sealed: immutable from now on, so they may move."""

    def sealed(self) -> list[bytes]:
        """The sealed buffers still in the heap, in a stable order."""

    def moved(self, views: list[memoryview]) -> None:
        """Read the buffers ``sealed`` gave from ``views`` (same bytes, same order) instead."""


def map_out(stores: Iterable[Sealed], directory: Path) -> int:
    """Move the sealed buffers of ``stores`` into one unnamed file in ``directory``, mapped.

    How many bytes moved: 0 if there was nothing to move or the file could not be made (then
    the buffers stay where they are, and one warning says why).
    """
    moving = [(store, buffers) for store in stores if (buffers := store.sealed())]
    size = sum(len(buffer) for _, buffers in moving for buffer in buffers)
    if not size:
        return 0
    try:
        mapping = _mapped_copy([buffer for _, buffers in moving for buffer in buffers],
                               size, directory)
    except OSError as error:
        LOGGER.warning("Cannot map the preloaded worklist from a file in %s (%s); keeping it "
                       "in memory", directory, error.strerror or error)
        return 0
    whole = memoryview(mapping)
    at = 0
    for store, buffers in moving:
        views = []
        for buffer in buffers:
            views.append(whole[at:at + len(buffer)])
            at += len(buffer)
        store.moved(views)
    return size


def _mapped_copy(buffers: list[bytes], size: int, directory: Path) -> mmap.mmap:
    """``buffers`` written one after the other into a new unnamed file, mapped read-only."""
    fd = _unnamed_file(directory)
    try:
        for buffer in buffers:
            written = 0
            while written < len(buffer):
                written += os.write(fd, buffer[written:] if written else buffer)
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)  # the mapping keeps its own duplicate


def _unnamed_file(directory: Path) -> int:
    """A new owner-only file in ``directory`` that no name leads to, open to write and map
    (a mapping needs a descriptor open for reading too)."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno not in _NO_TMPFILE:
            raise
    fd, path = tempfile.mkstemp(prefix=".wlmd-mapped-", dir=directory)  # mode 0600
    try:
        os.unlink(path)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd
