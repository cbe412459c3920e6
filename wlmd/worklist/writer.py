"""The one crash-safe way to change a worklist directory.

Every writer of wlmd (``wlmctl``, MPPS, the HTTP API, HL7 intake) goes through
``WorklistWriter``. A change is atomic for every reader, wlmd's store and DCMTK's ``wlmscpfs``
alike: the new bytes go to a temporary file in the same directory whose name does not end in
``.wl`` (so no reader looks at it), are ``fsync``-ed, and are renamed over the ``.wl`` name under
the exclusive ``fcntl`` lock on ``<AE>/lockfile`` (the DCMTK convention; readers take the shared
lock). The directory is ``fsync``-ed before the lock is released, so a change that was reported
done survives a power cut. A writer killed at any step leaves the old file or the new one and at
most a stray temporary file, which a later change in that directory removes (the first change
of each process, then at most once a minute) or ``wlmctl lint --fix`` does.

For the crash-safety test, ``WLMD_WRITER_FAULT=<step>`` in the environment makes the writing
process kill itself with SIGKILL when it reaches that step (``FAULT_STEPS``), so the test can
prove each step leaves readers a whole file.

Read-modify-write (a status change, an MPPS linking to its entry) runs inside ``transaction()``,
which holds the exclusive lock from the read to the rename, so concurrent writers (two
``wlmctl``, MPPS in two workers, two nodes on one NFS directory) never lose an update.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian

from wlmd.dicom.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from wlmd.dicom.textset import TextDataset, part10
from wlmd.worklist.store import LOCKFILE, WORKLIST_SUFFIX, is_safe_ae, is_worklist_name

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
STUDY_INSTANCE_UID, SOP_INSTANCE_UID = 0x0020000D, 0x00080018
TEMP_PREFIX = ".wlmd-"
TEMP_SUFFIX = ".tmp"
STRAY_AGE = 600.0  # seconds after which a temporary of another host counts as stray
SWEEP_INTERVAL = 60.0  # seconds between sweeps for strays of one directory, per process
_last_sweep: dict[Path, float] = {}
DEFAULT_LOCK_TIMEOUT = 30.0
_LOCK_POLL = 0.005  # a longer sleep leaves a freed lock idle: MPPS status marks queue on it
_LOCK_POLL_FIRST = 0.0005
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FILE_MODE = 0o600  # worklist entries hold patient data
FAULT_ENV = "WLMD_WRITER_FAULT"
# Where a writer can die, in the order a write passes them.
FAULT_STEPS = ("temporary-created", "temporary-half-written", "temporary-synced", "locked",
               "renamed", "removed")


class WriterError(Exception):
    """A change that cannot be made; nothing was changed. The message is safe to log."""


class EntryExists(WriterError):
    """The target name already holds an entry and the caller did not ask to replace it."""


class NoSuchEntry(WriterError):
    """The entry to change or remove is not there."""


def safe_file_name(*parts: str, suffix: str = ".wl") -> str:
    """A file name made from entry values (accession, SPS ID…) that can never escape its directory.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; a leading dot
    (hidden files, ``..``) is replaced too, and the result is at most 200 characters.
    """
    cleaned = [_UNSAFE.sub("_", part.strip()).strip("_") for part in parts]
    stem = "_".join(part for part in cleaned if part) or "entry"
    stem = "_" + stem[1:] if stem.startswith(".") else stem
    return stem[:200] + suffix


def encode_entry(dataset: Dataset | TextDataset) -> bytes:
    """The bytes of a ``.wl`` file: DICOM Part 10, explicit VR little endian, as dump2dcm -g.

    A ``TextDataset`` (HL7 intake) is encoded directly when ``textset`` covers it: the same
    bytes in a tenth of pydicom's time.
    """
    if isinstance(dataset, TextDataset):
        instance = (dataset.text(STUDY_INSTANCE_UID) or dataset.text(SOP_INSTANCE_UID)
                    or "1.2.3")
        encoded = part10(dataset, MODALITY_WORKLIST_FIND, instance)
        if encoded is not None:
            return encoded
        dataset = dataset.to_dataset()
    instance = str(dataset.get("StudyInstanceUID") or dataset.get("SOPInstanceUID") or "1.2.3")
    return part10_bytes(dataset, MODALITY_WORKLIST_FIND, instance)


def part10_bytes(dataset: Dataset, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """``dataset`` as a DICOM Part 10 file in explicit VR little endian, with wlmd's identity
    in the meta header: what every file wlmd writes (worklist entries, MPPS instances) holds."""
    ds = Dataset()
    ds.update(dataset)
    ds.ensure_file_meta()
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Directory:
    """One called AE's directory, as the writer sees it."""

    path: Path

    @property
    def lockfile(self) -> Path:
        return self.path / LOCKFILE


class WorklistWriter:
    """Writes, replaces, moves and removes ``.wl`` files under ``root/<AE>/`` crash-safely.

    ``suffix`` lets the same machinery keep other per-AE DICOM files (MPPS instances, ``.dcm``).
    """

    def __init__(self, root: Path, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 create_ae: bool = False, suffix: str = WORKLIST_SUFFIX) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.create_ae = create_ae
        self.suffix = suffix

    def directory(self, ae: str) -> Directory:
        """The AE's directory; created (with its lockfile) only when the writer may create AEs."""
        if not is_safe_ae(ae):
            raise WriterError(f"not a usable called AE title: {ae!r}")
        path = self.root / ae
        if not path.is_dir():
            if not self.create_ae:
                raise WriterError(f"no worklist directory for called AE {ae!r} under {self.root}")
            path.mkdir(mode=0o750, parents=False, exist_ok=True)
            _match_owner(path, self.root)
        lockfile = path / LOCKFILE
        if not lockfile.exists():
            fd = os.open(lockfile, os.O_WRONLY | os.O_CREAT, 0o640)
            os.close(fd)
            _match_owner(lockfile, path)
        return Directory(path)

    @contextlib.contextmanager
    def transaction(self, ae: str, *, lock_name: str = LOCKFILE,
                    sync: bool = True) -> Iterator[Transaction]:
        """Hold the AE's exclusive lock for a read-modify-write; changes are durable on exit.

        ``lock_name`` picks another lock file of the directory, so that writers of files no
        DCMTK reader looks at (MPPS instances) can lock finer than the whole directory.
        """
        with self._locked(self.directory(ae), lock_name, sync) as transaction:
            yield transaction

    @contextlib.contextmanager
    def _locked(self, directory: Directory, lock_name: str = LOCKFILE,
                sync: bool = True) -> Iterator[Transaction]:
        """``transaction`` in a directory already checked by ``directory()``."""
        lockfile = directory.path / lock_name if lock_name != LOCKFILE else directory.lockfile
        fd = _lock_exclusive(lockfile, self.lock_timeout, create=lock_name != LOCKFILE)
        fault_point("locked")
        try:
            transaction = Transaction(directory, self.suffix)
            if _sweep_due(directory.path):
                transaction.remove_stray_temporaries()
            yield transaction
            if transaction.changed and sync:  # sync=False: the caller syncs after the unlock
                _fsync_directory(directory.path)
        finally:
            os.close(fd)  # closing the descriptor releases the fcntl lock

    def write(self, ae: str, name: str, dataset: Dataset | bytes, *,
              replace: bool = False) -> Path:
        """Write one entry; the temporary file is prepared before the lock is taken."""
        directory = self.directory(ae)
        _check_name(name, self.suffix)
        data = dataset if isinstance(dataset, bytes) else encode_entry(dataset)
        temporary = _write_temporary(directory.path, data)
        try:
            with self._locked(directory) as transaction:
                return transaction.install(temporary, name, replace=replace)
        except BaseException:
            _discard(temporary)
            raise

    def update(self, ae: str, name: str, change: Callable[[bytes], bytes | None], *,
               attempts: int = 5, first: EntryRead | None = None) -> bool:
        """Read-modify-write of one entry's bytes holding the lock only for the rename.

        The entry is read and the new file written and synced without the lock; under the lock
        it is installed only if the entry is still the file that was read (same inode, size
        and modification time), else the change is tried again on the new content. ``change``
        returns None to leave the entry alone. False: no such entry, or nothing to change.
        Meant for hot paths (MPPS status marks) where many writers change one directory;
        ``first`` is the entry as the caller just read it (``read_entry``), saving a read.
        """
        directory = self.directory(ae)
        _check_name(name, self.suffix)
        path = directory.path / name
        for _ in range(attempts):
            try:
                current = first or read_entry(path)
            except FileNotFoundError:
                return False
            first = None
            changed = change(current.data)
            if changed is None:
                return False
            temporary = _write_temporary(directory.path, changed)
            installed = False
            try:
                with self._locked(directory, sync=False) as transaction:
                    if _same_file(current.stat, path):
                        transaction.install(temporary, name, replace=True)
                        installed = True
            finally:
                if not installed:
                    _discard(temporary)
            if installed:
                break
        else:
            raise WriterError(f"{path} kept changing; gave up after {attempts} attempts")
        _fsync_directory(directory.path)  # durable before the caller reports it done
        return True

    def remove(self, ae: str, name: str) -> None:
        """Remove one entry under the lock."""
        with self.transaction(ae) as transaction:
            transaction.remove(name)


class Transaction:
    """Changes to one AE directory made while its exclusive lock is held."""

    def __init__(self, directory: Directory, suffix: str = WORKLIST_SUFFIX) -> None:
        self.directory = directory
        self.suffix = suffix
        self.changed = False

    @property
    def path(self) -> Path:
        return self.directory.path

    def names(self) -> list[str]:
        """The ``.wl`` (or ``suffix``) file names of the directory, sorted."""
        with os.scandir(self.path) as entries:
            return sorted(e.name for e in entries
                          if _has_suffix(e.name, self.suffix) and e.is_file())

    def read(self, name: str) -> Dataset:
        """The entry as it is now (the lock keeps it from changing under the caller)."""
        _check_name(name, self.suffix)
        try:
            return dcmread(self.path / name, force=True)
        except FileNotFoundError:
            raise NoSuchEntry(f"no entry {name} in {self.path}") from None

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def write(self, name: str, dataset: Dataset | bytes, *, replace: bool = True) -> Path:
        """Write (or replace) ``name`` atomically within this transaction."""
        _check_name(name, self.suffix)
        data = dataset if isinstance(dataset, bytes) else encode_entry(dataset)
        temporary = _write_temporary(self.path, data)
        try:
            return self.install(temporary, name, replace=replace)
        except BaseException:
            _discard(temporary)
            raise

    def install(self, temporary: Path, name: str, *, replace: bool) -> Path:
        """Rename a synced temporary file over ``name``."""
        target = self.path / name
        if not replace and target.exists():
            raise EntryExists(f"{target} already exists (use replace to overwrite it)")
        os.rename(temporary, target)
        self.changed = True
        fault_point("renamed")
        return target

    def remove(self, name: str) -> None:
        _check_name(name, self.suffix)
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            raise NoSuchEntry(f"no entry {name} in {self.path}") from None
        self.changed = True
        fault_point("removed")

    def move_out(self, name: str, destination: Path) -> Path:
        """Move an entry out of the worklist (archive); the copy is durable before the removal."""
        _check_name(name, self.suffix)
        source = self.path / name
        if not source.is_file():
            raise NoSuchEntry(f"no entry {name} in {self.path}")
        destination.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = destination / name
        if target.exists():
            target = destination / f"{name[:-3]}.{time.strftime('%Y%m%d%H%M%S')}.wl"
        write_durably(destination, target.name, source.read_bytes())
        source.unlink()
        self.changed = True
        return target

    def remove_stray_temporaries(self) -> list[Path]:
        """Remove temporaries left by writers that died (this host: by PID; others: by age)."""
        return remove_stray_temporaries(self.path)


def _sweep_due(directory: Path, now: float | None = None) -> bool:
    """True at most once per ``SWEEP_INTERVAL`` and directory in this process: the sweep lists
    the whole directory, which costs tens of milliseconds at 100,000 entries."""
    now = time.monotonic() if now is None else now
    if now - _last_sweep.get(directory, -SWEEP_INTERVAL) < SWEEP_INTERVAL:
        return False
    _last_sweep[directory] = now
    return True


def remove_stray_temporaries(directory: Path) -> list[Path]:
    """Delete the stray temporary files of ``directory``; returns what was removed."""
    removed = []
    for path in stray_temporaries(directory):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def stray_temporaries(directory: Path) -> list[Path]:
    """Temporary files of writers that are gone (this host: PID dead; another host: old)."""
    found = []
    host = _host_tag()
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
                continue
            parts = name[len(TEMP_PREFIX):-len(TEMP_SUFFIX)].split("-")
            owner_alive = False
            if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
                owner_alive = _pid_alive(int(parts[1]))
            else:
                with contextlib.suppress(FileNotFoundError):
                    owner_alive = now - entry.stat().st_mtime < STRAY_AGE
            if not owner_alive:
                found.append(Path(entry.path))
    return sorted(found)


def fault_point(step: str) -> None:
    """Die here (SIGKILL, like a power cut or ``kill -9``) if the crash test asked for ``step``."""
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def write_durably(directory: Path, name: str, data: bytes) -> Path:
    """Write ``directory/name`` the crash-safe way (synced temporary, rename, synced directory).

    For files outside the locked AE directories (archives, queues) whose names are unique.
    """
    temporary = _write_temporary(directory, data)
    try:
        target = directory / name
        os.rename(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_directory(directory)
    return target


@dataclass(frozen=True)
class EntryRead:
    """A file's bytes and its status when they were read (``read_entry``)."""

    stat: os.stat_result
    data: bytes


def read_entry(path: Path) -> EntryRead:
    """The file's bytes and its status taken before the read, through one descriptor (a
    quarter of the system calls of ``stat`` plus ``read_bytes``); FileNotFoundError if gone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, max(info.st_size + 1, 65536)):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return EntryRead(info, b"".join(chunks))


def _discard(temporary: Path) -> None:
    """Remove a temporary file that was not installed."""
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()


def _has_suffix(name: str, suffix: str) -> bool:
    """DCMTK's ``OFpath::extension()`` rule for ``suffix``: the last dot, not a leading one."""
    if suffix == WORKLIST_SUFFIX:
        return is_worklist_name(name)
    dot = name.rfind(".")
    return dot > 0 and name[dot:] == suffix


def is_entry_name(name: str, suffix: str = WORKLIST_SUFFIX) -> bool:
    """A plain file name in the directory: no path, not hidden, no control characters."""
    return ("/" not in name and not name.startswith(".") and _has_suffix(name, suffix)
            and _CONTROL.search(name) is None)


def _check_name(name: str, suffix: str = WORKLIST_SUFFIX) -> None:
    if not is_entry_name(name, suffix):
        raise WriterError(f"not a {suffix} file name: {name!r}")


def _write_temporary(directory: Path, data: bytes) -> Path:
    """A synced, owner-only temporary file in ``directory`` holding ``data``."""
    unique = f"{_host_tag()}-{os.getpid()}-{secrets.token_hex(6)}"
    path = directory / f"{TEMP_PREFIX}{unique}{TEMP_SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        fault_point("temporary-created")
        _match_owner_fd(fd, directory)
        # One write: each is an inotify event for every worker watching the directory. The
        # crash test gets two, to die between them.
        half = len(data) // 2 if os.environ.get(FAULT_ENV) == "temporary-half-written" else 0
        _write_all(fd, memoryview(data)[:half])
        fault_point("temporary-half-written")
        _write_all(fd, memoryview(data)[half:])
        os.fsync(fd)
        fault_point("temporary-synced")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    os.close(fd)
    return path


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _lock_exclusive(lockfile: Path, timeout: float, *, create: bool = False) -> int:
    """Open ``lockfile`` and take the exclusive ``fcntl`` lock readers and DCMTK respect."""
    try:
        fd = os.open(lockfile, os.O_RDWR | (os.O_CREAT if create else 0), FILE_MODE)
    except OSError as exc:
        raise WriterError(f"cannot open {lockfile}: {exc.strerror}") from None
    deadline = time.monotonic() + timeout
    poll = _LOCK_POLL_FIRST
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise WriterError(f"cannot lock {lockfile}: {exc.strerror}") from None
        if time.monotonic() >= deadline:
            os.close(fd)
            raise WriterError(f"{lockfile} stayed locked by another writer for {timeout:g} s")
        time.sleep(poll)
        poll = min(poll * 2, _LOCK_POLL)  # short waits stay short, long ones cost little CPU


def _same_file(before: os.stat_result, path: Path) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _match_owner(path: Path, like: Path) -> None:
    """Run as root, give a new file the owner of its directory, so the daemon can read it."""
    if os.geteuid() == 0:
        info = like.stat()
        os.chown(path, info.st_uid, info.st_gid)


def _match_owner_fd(fd: int, like: Path) -> None:
    """``_match_owner`` for a new file; no change when it has that owner already (each
    change is an event in every inotify watch on the directory)."""
    if os.geteuid() == 0:
        info = like.stat()
        if (info.st_uid, info.st_gid) != (0, os.getegid()):
            os.fchown(fd, info.st_uid, info.st_gid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host_tag() -> str:
    return _UNSAFE.sub("_", socket.gethostname()).replace("-", "_")[:32] or "host"
