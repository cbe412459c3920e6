"""The response cache: outcomes by record serial, bounded in bytes, and tighter for a query
asked once."""

from __future__ import annotations

from pathlib import Path

from tests.support.worklists import AE, add
from wlmd.worklist.cache import NO_MATCH, OUTCOME_OVERHEAD, ResponseCache
from wlmd.worklist.store import WorklistStore

TS = "1.2.840.10008.1.2"


def test_a_query_asked_once_keeps_only_a_few_answers() -> None:
    cost = OUTCOME_OVERHEAD + 100
    cache = ResponseCache(max_bytes=10 * cost, max_first_bytes=2 * cost)
    shape = cache.shape(b"q", TS)
    for serial in range(4):
        cache.keep(shape, serial, bytes(100))
    assert sorted(shape.answers) == [0, 1] and cache.size == 2 * cost
    again = cache.shape(b"q", TS)
    assert again is shape
    for serial in range(2, 4):
        cache.keep(again, serial, bytes(100))
    cache.keep(again, 4, NO_MATCH)
    assert sorted(again.answers) == [0, 1, 2, 3, 4] and again.answers[4] is NO_MATCH
    assert cache.size == 5 * cost - 100


def test_the_byte_bound_drops_the_least_recently_asked_queries_first() -> None:
    cost = OUTCOME_OVERHEAD + 100
    cache = ResponseCache(max_bytes=5 * cost, max_first_bytes=0)
    shapes = []
    for key in (b"a", b"b"):
        cache.shape(key, TS)
        shapes.append(shape := cache.shape(key, TS))
        for serial in range(2):
            cache.keep(shape, serial, bytes(100))
    old, recent = shapes
    cache.shape(b"a", TS)  # asked again: now the most recent
    for serial in range(2, 4):
        cache.keep(old, serial, bytes(100))
    assert recent.answers == {} and len(old.answers) == 4
    assert cache.size == 4 * cost


def test_a_query_whose_answers_do_not_fit_keeps_what_fitted() -> None:
    cost = OUTCOME_OVERHEAD + 100
    cache = ResponseCache(max_bytes=3 * cost, max_first_bytes=0)
    cache.shape(b"big", TS)
    shape = cache.shape(b"big", TS)
    for serial in range(10):
        cache.keep(shape, serial, bytes(100))
    assert sorted(shape.answers) == [0, 1, 2] and cache.size == 3 * cost


def test_retain_forgets_the_answers_of_records_no_longer_candidates() -> None:
    cost = OUTCOME_OVERHEAD + 100
    cache = ResponseCache(max_bytes=4 * cost, max_first_bytes=0)
    cache.shape(b"q", TS)
    shape = cache.shape(b"q", TS)
    for serial in range(4):
        cache.keep(shape, serial, bytes(100))
    cache.keep(shape, 4, bytes(100))  # full: a current answer finds no room
    assert 4 not in shape.answers
    cache.retain(shape, {1, 3, 4})  # records 0 and 2 changed (new serials) or went
    assert sorted(shape.answers) == [1, 3] and cache.size == 2 * cost
    cache.keep(shape, 4, bytes(100))
    assert sorted(shape.answers) == [1, 3, 4] and cache.size == 3 * cost


def test_a_changed_record_gets_a_new_serial(root: Path) -> None:
    """What the cache keys outcomes by: the same for an unchanged file, new for a changed one,
    and never the serial of another record."""
    add(root, "a.wl", accession="A")
    add(root, "b.wl", accession="B")
    store = WorklistStore(root, file_reject=True)

    def serials() -> dict[str, int]:
        candidates = store.candidates(AE, None)
        return {candidates.record(number).name: candidates.serials[number]
                for number in candidates.numbers}

    first = serials()
    assert serials() == first
    add(root, "a.wl", accession="A2")
    second = serials()
    assert second["b.wl"] == first["b.wl"]
    assert second["a.wl"] not in first.values()

