"""Recent queries, prepared and answered, so that a repeated query is cheap.

Modalities poll the worklist with the same query every few minutes, and several scanners send
identical queries. Matching a record against a query and building and encoding its response
depend only on the cleaned query, the transfer syntax and the record's contents, so the
outcome is kept per (query, transfer syntax) and per record version: the index's serial of
the record (``Candidates.serials``), which a changed, added or removed file never shares, so
it can never be answered from a stale entry. A serial is a plain number: keeping it writes
nothing to the record (a weak reference to each would write to every record's memory page,
which a forked worker shares with its supervisor until then).

A worker keeps what it answered, so the answers kept are bounded: a query asked once keeps at
most ``max_first_bytes`` of them (a modality's usual query fits; a one-off query of thousands
of answers leaves no megabytes behind), a query asked again up to ``max_bytes``, all of them
together (the least recently asked queries go first; a query that alone would exceed it keeps
what fitted). Answers of records changed or gone since are dropped as soon as a query holds
more answers than it has candidates (``retain``), so they never crowd out current ones.

Before that, the same identifier bytes are the same query: ``PreparedQueries`` keeps what
validating and cleaning them gave, so a modality polling with its one query (most associations
of a busy server) costs a dictionary lookup there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container
from typing import Final

from wlmd.worklist.answerplan import AnswerPlan
from wlmd.worklist.query import PreparedQuery

NO_MATCH: Final = b""  # cached outcome of a record that does not match (responses are never empty)
DEFAULT_MAX_BYTES: Final = 4 << 20
DEFAULT_MAX_FIRST_BYTES: Final = 256 << 10  # about 1,500 answers of the usual return keys
# What one kept outcome costs besides its answer's bytes: a dict slot, the serial's int object
# and the bytes object's header (measured: about 100 bytes).
OUTCOME_OVERHEAD: Final = 100


class QueryShape:
    """What one query in one transfer syntax gave: per-record outcomes by serial, and its
    answer plan (worked out on the first answer to build; None: built the old way)."""

    __slots__ = ("answers", "plan", "planned", "repeated", "size")

    def __init__(self) -> None:
        self.answers: dict[int, bytes] = {}
        self.repeated = False  # the query arrived more than once
        self.plan: AnswerPlan | None = None
        self.planned = False
        self.size = 0  # bytes the kept outcomes cost (OUTCOME_OVERHEAD each, plus answers)


class ResponseCache:
    """A bounded LRU of query shapes, each mapping a record serial to its encoded answer."""

    def __init__(self, max_queries: int = 32, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_first_bytes: int = DEFAULT_MAX_FIRST_BYTES) -> None:
        self._max_queries = max_queries
        self._max_bytes = max_bytes
        self._max_first_bytes = max_first_bytes
        self._bytes = 0
        self._queries: OrderedDict[tuple[bytes, str], QueryShape] = OrderedDict()

    @property
    def size(self) -> int:
        """What the kept outcomes cost now, in bytes (at most ``max_bytes``)."""
        return self._bytes

    def shape(self, query_key: bytes, transfer_syntax: str) -> QueryShape:
        """The shape of one query in one transfer syntax, now the most recently asked one.

        Its ``answers`` hold the encoded response identifier, or ``NO_MATCH``, by serial;
        ``keep`` puts more there.
        """
        key = (query_key, transfer_syntax)
        shape = self._queries.get(key)
        if shape is None:
            shape = self._queries[key] = QueryShape()
            if len(self._queries) > self._max_queries:
                self._drop(self._queries.popitem(last=False)[1])
        else:
            self._queries.move_to_end(key)
            shape.repeated = True
        return shape

    def keep(self, shape: QueryShape, serial: int, answer: bytes) -> None:
        """Keep ``answer`` in ``shape`` (the most recently asked) if the bounds let it."""
        cost = OUTCOME_OVERHEAD + len(answer)
        if not shape.repeated and shape.size + cost > self._max_first_bytes:
            return
        while self._bytes + cost > self._max_bytes:
            oldest = next(iter(self._queries.values()))
            if oldest is shape:
                return  # alone, this query's answers do not fit: it keeps what did
            self._drop(self._queries.popitem(last=False)[1])
        shape.answers[serial] = answer
        shape.size += cost
        self._bytes += cost

    def retain(self, shape: QueryShape, serials: Container[int]) -> None:
        """Forget the answers ``shape`` keeps of records other than ``serials`` (the current
        candidates: the others changed or went since)."""
        kept: dict[int, bytes] = {}
        freed = 0
        for serial, answer in shape.answers.items():
            if serial in serials:
                kept[serial] = answer
            else:
                freed += OUTCOME_OVERHEAD + len(answer)
        shape.answers = kept
        shape.size -= freed
        self._bytes -= freed

    def plan(self, shape: QueryShape, make: Callable[[], AnswerPlan | None]
             ) -> AnswerPlan | None:
        """The answer plan of ``shape``, made once by ``make``."""
        if not shape.planned:
            shape.plan, shape.planned = make(), True
        return shape.plan

    def _drop(self, shape: QueryShape) -> None:
        self._bytes -= shape.size
        shape.answers, shape.size = {}, 0


class PreparedQueries:
    """A bounded LRU of valid queries by (identifier as received, transfer syntax).

    Preparing a query is a pure function of those bytes and the settings, which one instance
    never sees change. Invalid or refused identifiers are not kept: each one is logged anew.
    """

    def __init__(self, max_queries: int = 64, max_identifier_bytes: int = 16384) -> None:
        self._max_queries = max_queries
        self._max_identifier_bytes = max_identifier_bytes
        self._known: OrderedDict[tuple[bytes, str], PreparedQuery] = OrderedDict()

    def get(self, encoded: bytes, transfer_syntax: str) -> PreparedQuery | None:
        """The query these bytes gave before, or None."""
        known = self._known.get((encoded, transfer_syntax))
        if known is not None:
            self._known.move_to_end((encoded, transfer_syntax))
        return known

    def add(self, encoded: bytes, transfer_syntax: str, query: PreparedQuery) -> None:
        """Remember ``query`` for these bytes (b"", unknown bytes, and large ones are not)."""
        if not encoded or len(encoded) > self._max_identifier_bytes:
            return
        self._known[(encoded, transfer_syntax)] = query
        if len(self._known) > self._max_queries:
            self._known.popitem(last=False)
