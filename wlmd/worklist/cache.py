"""Recent queries, prepared and answered, so that a repeated query is cheap.

Modalities poll the worklist with the same query every few minutes, and several scanners send
identical queries. Matching a record against a query and building and encoding its response
depend only on the cleaned query, the transfer syntax and the record's contents, so the
outcome is kept per (query, transfer syntax) and per record object. The store replaces a
record object whenever its file changes; the cache holds records weakly, so a changed, added
or removed file can never be answered from a stale entry.

Before that, the same identifier bytes are the same query: ``PreparedQueries`` keeps what
validating and cleaning them gave, so a modality polling with its one query (most associations
of a busy server) costs a dictionary lookup there.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from wlmd.worklist.answerplan import AnswerPlan
from wlmd.worklist.query import PreparedQuery
from wlmd.worklist.records import WorklistRecord

Answers = weakref.WeakKeyDictionary[WorklistRecord, bytes]
NO_MATCH: Final = b""  # cached outcome of a record that does not match (responses are never empty)


class _QueryShape:
    """What one query in one transfer syntax gave: per-record answers, and its answer plan
    (worked out on the first answer to build; None: its answers are built the old way)."""

    __slots__ = ("answers", "plan", "planned")

    def __init__(self) -> None:
        self.answers: Answers = weakref.WeakKeyDictionary()
        self.plan: AnswerPlan | None = None
        self.planned = False


class ResponseCache:
    """A bounded LRU of query shapes, each mapping a record to its encoded answer."""

    def __init__(self, max_queries: int = 32) -> None:
        self._max_queries = max_queries
        self._queries: OrderedDict[tuple[bytes, str], _QueryShape] = OrderedDict()

    def answers(self, query_key: bytes, transfer_syntax: str) -> Answers:
        """The per-record answers of one query in one transfer syntax (created empty if new).

        Values are the encoded response identifier, or ``NO_MATCH``.
        """
        return self._shape(query_key, transfer_syntax).answers

    def plan(self, query_key: bytes, transfer_syntax: str,
             make: Callable[[], AnswerPlan | None]) -> AnswerPlan | None:
        """The answer plan of one query in one transfer syntax, made once by ``make``."""
        shape = self._shape(query_key, transfer_syntax)
        if not shape.planned:
            shape.plan, shape.planned = make(), True
        return shape.plan

    def _shape(self, query_key: bytes, transfer_syntax: str) -> _QueryShape:
        key = (query_key, transfer_syntax)
        shape = self._queries.get(key)
        if shape is None:
            shape = self._queries[key] = _QueryShape()
            if len(self._queries) > self._max_queries:
                self._queries.popitem(last=False)
        else:
            self._queries.move_to_end(key)
        return shape


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
