"""The worklist side of MPPS: find the entry an MPPS belongs to and apply the AE's policy.

An MPPS names its worklist entry in the Scheduled Step Attributes Sequence (0040,0270): Study
Instance UID, Accession Number, Requested Procedure ID and Scheduled Procedure Step ID. Every
change goes through the worklist writer under the AE's lock; entries hidden while a step is IN
PROGRESS wait in ``<mpps_path>/<AE>/hidden/`` and archived ones in ``<mpps_path>/<AE>/archive/``.
An MPPS that links to no entry (an unscheduled exam) changes nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom import Dataset, dcmread

from wlmd.config.settings import RefreshMode
from wlmd.dicom.rawfile import RawLevel
from wlmd.mpps.entryfile import (
    EntryLinkValues,
    NotRaw,
    instance_link_values,
    link_values,
    step_link_values,
    with_sps_status,
)
from wlmd.mpps.links import EntrySource, LinkCandidates, Wanted
from wlmd.mpps.policy import (
    AePolicy,
    CompletedAction,
    DiscontinuedAction,
    InProgressAction,
)
from wlmd.mpps.rules import COMPLETED, STEP_SEQUENCE_TAG, text
from wlmd.mpps.storage import decode_instance
from wlmd.worklist.store import is_safe_ae
from wlmd.worklist.writer import (
    EntryRead,
    WorklistWriter,
    WriterError,
    encode_entry,
    read_entry,
    write_durably,
)

LOGGER = logging.getLogger("wlmd.mpps")
SPS_STATUS = {"started": "STARTED", "completed": "COMPLETED",
              "discontinued": "DISCONTINUED", "scheduled": "SCHEDULED"}
HIDDEN = "hidden"
ARCHIVE = "archive"


@dataclass(frozen=True)
class LinkKey:
    """One Scheduled Step Attributes Sequence item's identifying values."""

    study_uid: str
    accession: str
    requested_procedure_id: str
    sps_id: str

    def usable(self) -> bool:
        return bool(self.study_uid or self.accession)

    def matches(self, entry: EntryLinkValues) -> bool:
        """True when every value the MPPS gives equals the entry's."""
        wanted = ((self.study_uid, entry.study_uid), (self.accession, entry.accession),
                  (self.requested_procedure_id, entry.requested_procedure_id))
        if any(mine and mine != theirs for mine, theirs in wanted):
            return False
        return not self.sps_id or self.sps_id in entry.sps_ids


def link_keys(mpps: Dataset) -> list[LinkKey]:
    """The usable links of an MPPS instance."""
    element = mpps.get(STEP_SEQUENCE_TAG)
    if element is None or element.VR != "SQ":
        return []
    keys = [LinkKey(text(item, 0x0020000D), text(item, 0x00080050), text(item, 0x00401001),
                    text(item, 0x00400009)) for item in element.value]
    return [key for key in keys if key.usable()]


def instance_link_keys(data: bytes, elements: RawLevel | None = None) -> list[LinkKey]:
    """``link_keys`` of a stored instance's Part 10 bytes: walked raw (a tenth of the time of
    converting the sequence with pydicom), or decoded when they must be. ``elements``: the
    instance's top level as the caller read it already (``wlmd.mpps.encoded``)."""
    try:
        values = instance_link_values(data) if elements is None else step_link_values(elements)
        keys = [LinkKey(*value) for value in values]
    except NotRaw:
        return link_keys(decode_instance(data))
    return [key for key in keys if key.usable()]


def entry_link_values(data: bytes) -> EntryLinkValues:
    """The link values of an entry file's bytes: walked raw, or parsed when they must be."""
    try:
        return link_values(data)
    except NotRaw:
        return dataset_link_values(dcmread(io.BytesIO(data), force=True))


def dataset_link_values(entry: Dataset) -> EntryLinkValues:
    element = entry.get(0x00400100)
    steps = element.value if element is not None and element.VR == "SQ" else []
    return EntryLinkValues(text(entry, 0x0020000D), text(entry, 0x00080050),
                           text(entry, 0x00401001),
                           tuple(text(item, 0x00400009) for item in steps))


def set_sps_status(entry: Dataset, status: str, sps_ids: set[str]) -> None:
    """Scheduled Procedure Step Status (0040,0020) of the linked steps (all when no SPS ID)."""
    element = entry.get(0x00400100)
    if element is None or element.VR != "SQ":
        return
    for item in element.value:
        if not sps_ids or text(item, 0x00400009) in sps_ids:
            item.ScheduledProcedureStepStatus = status


class WorklistLifecycle:
    """Applies an AE's MPPS policy to the linked worklist entries through the writer."""

    def __init__(self, data_path: Path, mpps_root: Path, entries: EntrySource | None = None,
                 refresh: RefreshMode = RefreshMode.AUTO) -> None:
        self.writer = WorklistWriter(data_path)
        self.mpps_root = mpps_root
        self.candidates = LinkCandidates(entries, refresh)

    def forking(self) -> contextlib.AbstractContextManager[None]:
        """Around the fork of one worker: it inherits the link index of every AE directory."""
        return self.candidates.forking(_ae_directories(self.writer.root))

    def started(self, ae: str, keys: list[LinkKey], policy: AePolicy) -> list[str]:
        """IN PROGRESS: mark STARTED or hide the entries ``keys`` (the MPPS's links) name;
        returns the linked entry names."""
        action = policy.in_progress
        return self._apply(ae, keys, lambda ae, found: self._started(ae, found, action))

    def ended(self, ae: str, keys: list[LinkKey], status: str, policy: AePolicy) -> list[str]:
        """COMPLETED or DISCONTINUED: the policy's action, except a delayed archive/delete,
        which only marks now (``remove_later`` does the rest)."""
        if status == COMPLETED:
            completed = policy.completed
            if policy.completed_delay and completed in (CompletedAction.ARCHIVE,
                                                        CompletedAction.DELETE):
                completed = CompletedAction.MARK
            return self._apply(ae, keys, lambda ae, found: self._completed(ae, found, completed))
        discontinued = policy.discontinued
        return self._apply(ae, keys,
                           lambda ae, found: self._discontinued(ae, found, discontinued))

    def remove_later(self, ae: str, keys: list[LinkKey], action: CompletedAction) -> list[str]:
        """The delayed half of a COMPLETED policy: archive or delete now."""
        return self._apply(ae, keys, lambda ae, found: self._completed(ae, found, action))

    # --- finding --------------------------------------------------------------------------

    def _apply(self, ae: str, keys: list[LinkKey], act: _Action) -> list[str]:
        """Find the linked entries (without the lock: renames are atomic), then act on each.

        The in-memory worklist is asked before any lock is taken: the store takes the shared
        lock on the same lockfile, and fcntl locks are per process (its close would release
        ours). Each action re-checks its entry under the lock.
        """
        if not keys:
            return []
        try:
            directory = self.writer.directory(ae).path
            names = self.candidates.names(
                ae, directory, [Wanted(key.study_uid, key.accession) for key in keys])
            if names is None:
                names = sorted(p.name for p in directory.glob("*.wl"))
            found = self._find(ae, directory, keys, names)
            for entry in found:
                act(ae, entry)
        except WriterError as exc:  # no worklist directory for this AE, or its lock timed out
            LOGGER.warning("worklist of %s not updated: %s", ae, exc)
            return []
        return [entry.name for entry in found]

    def _find(self, ae: str, directory: Path, keys: list[LinkKey],
              names: list[str]) -> list[_Found]:
        found = []
        for name in names:  # pydicom raises many types for a file it cannot read: not linked
            with contextlib.suppress(Exception):
                read = read_entry(directory / name)
                values = entry_link_values(read.data)
                sps = {k.sps_id for k in keys if k.matches(values)}
                if sps:
                    found.append(_Found(name, read, None, sps - {""}, keys))
        if not found:
            hidden = self.mpps_root / ae / HIDDEN
            for path in sorted(hidden.glob("*.wl")) if hidden.is_dir() else []:
                with contextlib.suppress(Exception):
                    read = read_entry(path)
                    sps = {k.sps_id for k in keys if k.matches(entry_link_values(read.data))}
                    if sps:
                        found.append(_Found(path.name, read, path, sps - {""}, keys))
        return found

    # --- actions -----------------------------------------------------------------------------

    def _started(self, ae: str, found: _Found, action: InProgressAction) -> None:
        if action is InProgressAction.MARK:
            self._mark(ae, found, SPS_STATUS["started"])
        elif action is InProgressAction.HIDE and found.hidden_path is None:
            with self.writer.transaction(ae) as tx:
                if tx.exists(found.name):
                    tx.move_out(found.name, self.mpps_root / ae / HIDDEN)

    def _completed(self, ae: str, found: _Found, action: CompletedAction) -> None:
        if action is CompletedAction.MARK:
            self._mark(ae, found, SPS_STATUS["completed"])
        elif action is CompletedAction.ARCHIVE:
            self._archive(ae, found)
        elif action is CompletedAction.DELETE:
            self._delete(ae, found)

    def _discontinued(self, ae: str, found: _Found, action: DiscontinuedAction) -> None:
        if action is DiscontinuedAction.RESCHEDULE:
            self._mark(ae, found, SPS_STATUS["scheduled"])
        elif action is DiscontinuedAction.MARK:
            self._mark(ae, found, SPS_STATUS["discontinued"])
        elif action is DiscontinuedAction.ARCHIVE:
            self._archive(ae, found)

    def _mark(self, ae: str, found: _Found, status: str) -> None:
        """Set the status; an entry hidden while IN PROGRESS comes back to the worklist."""
        if found.hidden_path is not None:
            with self.writer.transaction(ae) as tx:
                tx.write(found.name, with_status(found.data, status, found.sps_ids),
                         replace=True)
            _unlink_durably(found.hidden_path)
            return

        def change(data: bytes) -> bytes | None:
            if data != found.data and not any(  # the file _find matched is matched already
                    key.matches(entry_link_values(data)) for key in found.keys):
                return None  # replaced meanwhile by an entry this MPPS does not link to
            return with_status(data, status, found.sps_ids)

        self.writer.update(ae, found.name, change, first=found.read)

    def _archive(self, ae: str, found: _Found) -> None:
        archive = self.mpps_root / ae / ARCHIVE
        if found.hidden_path is None:
            with self.writer.transaction(ae) as tx:
                if tx.exists(found.name):
                    tx.move_out(found.name, archive)
            return
        archive.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durably(archive, found.name, found.hidden_path.read_bytes())
        _unlink_durably(found.hidden_path)

    def _delete(self, ae: str, found: _Found) -> None:
        if found.hidden_path is not None:
            _unlink_durably(found.hidden_path)
            return
        with self.writer.transaction(ae) as tx:
            if tx.exists(found.name):
                tx.remove(found.name)


def _ae_directories(root: Path) -> list[Path]:
    """The worklist's AE directories (none if the root cannot be listed)."""
    try:
        with os.scandir(root) as entries:
            return [root / e.name for e in entries
                    if e.is_dir() and is_safe_ae(e.name)]
    except OSError:
        return []


def with_status(data: bytes, status: str, sps_ids: set[str]) -> bytes:
    """The entry file with the linked steps' status set: on the bytes, or through pydicom."""
    try:
        return with_sps_status(data, status, sps_ids)
    except NotRaw:
        entry = dcmread(io.BytesIO(data), force=True)
        set_sps_status(entry, status, sps_ids)
        return encode_entry(entry)


@dataclass
class _Found:
    """A linked entry as read: in the worklist (``hidden_path`` None) or hidden."""

    name: str
    read: EntryRead  # the file as _find read and matched it
    hidden_path: Path | None
    sps_ids: set[str]
    keys: list[LinkKey]

    @property
    def data(self) -> bytes:
        return self.read.data


class _Action(Protocol):
    def __call__(self, ae: str, found: _Found, /) -> None: ...


def _unlink_durably(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
