"""Encoded answers of recent queries, per worklist record, so a repeated query is cheap.

Modalities poll the worklist with the same query every few minutes, and several scanners send
identical queries. Matching a record against a query and building and encoding its response
depend only on the cleaned query, the transfer syntax and the record's contents, so the
outcome is kept per (query, transfer syntax) and per record object. The store replaces a
record object whenever its file changes; the cache holds records weakly, so a changed, added
or removed file can never be answered from a stale entry.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Final

from wlmd.worklist.records import WorklistRecord

Answers = weakref.WeakKeyDictionary[WorklistRecord, bytes]
NO_MATCH: Final = b""  # cached outcome of a record that does not match (responses are never empty)


class ResponseCache:
    """A bounded LRU of query shapes, each mapping a record to its encoded answer."""

    def __init__(self, max_queries: int = 32) -> None:
        self._max_queries = max_queries
        self._queries: OrderedDict[tuple[bytes, str], Answers] = OrderedDict()

    def answers(self, query_key: bytes, transfer_syntax: str) -> Answers:
        """The per-record answers of one query in one transfer syntax (created empty if new).

        Values are the encoded response identifier, or ``NO_MATCH``.
        """
        key = (query_key, transfer_syntax)
        answers = self._queries.get(key)
        if answers is None:
            answers = self._queries[key] = weakref.WeakKeyDictionary()
            if len(self._queries) > self._max_queries:
                self._queries.popitem(last=False)
        else:
            self._queries.move_to_end(key)
        return answers
