"""Order control (ORC-1) applied to the worklist through the writer, idempotently.

IHE Scheduled Workflow (RAD-4 Procedure Scheduled, RAD-13 Procedure Update): NW (and SN) add
an order, XO (and XX) change it, CA/OC/CR cancel it, DC/OD/DR discontinue it, SC changes its
status (ORC-5; completed, cancelled or discontinued removes the entry). An entry's file name
comes from its key (order number, requested procedure ID, SPS ID), so the same message applied
twice finds its own entry and changes nothing. Every entry of a message is checked before the
first is written: a message that fails changes nothing.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread

from wlmd.hl7.mapping import Entry
from wlmd.hl7.message import (
    DUPLICATE_KEY,
    INTERNAL_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    Hl7Error,
    Location,
    OrderGroup,
    OrderMessage,
)
from wlmd.worklist.store import is_safe_ae
from wlmd.worklist.writer import (
    STUDY_INSTANCE_UID,
    NoSuchEntry,
    WorklistWriter,
    WriterError,
    encode_entry,
)

NEW = {"NW", "SN"}
CHANGE = {"XO", "XX"}
CANCEL = {"CA", "OC", "CR", "DC", "OD", "DR"}
STATUS = {"SC"}
REMOVING_STATUS = {"CM", "CA", "DC", "ER"}  # ORC-5 values that take an entry off the worklist
STEP_STATUS = {"SC": "SCHEDULED", "": "SCHEDULED", "IP": "STARTED", "A": "STARTED",
               "HD": "SCHEDULED"}


class Outcome(enum.Enum):
    """What one entry's change did."""

    CREATED = "created"
    CHANGED = "changed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Action:
    """One planned change: the order control, the entry, and where it is now (if anywhere)."""

    control: str
    entry: Entry
    current: Path | None
    status: str = ""


class OrderBook:
    """Plans and applies order messages against ``root`` (the ``-dfp`` directory)."""

    def __init__(self, writer: WorklistWriter) -> None:
        self.writer = writer

    def plan(self, message: OrderMessage, entries: list[tuple[OrderGroup, Entry]], *,
             reapplying: bool = False) -> list[Action]:
        """Check every entry against the worklist; Hl7Error before anything is written.

        ``reapplying``: the message may have been applied before (journal recovery after a
        crash, ``replay``), and later ones may follow it again: converge instead of refusing.
        A new order replaces its entry, a change of a missing entry writes it, and a cancel or
        status change of a missing entry does nothing.
        """
        actions = []
        for group, entry in entries:
            control = message.value(Location("ORC", 1), group).strip().upper()
            current = self.locate(entry.name)
            if control in NEW:
                if (current is not None and not reapplying
                        and current.read_bytes() != self._bytes(entry, current)):
                    raise Hl7Error(f"order {entry.key[0]} already exists with other values",
                                   location="ORC-2", code=DUPLICATE_KEY)
            elif control in CHANGE | CANCEL | STATUS:
                if current is None and not reapplying:
                    raise Hl7Error(f"unknown order {entry.key[0]} (requested procedure "
                                   f"{entry.key[1]}, step {entry.key[2]})",
                                   location="ORC-3", code=UNKNOWN_KEY)
            else:
                raise Hl7Error(f"order control {control!r} is not supported",
                               location="ORC-1", code=TABLE_VALUE_NOT_FOUND, ack="AR")
            status = message.value(Location("ORC", 5), group).strip().upper()
            if control in STATUS and status not in REMOVING_STATUS | set(STEP_STATUS):
                raise Hl7Error(f"order status {status!r} is not supported", location="ORC-5",
                               code=TABLE_VALUE_NOT_FOUND)
            actions.append(Action(control, entry, current, status))
        return actions

    def apply(self, actions: list[Action]) -> list[Outcome]:
        """Make the planned changes; each is durable when this returns."""
        try:
            return [self._apply(action) for action in actions]
        except WriterError as exc:
            raise Hl7Error(f"worklist not changed: {exc}", code=INTERNAL_ERROR) from None

    def locate(self, name: str) -> Path | None:
        """The entry's file in whichever AE directory holds it (routing may have changed)."""
        with os.scandir(self.writer.root) as directories:
            for directory in directories:
                if directory.is_dir() and is_safe_ae(directory.name):
                    path = Path(directory.path) / name
                    if path.is_file():
                        return path
        return None

    def _apply(self, action: Action) -> Outcome:
        control, entry, current = action.control, action.entry, action.current
        if control in CANCEL or (control in STATUS and action.status in REMOVING_STATUS):
            return self._remove(current)
        if control in STATUS:
            if current is None:  # reapplying: removed by a later message
                return Outcome.UNCHANGED
            return self._set_status(current, STEP_STATUS[action.status])
        data = self._bytes(entry, current)
        if current is not None and current.parent.name != entry.ae:
            self.writer.write(entry.ae, entry.name, data, replace=True)
            self._remove(current)  # routed elsewhere now: the new copy is durable first
            return Outcome.CHANGED
        with self.writer.transaction(entry.ae) as transaction:
            if transaction.exists(entry.name):
                if (transaction.path / entry.name).read_bytes() == data:
                    return Outcome.UNCHANGED
                transaction.write(entry.name, data, replace=True)
                return Outcome.CHANGED
            transaction.write(entry.name, data, replace=False)
            return Outcome.CREATED

    def _remove(self, current: Path | None) -> Outcome:
        if current is None:
            return Outcome.UNCHANGED
        try:
            self.writer.remove(current.parent.name, current.name)
        except NoSuchEntry:
            return Outcome.UNCHANGED  # a resent cancel after a crash: already gone
        return Outcome.REMOVED

    def _set_status(self, current: Path, status: str) -> Outcome:
        with self.writer.transaction(current.parent.name) as transaction:
            dataset = transaction.read(current.name)
            step = dataset.ScheduledProcedureStepSequence[0]
            if step.get("ScheduledProcedureStepStatus") == status:
                return Outcome.UNCHANGED
            step.ScheduledProcedureStepStatus = status
            transaction.write(current.name, _without_meta(dataset))
            return Outcome.CHANGED

    @staticmethod
    def _bytes(entry: Entry, current: Path | None) -> bytes:
        """The entry's file bytes; a change without a Study Instance UID keeps the old one."""
        elements = entry.elements
        if entry.uid_generated and current is not None:
            try:
                old = _read(current)
            except OSError:
                old = None
            if old is not None and "StudyInstanceUID" in old:
                elements = elements.copy()
                elements.values[STUDY_INSTANCE_UID] = ("UI", str(old.StudyInstanceUID))
        return encode_entry(elements)


def _read(path: Path) -> Dataset:
    return dcmread(path, force=True, specific_tags=["StudyInstanceUID"])


def _without_meta(dataset: Dataset) -> Dataset:
    plain = Dataset()
    plain.update(dataset)
    return plain
