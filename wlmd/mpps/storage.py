"""MPPS instances on disk: ``<mpps_path>/<called AE>/<SOP Instance UID>.dcm``.

Every change goes through the crash-safe writer (synced temporary file, rename, synced
directory, under the exclusive lock on ``<AE>/lockfile``), so a response is sent only for an
instance that is on disk, and two workers updating one instance take turns. SOP Instance UIDs
are checked against the UID syntax before they become file names.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread

from wlmd.dicom.dimse import EXPLICIT_LITTLE, decode_dataset, encode_dataset
from wlmd.dicom.rawfile import NotRaw, body_start, part10
from wlmd.mpps.encoded import EncodedLevel, encoded_level, instance_file
from wlmd.mpps.rules import is_uid, shallow_copy
from wlmd.worklist.store import LOCKFILE
from wlmd.worklist.writer import Transaction, WorklistWriter, WriterError

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
LOCK_STRIPES = 64
SUFFIX = ".dcm"


class InvalidInstanceUid(WriterError):
    """A SOP Instance UID that is not a UID; it never becomes a file name."""


def file_name(sop_instance_uid: str) -> str:
    """The instance's file name; InvalidInstanceUid for anything but a valid UID."""
    if not is_uid(sop_instance_uid):
        raise InvalidInstanceUid("not a valid SOP Instance UID")
    return sop_instance_uid + SUFFIX


def encode_instance(dataset: Dataset | EncodedLevel, sop_instance_uid: str) -> bytes:
    """The Part 10 bytes of an MPPS instance (explicit VR little endian; dcmdump reads it).

    Raw elements (``EncodedLevel``) are copied; a Dataset is encoded by the association
    engine's writer, which copies the elements still raw from the wire as they are: a tenth of
    the time of pydicom's ``save_as``.
    """
    if isinstance(dataset, EncodedLevel):
        return instance_file(dataset, MPPS_SOP_CLASS, sop_instance_uid)
    ds = shallow_copy(dataset)
    ds.SOPClassUID = MPPS_SOP_CLASS
    ds.SOPInstanceUID = sop_instance_uid
    return part10(encode_dataset(ds, EXPLICIT_LITTLE), MPPS_SOP_CLASS, sop_instance_uid)


def decode_instance(data: bytes) -> Dataset:
    """A stored instance; its elements stay raw until read (pydicom for a foreign layout)."""
    try:
        start = body_start(data)
    except NotRaw:
        return dcmread(io.BytesIO(data), force=True)
    return decode_dataset(data[start:], EXPLICIT_LITTLE, len(data))


def instance_level(data: bytes) -> EncodedLevel:
    """A stored instance's raw elements (``wlmd.mpps.encoded``); NotRaw for another layout."""
    return encoded_level(data, body_start(data))


@dataclass(frozen=True)
class StoredInstance:
    """One MPPS instance as listed by ``wlmctl mpps list``."""

    called_ae: str
    sop_instance_uid: str
    dataset: Dataset


class MppsStorage:
    """The MPPS directory tree; one instance per file, one directory per called AE."""

    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.writer = WorklistWriter(self.root, lock_timeout=lock_timeout, create_ae=True,
                                     suffix=SUFFIX)

    def ae_path(self, ae: str) -> Path:
        """``<mpps_path>/<AE>``, created on first use."""
        return self.writer.directory(ae).path

    @contextlib.contextmanager
    def locked(self, ae: str, sop_instance_uid: str = "") -> Iterator[Transaction]:
        """The AE's MPPS directory under the lock of one instance (read-modify-write).

        Instances hash onto ``LOCK_STRIPES`` lock files (``lockfile.<n>``), so that steps of
        different instances are written in parallel and two changes of one instance never are;
        without a UID the whole directory's lock is taken.
        """
        lock_name = LOCKFILE
        if sop_instance_uid:
            lock_name = f"{LOCKFILE}.{zlib.crc32(sop_instance_uid.encode()) % LOCK_STRIPES}"
        with self.writer.transaction(ae, lock_name=lock_name) as transaction:
            yield transaction

    @staticmethod
    def read(transaction: Transaction, sop_instance_uid: str) -> Dataset | None:
        """The stored instance, or None if there is none."""
        data = MppsStorage.read_bytes(transaction, sop_instance_uid)
        return None if data is None else decode_instance(data)

    @staticmethod
    def read_bytes(transaction: Transaction, sop_instance_uid: str) -> bytes | None:
        """The stored instance's file, or None if there is none."""
        try:
            return (transaction.path / file_name(sop_instance_uid)).read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def exists(transaction: Transaction, sop_instance_uid: str) -> bool:
        return (transaction.path / file_name(sop_instance_uid)).exists()

    @staticmethod
    def write(transaction: Transaction, dataset: Dataset | EncodedLevel,
              sop_instance_uid: str) -> bytes:
        """Create or replace the instance durably (returns, once it is on disk, its bytes)."""
        data = encode_instance(dataset, sop_instance_uid)
        transaction.write(file_name(sop_instance_uid), data, replace=True)
        return data

    def instances(self, ae: str | None = None) -> Iterator[StoredInstance]:
        """Every stored instance (of one AE), read without the lock: renames are atomic."""
        if not self.root.is_dir():
            return
        aes = [ae] if ae is not None else sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for name in aes:
            directory = self.root / name
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*" + SUFFIX)):
                if path.name.startswith("."):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    yield StoredInstance(name, path.name[: -len(SUFFIX)],
                                         dcmread(path, force=True))
