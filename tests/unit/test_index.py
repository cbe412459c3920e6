"""The prefilter index: never drops a record the matcher accepts, and does narrow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from wlmd.worklist.compact import pack
from wlmd.worklist.index import (
    PackedKeys,
    RecordKeys,
    WorklistIndex,
    keys_of,
    prefilter_of,
    record_keys,
)
from wlmd.worklist.matching import matches
from wlmd.worklist.query import PreparedQuery
from wlmd.worklist.records import parse_worklist_file
from wlmd.worklist.walker import walk

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "worklists").rglob("*.wl"))


def raw(keyword: str, vr: str, value: bytes) -> RawDataElement:
    return RawDataElement(Tag(keyword), vr, len(value), value, 0, False, True)


def dataset(elements: list[RawDataElement | DataElement]) -> Dataset:
    ds = Dataset()
    for element in elements:
        ds[element.tag] = element
    return ds


def sps(items: list[Dataset]) -> DataElement:
    return DataElement(Tag("ScheduledProcedureStepSequence"), "SQ", Sequence(items))


IDS = [b"A", b"B", b" A ", b"A\\B", b"", b"*", b"A*", b"\\", b"B\\"]
STATIONS = [b"S1", b"S2", b" S1 ", b"S1\\S2", b"", b"*", b"S?", b"S1\\"]
MODALITIES = [b"CT", b"MR", b"CT\\MR", b"", b"*", b" CT"]
DATES = [b"20240101", b"20240102", b"20240103 ", b"2024.01.02", b"junk", b"", b"20240101\\20240103",
         b"20241301", b" 20240102", b"20240101-20240102", b"-20240102", b"20240102-", b"-",
         b"x-20240101", b"20240103\\20240101", b"\\20240102"]
TIMES = [b"", b"1000", b"0900-1100", b"-1000", b"junk", b"0000", b"2359"]


def maybe(key: str, vrs: list[str], values: list[bytes]) -> st.SearchStrategy:
    """An optional raw element, usually with the right VR, sometimes another."""
    element = st.builds(lambda vr, value: raw(key, vr, value), st.sampled_from(vrs),
                        st.sampled_from(values))
    return st.one_of(st.none(), element, element, element)  # mostly present


def level(*strategies: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(*strategies).map(lambda found: dataset([e for e in found if e is not None]))


ITEM = level(maybe("ScheduledStationAETitle", ["AE", "AE", "AE", "CS"], STATIONS),
             maybe("Modality", ["CS", "CS", "CS", "SH"], MODALITIES),
             maybe("ScheduledProcedureStepStartDate", ["DA", "DA", "DA", "LO"], DATES),
             maybe("ScheduledProcedureStepStartTime", ["TM", "TM", "TM", "SH"], TIMES))


def with_sps(strategy: st.SearchStrategy, max_items: int) -> st.SearchStrategy:
    """A level plus an optional SPS sequence of up to ``max_items`` items."""
    items = st.one_of(st.none(), st.lists(ITEM, max_size=max_items),
                      st.lists(ITEM, min_size=1, max_size=max_items))

    def build(ds: Dataset, found: list[Dataset] | None) -> Dataset:
        if found is not None:
            ds[Tag("ScheduledProcedureStepSequence")] = sps(found)
        return ds

    return st.builds(build, strategy, items)


RECORD = with_sps(level(maybe("PatientID", ["LO", "LO", "LO", "SH"], IDS)), 2)
QUERY = with_sps(level(maybe("PatientID", ["LO", "LO", "LO", "SH"], IDS)), 2)


@settings(max_examples=300, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=8), masks=st.lists(QUERY, min_size=1,
                                                                        max_size=4))
def test_prefilter_never_drops_a_match(records: list[Dataset], masks: list[Dataset]) -> None:
    index = WorklistIndex()
    for number, record in enumerate(records):
        index.add(str(number), record_keys(record), pack(record))
    for mask in masks:
        query = PreparedQuery(mask, unsupported_removed=False)
        expected = {str(n) for n, record in enumerate(records) if matches(query, record)}
        prefilter = prefilter_of(query)
        if prefilter is not None:
            assert expected <= index.candidates(prefilter)


@settings(max_examples=100, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=8), mask=QUERY,
       dropped=st.data())
def test_removed_records_leave_the_index(records: list[Dataset], mask: Dataset,
                                         dropped: st.DataObject) -> None:
    index = WorklistIndex()
    for number, record in enumerate(records):
        index.add(str(number), record_keys(record), pack(record))
    gone = dropped.draw(st.sets(st.sampled_from([str(n) for n in range(len(records))])))
    for name in gone:
        index.remove(name)
    assert len(index) == len(records) - len(gone)
    query = PreparedQuery(mask, unsupported_removed=False)
    prefilter = prefilter_of(query)
    if prefilter is not None:
        candidates = index.candidates(prefilter)
        assert not candidates & gone
        expected = {str(n) for n, record in enumerate(records)
                    if str(n) not in gone and matches(query, record)}
        assert expected <= candidates


@settings(max_examples=100, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=8), masks=st.lists(QUERY, min_size=1,
                                                                        max_size=4),
       dropped=st.data())
def test_filing_all_at_once_gives_the_candidates_of_filing_one_by_one(
        records: list[Dataset], masks: list[Dataset], dropped: st.DataObject) -> None:
    """``add_all`` (a restart's filing), then changes record by record, as ``add`` alone;
    chunks of 3 packed keys, so that both seal some."""
    filed = [(str(number), *_filed(record)) for number, record in enumerate(records)]
    one_by_one, all_at_once = WorklistIndex(), WorklistIndex()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PackedKeys, "CHUNK", 3)
        for name, keys, packed in filed:
            one_by_one.add(name, keys, packed)
        all_at_once.add_all(filed)
        _check_filing(filed, one_by_one, all_at_once, masks, dropped)


def _check_filing(filed: list[tuple[str, RecordKeys, bytes]], one_by_one: WorklistIndex,
                  all_at_once: WorklistIndex, masks: list[Dataset],
                  dropped: st.DataObject) -> None:
    assert len(set(all_at_once.serials())) == len(filed)
    gone = dropped.draw(st.sets(st.sampled_from([name for name, _, _ in filed])))
    for index in (one_by_one, all_at_once):
        for name in gone:
            index.remove(name)
        index.add("new", *filed[0][1:])
        index.add_all(filed[-1:])  # into an index that is not empty: filed one by one
    assert len(all_at_once) == len(one_by_one) == len(filed) - len(gone - {filed[-1][0]}) + 1
    for mask in masks:
        prefilter = prefilter_of(PreparedQuery(mask, unsupported_removed=False))
        if prefilter is not None:
            assert all_at_once.candidates(prefilter) == one_by_one.candidates(prefilter)
    assert {name: all_at_once.packed(name) for name, _, _ in filed if name not in gone} == \
        {name: one_by_one.packed(name) for name, _, _ in filed if name not in gone}


def _filed(ds: Dataset) -> tuple[RecordKeys, bytes]:
    return record_keys(ds), pack(ds)


@settings(max_examples=300, deadline=None)
@given(record=RECORD)
def test_index_keys_derived_from_the_packed_keys_are_the_datasets(record: Dataset) -> None:
    """``remove`` un-files a record under the keys ``keys_of`` derives: exactly those filed."""
    assert keys_of(pack(record)) == record_keys(record)


def test_index_keys_derived_from_the_packed_keys_of_the_examples_are_theirs() -> None:
    assert len(EXAMPLES) > 20
    for path in EXAMPLES:
        data = path.read_bytes()
        walked = walk(data)
        assert walked is not None, path  # the examples take the first start's fast path
        parsed = parse_worklist_file(data)[0]
        keys = record_keys(parsed)
        assert keys.patient_ids and keys.stations and keys.dates, path  # something to compare
        assert keys_of(pack(walked[0])) == keys_of(pack(parsed)) == record_keys(walked[0]) \
            == keys, path


@settings(max_examples=100, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=8), masks=st.lists(QUERY, min_size=1,
                                                                        max_size=4),
       data=st.data())
def test_a_renumbered_index_files_the_same_records_in_the_order_given(
        records: list[Dataset], masks: list[Dataset], data: st.DataObject) -> None:
    """Compaction's renumbering: same candidates and packed keys, numbers in the new order,
    new serials, and records still removable and addable afterwards."""
    index = WorklistIndex()
    for number, record in enumerate(records):
        index.add(str(number), *_filed(record))
    gone = data.draw(st.sets(st.sampled_from([str(n) for n in range(len(records))])))
    for name in gone:
        index.remove(name)
    order = data.draw(st.permutations([str(n) for n in range(len(records)) if str(n) not in gone]))
    renumbered = index.renumbered(list(order))
    assert [renumbered.number(name) for name in order] == list(range(len(order)))
    assert {name: renumbered.packed(name) for name in order} == \
        {name: index.packed(name) for name in order}
    assert not set(renumbered.serials()) & set(index.serials())
    for mask in masks:
        prefilter = prefilter_of(PreparedQuery(mask, unsupported_removed=False))
        if prefilter is not None:
            assert renumbered.candidates(prefilter) == index.candidates(prefilter)
    for changed in (renumbered, index):
        for name in order[:2]:
            changed.remove(name)
        changed.add("new", *_filed(records[0]))
    for mask in masks:
        prefilter = prefilter_of(PreparedQuery(mask, unsupported_removed=False))
        if prefilter is not None:
            assert renumbered.candidates(prefilter) == index.candidates(prefilter)
    with pytest.raises(ValueError, match="filed names"):
        index.renumbered([])
    with pytest.raises(ValueError, match="filed names"):
        index.renumbered(["new", "new", *(name for name in order[2:])])


def record(patient: bytes, station: bytes, modality: bytes, date: bytes) -> Dataset:
    item = dataset([raw("ScheduledStationAETitle", "AE", station), raw("Modality", "CS", modality),
                    raw("ScheduledProcedureStepStartDate", "DA", date)])
    return dataset([raw("PatientID", "LO", patient), sps([item])])


def query(patient: bytes = b"", station: bytes = b"", modality: bytes = b"", date: bytes = b"",
          time: bytes = b"") -> PreparedQuery:
    item = dataset([raw("ScheduledStationAETitle", "AE", station), raw("Modality", "CS", modality),
                    raw("ScheduledProcedureStepStartDate", "DA", date),
                    raw("ScheduledProcedureStepStartTime", "TM", time)])
    return PreparedQuery(dataset([raw("PatientID", "LO", patient), sps([item])]), False)


def test_each_key_narrows() -> None:
    index = WorklistIndex()
    index.add("a", *_filed(record(b"P1", b"S1", b"CT", b"20240101")))
    index.add("b", *_filed(record(b"P2 ", b"S2", b"MR", b"20240102")))
    index.add("c", *_filed(record(b"P3", b"S1\\S3", b"CT", b"20240103")))
    index.add("undated", *_filed(record(b"P4", b"S1", b"CT", b"soon")))

    def candidates(q: PreparedQuery) -> set[str]:
        prefilter = prefilter_of(q)
        assert prefilter is not None
        return index.candidates(prefilter)

    assert prefilter_of(query()) is None
    assert prefilter_of(query(b"*", b"*", b"*")) is None  # universal keys narrow nothing
    assert candidates(query(patient=b"P2")) == {"b"}
    assert candidates(query(patient=b"P1\\P3")) == {"a", "c"}
    assert candidates(query(station=b" S3 ")) == {"c"}
    # the date index keeps "undated" a candidate (the matcher decides); no screen runs where
    # an indexed key narrows
    assert candidates(query(station=b"S1", modality=b"CT", date=b"20240103")) == {"c",
                                                                                   "undated"}
    assert candidates(query(date=b"20240102-")) == {"b", "c", "undated"}
    assert candidates(query(date=b"-20240101", time=b"0800-")) == {"a", "undated"}
    assert candidates(query(patient=b"P9", station=b"S1")) == set()
    index.remove("c")
    assert candidates(query(station=b"S3")) == set()
    index.add("a", *_filed(record(b"P1", b"S2", b"CT", b"20240101")))  # a file that changed
    assert candidates(query(station=b"S1")) == {"undated"}


def test_a_value_filed_under_one_then_several_then_no_record_finds_exactly_those() -> None:
    """A lone name is kept without a set: growing and shrinking must keep the exact names."""
    index = WorklistIndex()

    def candidates(patient: bytes) -> set[str]:
        prefilter = prefilter_of(query(patient=patient))
        assert prefilter is not None
        return index.candidates(prefilter)

    index.add("a", *_filed(record(b"P1", b"S1", b"CT", b"20240101")))
    index.add("a", *_filed(record(b"P1", b"S1", b"CT", b"20240101")))  # the same file again
    assert candidates(b"P1") == {"a"}
    index.add("b", *_filed(record(b"P1", b"S1", b"CT", b"20240101")))
    index.add("c", *_filed(record(b"P1", b"S2", b"CT", b"20240102")))
    assert candidates(b"P1") == {"a", "b", "c"}
    index.remove("a")
    index.remove("c")
    assert candidates(b"P1") == {"b"}
    dated = prefilter_of(query(date=b"20240102"))
    assert dated is not None and index.candidates(dated) == set()  # the day "c" alone had
    index.remove("b")
    assert candidates(b"P1") == set()
    index.add("d", *_filed(record(b"P1", b"S1", b"CT", b"20240101")))
    assert candidates(b"P1") == {"d"}


def test_packed_keys_find_every_record_through_chunks_removals_and_repacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PackedKeys, "CHUNK", 3)
    packed = PackedKeys()
    kept: dict[int, bytes] = {}
    for number in range(20):  # six sealed chunks and two recent records
        kept[number] = b"<%d>" % number + (b"AB" if number % 2 else b"A")
        packed.add(number, kept[number])
    for number in range(0, 12, 3):  # dead segments; the fourth removal repacks nothing yet
        packed.remove(number)
        del kept[number]
    kept[1] = b"<1>B"  # a changed record: its old segment dies
    packed.remove(1)
    packed.add(1, kept[1])
    for search in (b"AB", b"A", b"A<", b"B", b"<1>", b"<1", b"ZZ"):
        tests = (re.compile(re.escape(search)),)
        assert packed.passing(tests) == {number for number, keys in kept.items() if search in keys}
    # several searches must all find something in the same record
    both = (re.compile(b"A"), re.compile(b"<1"))
    assert packed.passing(both) == {number for number, keys in kept.items()
                                    if b"A" in keys and b"<1" in keys}
    assert {number: packed.get(number) for number in kept} == kept  # sealed and recent alike
    with pytest.raises(KeyError):
        packed.get(0)
    for number in list(kept)[:-2]:  # more than half dead: repacked into fresh chunks
        packed.remove(number)
        del kept[number]
    assert packed.passing((re.compile(b"<"),)) == set(kept)
    assert {number: packed.get(number) for number in kept} == kept
