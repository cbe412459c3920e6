"""A prefilter over one AE's records, so a selective query never walks the whole worklist.

The matcher (``matching.py``) stays the judge; the index only narrows the records it sees. It
must never drop a record the matcher would accept: every constraint below is implied by the
matcher's own rules (docs/compat.md §4), and anything the index cannot express exactly is simply not
used (a larger candidate set, never a smaller one).

Indexed, normalised as the matcher normalises them (AE, CS, LO: leading and trailing spaces
off; one entry per value of a multi-valued element):
- PatientID (LO, wildcards off), top level;
- ScheduledStationAETitle (AE) and Modality (CS) of any SPS item (both wildcards off);
- SPS start date of any SPS item, parsed as the matcher parses it; a record with no parseable
  start date is a candidate of every date constraint.
A query item's keys must hold in the same record item; the index checks each key in any item,
which can only admit more records. Several query items are a union.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import re
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias, TypeVar

from pydicom import Dataset
from pydicom.dataelem import RawDataElement

from wlmd.dicom.rawfile import RawLevel, RawSequence
from wlmd.worklist.compact import MatchView, screens
from wlmd.worklist.keys import (
    MODALITY,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SCHEDULED_STATION_AE_TITLE,
    SPS_START_DATE,
    SPS_START_TIME,
)
from wlmd.worklist.keys import PATIENT_ID as PATIENT_ID_TAG
from wlmd.worklist.matching import parse_date, rule_for
from wlmd.worklist.query import Elements, PreparedQuery, element_vr, value_of

Date = tuple[int, int, int]
Value = TypeVar("Value", bytes, Date)
DateRange = tuple[Date | None, Date | None]  # inclusive; None: open end
PATIENT_ID = 0x00100020
# The numbers of the records filed under one value: a lone number is kept as itself, not as an
# array of one (most patient IDs have one record).
Numbers: TypeAlias = "int | array[int]"
# Serial numbers of filed records, process-wide: one is never given twice, so a cache keyed
# by it (``cache.py``) cannot answer a replaced record, nor a record of another AE's index.
_SERIALS = itertools.count(1)
_LITERAL_KEYS = (  # (tag, VR the query and the record must both use)
    ("patient", PATIENT_ID, "LO"),
    ("station", SCHEDULED_STATION_AE_TITLE, "AE"),
    ("modality", MODALITY, "CS"),
)


@dataclass(frozen=True)
class ItemFilter:
    """What one query SPS item requires; None: that key does not narrow anything."""

    stations: frozenset[bytes] | None = None
    modalities: frozenset[bytes] | None = None
    dates: tuple[DateRange, ...] | None = None


@dataclass(frozen=True)
class Prefilter:
    """What a query requires of a record, in terms the index can answer."""

    patient_ids: frozenset[bytes] | None
    items: tuple[ItemFilter, ...] | None  # None: the SPS does not narrow; else a union
    # searches of the packed matching keys (compact.screens) a match passes
    screens: tuple[re.Pattern[bytes], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RecordKeys:
    """The index entries of one record (each value once), as ``WorklistIndex.add`` files it.

    Not kept once filed: the index derives them again from the record's packed matching keys
    when it removes the record (``keys_of``), which saves an object and a tuple per record
    (some 8 MB at 100,000 records, in the supervisor and shared by every worker).
    """

    patient_ids: tuple[bytes, ...]
    stations: tuple[bytes, ...]
    modalities: tuple[bytes, ...]
    dates: tuple[Date, ...]  # empty: the record is in the undated bucket


class Filing(NamedTuple):
    """What the index files a record under: its index keys and its packed matching keys
    (``compact.pack``); carried from parsing (or the index file) to the index, then dropped."""

    keys: RecordKeys
    packed: bytes


def keys_of(packed: bytes) -> RecordKeys:
    """The index keys of a record, from its packed matching keys: the same as ``record_keys``
    of its dataset, as the packed keys hold every value the index keys are made of, read as
    the matcher reads the dataset (``MatchView``). Some 20 µs: for a removal, not a start."""
    view = MatchView.of(packed)
    patients: set[bytes] = set()
    found: tuple[set[bytes], set[bytes], set[bytes]] = (set(), set(), set())
    patient = view.value(PATIENT_ID)
    if patient is not None and patient[0] == "LO":
        patients.update(_PATIENT_ID_RULE.values(patient[1]))
    for item in view.items(SCHEDULED_PROCEDURE_STEP_SEQUENCE):
        for place, tag, vr, rule in _ITEM_KEYS:
            value = item.value(tag)
            if value is not None and value[0] == vr:
                found[place].update(rule.values(value[1]))
    dates = {date for value in found[2] if (date := parse_date(value)) is not None}
    return RecordKeys(tuple(sorted(patients)), tuple(sorted(found[0])),
                      tuple(sorted(found[1])), tuple(sorted(dates)))


def prefilter_of(query: PreparedQuery) -> Prefilter | None:
    """The prefilter implied by ``query``, or None if no indexed key narrows it.

    The screens stand in for an index only where no indexed key narrows: they search every
    record's packed keys, which costs more than matching the few candidates an index gives.
    """
    mask = query.mask
    patient_ids, items = _literal(mask, PATIENT_ID, "LO"), _sps_filter(mask)
    if patient_ids is not None or items is not None:
        return Prefilter(patient_ids, items)
    searches = screens(query)
    return Prefilter(None, None, searches) if searches else None


def _active(mask: Dataset, tag: int) -> tuple[str, bytes] | None:
    """``(VR, raw)`` of a key the matcher would use (present, not a sequence, not universal)."""
    found = value_of(mask, tag)
    if found is None or found[0] == "SQ" or rule_for(found[0]).is_universal(found[1], True):
        return None
    return found


def _literal(mask: Dataset, tag: int, vr: str) -> frozenset[bytes] | None:
    """The values a wildcard-free key requires, or None when it admits anything indexed."""
    found = _active(mask, tag)
    if found is None or found[0] != vr:
        return None
    values = rule_for(vr).values(found[1])
    if not values or any(not value for value in values):  # an empty value matches every value
        return None
    return frozenset(values)


def _sps_filter(mask: Dataset) -> tuple[ItemFilter, ...] | None:
    """One ItemFilter per query SPS item; None if some item (or the sequence) narrows nothing."""
    element = mask.get_item(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if element is None or element_vr(element) != "SQ":
        return None
    items = list(mask[SCHEDULED_PROCEDURE_STEP_SEQUENCE].value or ())
    filters = []
    for item in items:
        item_filter = ItemFilter(_literal(item, SCHEDULED_STATION_AE_TITLE, "AE"),
                                 _literal(item, MODALITY, "CS"), _date_filter(item))
        if item_filter == ItemFilter():
            return None
        filters.append(item_filter)
    return tuple(filters) or None


def _date_filter(item: Dataset) -> tuple[DateRange, ...] | None:
    """Date ranges that contain every SPS start date the matcher could accept."""
    date = _active(item, SPS_START_DATE)
    if date is None or date[0] != "DA":
        return None
    if _active(item, SPS_START_TIME) is not None:
        # Combined date-time matching uses the first value; its interval stays inside the
        # date range (a wrong VR pairing matches nothing, which any range covers).
        first = date[1].split(b"\\", 1)[0].rstrip(b" ")
        keys = [first]
    else:
        keys = rule_for("DA").values(date[1])
    if any(not key for key in keys):
        return None
    # A key that cannot be parsed matches nothing, so it adds no range.
    return tuple(found for key in keys if (found := _date_range(key)) is not None)


def _date_range(key: bytes) -> DateRange | None:
    """``DcmAttributeMatching::Range`` of a DA key as parsed dates; None if it matches nothing."""
    first_text, dash, second_text = key.partition(b"-")
    if not dash:
        single = parse_date(key)
        return None if single is None else (single, single)
    first = parse_date(first_text) if first_text else None
    second = parse_date(second_text) if second_text else None
    if (first_text and first is None) or (second_text and second is None):
        return None
    return first, second


def record_keys(dataset: Dataset | Elements) -> RecordKeys:
    """Every value of ``dataset`` the index files it under."""
    if type(dataset) is RawLevel:
        walked = _walked_record_keys(dataset)
        if walked is not None:
            return walked
    found: dict[str, set[bytes]] = {"patient": set(), "station": set(), "modality": set()}
    _collect(dataset, found, ("patient",))
    dates: set[Date] = set()
    for item in _sps_items(dataset):
        _collect(item, found, ("station", "modality"))
        value = value_of(item, SPS_START_DATE)
        if value is not None and value[0] == "DA":
            dates.update(d for v in rule_for("DA").values(value[1])
                         if (d := parse_date(v)) is not None)
    return RecordKeys(tuple(sorted(found["patient"])), tuple(sorted(found["station"])),
                      tuple(sorted(found["modality"])), tuple(sorted(dates)))


# The keys module's tag objects, which the walker keys elements with (``rawfile.share_tags``):
# a dict finds them by identity. ``tag_key`` here would run before the walker shares them, and
# give objects that every lookup compares with ``BaseTag.__eq__`` (4 calls a file).
_PATIENT_ID_KEY = PATIENT_ID_TAG
_SPS_KEY = SCHEDULED_PROCEDURE_STEP_SEQUENCE
# what each SPS item gives: stations, modalities, start dates (in that order), read by VR rule
_ITEM_KEYS = tuple((place, tag, vr, rule_for(vr)) for place, (tag, vr) in enumerate(
    ((SCHEDULED_STATION_AE_TITLE, "AE"), (MODALITY, "CS"), (SPS_START_DATE, "DA"))))
_PATIENT_ID_RULE = rule_for("LO")


def _walked_record_keys(level: RawLevel) -> RecordKeys | None:
    """``record_keys`` of a level the first start's walker read (raw elements with their VR,
    sequences as ``RawSequence``), read straight from them; None for anything else.

    Values are gathered in lists, made sets only where there are several (nearly every
    record has one value of each key: run for every file of a first start)."""
    patients: list[bytes] = []
    found: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    element = level.get(_PATIENT_ID_KEY)
    if element is not None:
        if type(element) is not RawDataElement or not element[1]:
            return None
        if element[1] == "LO":
            patients = _PATIENT_ID_RULE.values(element[3] or b"")
    steps = level.get(_SPS_KEY)
    if steps is not None:
        if type(steps) is not RawSequence:
            return None
        for item in steps.value:
            for place, key, vr, rule in _ITEM_KEYS:
                element = item.get(key)
                if element is None:
                    continue
                if type(element) is not RawDataElement or not element[1]:
                    return None
                if vr == element[1]:
                    found[place].extend(rule.values(element[3] or b""))
    dates = [date for value in found[2] if (date := parse_date(value)) is not None]
    return RecordKeys(_distinct(patients), _distinct(found[0]), _distinct(found[1]),
                      _distinct(dates))


def _distinct(values: list[Value]) -> tuple[Value, ...]:
    """Each of ``values`` once, in order (the tuples ``record_keys`` gives)."""
    return tuple(values) if len(values) < 2 else tuple(sorted(set(values)))


def _collect(dataset: Dataset | Elements, found: dict[str, set[bytes]],
             kinds: Iterable[str]) -> None:
    """Add the normalised values of the literal keys ``kinds`` that ``dataset`` holds."""
    for kind, tag, vr in _LITERAL_KEYS:
        if kind not in kinds:
            continue
        value = value_of(dataset, tag)
        if value is not None and value[0] == vr:
            found[kind].update(rule_for(vr).values(value[1]))


def _sps_items(dataset: Dataset | Elements) -> list[Dataset | Elements]:
    """The record's SPS items, as the matcher sees them."""
    element = dataset.get_item(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if element is None or element_vr(element) != "SQ":
        return []
    return list(dataset[SCHEDULED_PROCEDURE_STEP_SEQUENCE].value or ())


class WorklistIndex:
    """Record names by indexed value, for one called AE; updated record by record.

    Inside, a record is a number (its slot in ``_names``, reused once free) and each value
    files the numbers of its records in an ``array``: four bytes a record, where a set of
    names took some fifty (24 MB at 100,000 records, every worker's share of the supervisor's
    memory). Reading an array writes nothing to the memory it shares with the supervisor;
    iterating a set of names writes each name's reference count.
    """

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[bytes, Numbers]] = {
            "patient": {}, "station": {}, "modality": {}}
        self._by_date: dict[Date, Numbers] = {}
        self._dates: list[Date] = []  # the keys of _by_date, sorted
        self._undated: array[int] = array("I")
        self._number: dict[str, int] = {}  # filed record name -> its number
        self._names: list[str | None] = []  # by number; None: free
        self._serials = array("Q")  # by number: the serial of the record filed there
        self._free: list[int] = []
        self._packed = PackedKeys()

    def __len__(self) -> int:
        return len(self._number)

    def add(self, name: str, keys: RecordKeys, packed: bytes) -> int:
        """File record ``name`` under ``keys`` and its packed matching keys (``compact.pack``),
        replacing what was filed under that name; its number."""
        self.remove(name)
        if self._free:
            number = self._free.pop()
            self._names[number] = name
            self._serials[number] = next(_SERIALS)
        else:
            number = len(self._names)
            self._names.append(name)
            self._serials.append(next(_SERIALS))
        self._number[name] = number
        self._packed.add(number, packed)
        for kind, values in (("patient", keys.patient_ids), ("station", keys.stations),
                             ("modality", keys.modalities)):
            table = self._by_kind[kind]
            for value in values:
                _file(table, value, number)
        if not keys.dates:
            self._undated.append(number)
        for date in keys.dates:
            if _file(self._by_date, date, number):
                bisect.insort(self._dates, date)
        return number

    def add_all(self, records: Iterable[tuple[str, RecordKeys, bytes]]) -> None:
        """``add`` of each of ``records`` (distinct names), into an index that never
        filed any.

        A restart files 100,000 records here: each value's numbers are gathered in a list
        and made an array once, which costs half of filing them one by one; the serials are
        taken at once, and the packed keys are sealed a chunk at a time.
        """
        if self._names:
            for record in records:
                self.add(*record)
            return
        gathered: tuple[dict[Any, list[int]], ...] = ({}, {}, {}, {})
        patients, stations, modalities, dates = gathered
        names, number_of, packed_keys = self._names, self._number, self._packed
        undated = self._undated
        for number, (name, keys, packed) in enumerate(records):
            names.append(name)
            number_of[name] = number
            packed_keys.add(number, packed)  # sealed as they come: no peak of 100,000 bytes
            for table, values in ((patients, keys.patient_ids), (stations, keys.stations),
                                  (modalities, keys.modalities), (dates, keys.dates)):
                for value in values:
                    numbers = table.get(value)
                    if numbers is None:
                        table[value] = [number]
                    else:
                        numbers.append(number)
            if not keys.dates:
                undated.append(number)
        self._serials.extend(itertools.islice(_SERIALS, len(names)))
        tables: tuple[dict[Any, Numbers], ...] = (
            self._by_kind["patient"], self._by_kind["station"], self._by_kind["modality"],
            self._by_date)
        for target, lists in zip(tables, gathered, strict=True):
            for value, numbers in lists.items():
                target[value] = numbers[0] if len(numbers) == 1 else array("I", numbers)
        self._dates = sorted(self._by_date)

    def renumbered(self, names: list[str]) -> WorklistIndex:
        """A new index filing the same records, numbered in the order of ``names`` (every
        filed name once; the objects given become the index's own).

        Made from this index's tables, number for number (the records' keys are not kept:
        deriving them again would cost some 30 µs a record), with new serials.
        """
        new = WorklistIndex()
        renumber = array("I", [0]) * len(self._names)
        for number, name in enumerate(names):
            old = self._number[name]
            renumber[old] = number
            new._names.append(name)
            new._number[name] = number
            new._serials.append(next(_SERIALS))
            new._packed.add(number, self._packed.get(old))
        if not len(names) == len(new._number) == len(self._number):
            raise ValueError("renumbered: names must be the filed names, each once")

        def moved(numbers: Numbers) -> Numbers:
            if isinstance(numbers, int):
                return renumber[numbers]
            return array("I", sorted(renumber[number] for number in numbers))

        for kind, table in self._by_kind.items():
            new._by_kind[kind] = {value: moved(numbers) for value, numbers in table.items()}
        new._by_date = {date: moved(numbers) for date, numbers in self._by_date.items()}
        new._dates = list(self._dates)
        new._undated = array("I", sorted(renumber[number] for number in self._undated))
        return new

    @property
    def packed_keys(self) -> PackedKeys:
        """Where the packed matching keys are kept (the preload may map them: ``mapped.py``)."""
        return self._packed

    def packed(self, name: str) -> bytes:
        """The packed matching keys filed for record ``name`` (KeyError if it is not filed)."""
        return self._packed.get(self._number[name])

    def filing(self, name: str) -> Filing:
        """What record ``name`` is filed under (KeyError if it is not filed); its keys are
        derived anew (``keys_of``)."""
        packed = self.packed(name)
        return Filing(keys_of(packed), packed)

    def number(self, name: str) -> int:
        """The number record ``name`` is filed under (KeyError if it is not filed)."""
        return self._number[name]

    def packed_at(self, number: int) -> bytes:
        """The packed matching keys of the record filed under ``number``."""
        return self._packed.get(number)

    def serials(self) -> array[int]:
        """By number, the serial of the record filed there: unique in this process, a new
        one whenever a record is filed (read only; the array itself)."""
        return self._serials

    def remove(self, name: str) -> None:
        """Forget record ``name`` if it is filed."""
        number = self._number.pop(name, None)
        if number is None:
            return
        keys = keys_of(self._packed.get(number))
        self._names[number] = None
        self._free.append(number)
        self._packed.remove(number)
        for kind, values in (("patient", keys.patient_ids), ("station", keys.stations),
                             ("modality", keys.modalities)):
            table = self._by_kind[kind]
            for value in values:
                _discard(table, value, number)
        if not keys.dates:
            self._undated.remove(number)
        for date in keys.dates:
            if _discard(self._by_date, date, number):
                del self._dates[bisect.bisect_left(self._dates, date)]

    def candidates(self, prefilter: Prefilter) -> set[str]:
        """Names of every record that can match ``prefilter`` (a superset of the matches)."""
        names = self._names
        return {name for number in self.candidate_numbers(prefilter)
                if (name := names[number]) is not None}

    def candidate_numbers(self, prefilter: Prefilter) -> set[int]:
        """``candidates`` as the records' numbers: reading them writes to no record, name
        or entry, which a forked worker shares with its supervisor."""
        groups = []
        if prefilter.patient_ids is not None:
            groups.append(self._values("patient", prefilter.patient_ids))
        if prefilter.screens:
            groups.append([self._packed.passing(prefilter.screens)])
        result = _narrow(groups, len(self._names))
        if prefilter.items is None:
            assert result is not None  # prefilter_of never builds an empty Prefilter
            return result
        union: set[int] = set()
        for item in prefilter.items:
            found = self._item_candidates(item, result)
            union = found if not union else union | found
        return union

    def _item_candidates(self, item: ItemFilter, within: set[int] | None) -> set[int]:
        """Numbers of records that satisfy every key of one query item (each key in any
        record item)."""
        groups: list[list[Collection[int]]] = [] if within is None else [[within]]
        if item.stations is not None:
            groups.append(self._values("station", item.stations))
        if item.modalities is not None:
            groups.append(self._values("modality", item.modalities))
        if item.dates is not None:
            groups.append(self._date_groups(item.dates))
        result = _narrow(groups, len(self._names))
        assert result is not None  # an ItemFilter that narrows nothing is never built
        return result

    def _values(self, kind: str, values: frozenset[bytes]) -> list[Collection[int]]:
        table = self._by_kind[kind]
        return [_as_numbers(table[value]) for value in values if value in table]

    def _date_groups(self, ranges: tuple[DateRange, ...]) -> list[Collection[int]]:
        """The records of every indexed date inside any of ``ranges``, and the undated ones."""
        groups: list[Collection[int]] = [self._undated]
        seen: set[Date] = set()
        for first, second in ranges:
            start = 0 if first is None else bisect.bisect_left(self._dates, first)
            stop = len(self._dates) if second is None else bisect.bisect_right(self._dates,
                                                                                 second)
            for date in self._dates[start:stop]:
                if date not in seen:
                    seen.add(date)
                    groups.append(_as_numbers(self._by_date[date]))
        return groups


def _narrow(groups: list[list[Collection[int]]], size: int) -> set[int] | None:
    """The intersection of unions (each group: collections of which a number must be in one;
    numbers below ``size``). None if there is no group.

    The work follows the size of the groups a query names, never of the worklist. Several
    groups are intersected by counting, in one byte per number, the groups each number was
    found in, smallest group first: a set of a whole group's numbers (a day's records) would
    place thousands of int objects on memory pages that a fresh worker shares with its
    supervisor, and un-share a megabyte of them.
    """
    if not groups:
        return None
    groups.sort(key=lambda parts: sum(map(len, parts)))
    if len(groups) == 1:
        return set(itertools.chain.from_iterable(groups[0]))
    counts = bytearray(size)
    last = len(groups) - 1
    for level, parts in enumerate(groups[:last]):
        found = False
        for number in itertools.chain.from_iterable(parts):
            if counts[number] == level:
                counts[number] = level + 1
                found = True
        if not found:
            return set()
    return {number for number in itertools.chain.from_iterable(groups[last])
            if counts[number] == last}


def _file(table: dict[Any, Numbers], key: object, number: int) -> bool:
    """Add ``number`` to ``table[key]``; True if that created the entry."""
    numbers = table.get(key)
    if numbers is None:
        table[key] = number
        return True
    if isinstance(numbers, int):
        if numbers != number:
            table[key] = array("I", (numbers, number))
    else:
        numbers.append(number)
    return False


def _discard(table: dict[Any, Numbers], key: object, number: int) -> bool:
    """Remove ``number`` from ``table[key]``; True if that emptied (and deleted) the entry."""
    numbers = table.get(key)
    if numbers is None:
        return False
    if isinstance(numbers, int):
        if numbers != number:
            return False
    else:
        with contextlib.suppress(ValueError):
            numbers.remove(number)
        if len(numbers) > 1:
            return False
        if numbers:
            table[key] = numbers[0]
            return False
    del table[key]
    return True


def _as_numbers(numbers: Numbers) -> Collection[int]:
    """The numbers of one table entry as a collection (a tuple for a lone number)."""
    return (numbers,) if isinstance(numbers, int) else numbers


class PackedKeys:
    """The packed matching keys of every record in a few large ``bytes``, searched in C: the
    only copy of them, which the matcher reads too (``get``). Records are numbers
    (``WorklistIndex``'s).

    A fresh worker shares its records with the supervisor until it writes to their memory
    pages, and merely reading a record's packed keys writes a reference count: a screen run
    record by record un-shared some 50 MB (13,000 page faults, most of a fresh worker's first
    query). Here records are packed ``CHUNK`` at a time into one immutable ``bytes``, so a
    screen touches a few objects; a chunk is never rewritten (a worker never copies it) until
    half of its segments are dead. The latest additions wait in ``_recent``. The preload may
    move the chunks into a shared file mapping (``mapped.py``); a chunk rebuilt later is made
    in the heap again.
    """

    CHUNK = 2048
    NOWHERE = -1  # in ``_place``: the record has no sealed segment

    def __init__(self) -> None:
        self._chunks: list[bytes | memoryview] = []  # memoryview: moved into a mapping
        self._starts: list[array[int]] = []  # per chunk: where each segment starts, and the end
        self._numbers: list[array[int]] = []  # per chunk: the record of each segment
        # by record number: its live segment (chunk * CHUNK + segment) or NOWHERE
        self._place: array[int] = array("q")
        self._live = 0
        self._dead = 0
        self._recent: dict[int, bytes] = {}

    def add(self, number: int, packed: bytes) -> None:
        """Keep ``packed`` as the keys of record ``number`` (which the index has just
        removed)."""
        self._recent[number] = packed
        if len(self._recent) >= self.CHUNK:
            self._seal(list(self._recent.items()))
            self._recent.clear()

    def get(self, number: int) -> bytes:
        """The keys of record ``number`` (KeyError if none are kept); a copy of its segment."""
        recent = self._recent.get(number)
        if recent is not None:
            return recent
        place = self._place[number] if number < len(self._place) else self.NOWHERE
        if place == self.NOWHERE:
            raise KeyError(number)
        chunk, segment = divmod(place, self.CHUNK)
        starts = self._starts[chunk]
        return bytes(self._chunks[chunk][starts[segment]:starts[segment + 1]])

    def sealed(self) -> list[bytes]:
        """The chunks still in the heap (``mapped.Sealed``): every chunk is sealed."""
        return [chunk for chunk in self._chunks if isinstance(chunk, bytes)]

    def moved(self, views: list[memoryview]) -> None:
        """Read the chunks ``sealed`` gave from ``views`` instead (``mapped.Sealed``)."""
        replacing = iter(views)
        self._chunks = [next(replacing) if isinstance(chunk, bytes) else chunk
                        for chunk in self._chunks]

    def remove(self, number: int) -> None:
        """Forget the keys of record ``number``."""
        if self._recent.pop(number, None) is not None or number >= len(self._place) \
                or self._place[number] == self.NOWHERE:
            return
        self._place[number] = self.NOWHERE
        self._live -= 1
        self._dead += 1
        if self._dead > self._live:
            self._repack()

    def passing(self, tests: tuple[re.Pattern[bytes], ...]) -> set[int]:
        """Numbers of the records whose packed keys every search finds something in."""
        first, rest = tests[0], tests[1:]
        found: set[int] = set()
        place = self._place
        for chunk_number, chunk in enumerate(self._chunks):
            starts, numbers = self._starts[chunk_number], self._numbers[chunk_number]
            at = 0
            while (hit := first.search(chunk, at)) is not None:
                segment = bisect.bisect_right(starts, hit.start()) - 1
                start, end = starts[segment], starts[segment + 1]
                if hit.end() > end:  # runs into the next segment: not a hit of this one
                    at = hit.start() + 1
                    continue
                at = end
                number = numbers[segment]
                if (place[number] == chunk_number * self.CHUNK + segment
                        and all(test.search(chunk, start, end) for test in rest)):
                    found.add(number)
        found.update(number for number, packed in self._recent.items()
                     if all(test.search(packed) for test in tests))
        return found

    def _seal(self, records: list[tuple[int, bytes]]) -> None:
        """Pack ``records`` (at most ``CHUNK``) into a new chunk."""
        chunk_number = len(self._chunks)
        numbers = array("I", [number for number, _ in records])
        place = self._place
        if len(numbers) and (top := max(numbers) + 1) > len(place):
            place.extend(array("q", [self.NOWHERE]) * (top - len(place)))
        first = chunk_number * self.CHUNK
        for segment, number in enumerate(numbers):
            place[number] = first + segment
        self._live += len(records)
        self._chunks.append(b"".join(packed for _, packed in records))
        self._starts.append(array("L", itertools.accumulate(
            (len(packed) for _, packed in records), initial=0)))
        self._numbers.append(numbers)

    def _repack(self) -> None:
        """Rebuild the chunks from their live segments (when half of them are dead)."""
        live = [(number, self.get(number)) for number, place in enumerate(self._place)
                if place != self.NOWHERE]
        self._chunks, self._starts, self._numbers = [], [], []
        self._place, self._live, self._dead = array("q"), 0, 0
        for first in range(0, len(live), self.CHUNK):
            self._seal(live[first:first + self.CHUNK])
