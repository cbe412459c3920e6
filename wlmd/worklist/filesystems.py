"""Is a worklist directory on a file system that other machines change too (NFS, CephFS, CIFS)?

inotify reports only the changes made through this machine's kernel: on a directory that
several wlmd nodes share, a file written by another node raises no event, so the store must
scan such a directory on every query. ``statfs(2)``'s ``f_type`` names the file system; Python's
``os.statvfs`` does not return it, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os

# f_type magic numbers (linux/magic.h and the file systems' own headers) of network and
# cluster file systems; FUSE covers glusterfs, sshfs, s3fs and the like.
SHARED_FILESYSTEMS = {
    0x6969: "nfs",
    0x517B: "smb",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x00C36400: "ceph",
    0x65735546: "fuse",
    0x5346414F: "afs",
    0x6B414653: "afs",
    0x73757245: "coda",
    0x01021997: "9p",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
}
_STATFS_SIZE = 256  # larger than struct statfs on every Linux architecture


def filesystem_type(path: str) -> int | None:
    """The ``f_type`` of the file system holding ``path``; None where statfs is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        statfs = libc.statfs
    except (OSError, AttributeError):
        return None
    buffer = ctypes.create_string_buffer(_STATFS_SIZE)
    if statfs(os.fsencode(path), buffer) != 0:
        return None
    # f_type is the first member, a C long (__fsword_t) on the architectures wlmd runs on.
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


def shared_filesystem(path: str) -> str | None:
    """The name of the network or cluster file system holding ``path``, or None."""
    kind = filesystem_type(path)
    return None if kind is None else SHARED_FILESYSTEMS.get(kind)
