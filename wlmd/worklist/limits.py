"""Resource limits on a received identifier, checked before anything else reads it.

A worklist query is a flat list of keys with at most one level of sequences; an identifier
nested thousands of levels deep or carrying thousands of items is hostile or broken. Walking it
iteratively, one level at a time, bounds the work and never recurses, so a deep identifier
cannot exhaust the interpreter's stack.
"""

from __future__ import annotations

from pydicom import Dataset


def identifier_limit_error(identifier: Dataset, *, max_depth: int, max_items: int) -> str | None:
    """A message naming the first limit the identifier exceeds, or None when it is within them.

    ``max_depth`` counts sequence levels (a top-level SQ is depth 1); ``max_items`` counts the
    items of all sequences together.
    """
    items_seen = 0
    pending: list[tuple[Dataset, int]] = [(identifier, 0)]
    while pending:
        dataset, depth = pending.pop()
        for tag in list(dataset.keys()):
            raw = dataset.get_item(tag)
            if raw is None or (raw.VR != "SQ" and not _undefined_length(raw)):
                continue
            if depth + 1 > max_depth:
                return f"sequence nesting deeper than {max_depth} levels"
            items = dataset[tag].value or []
            items_seen += len(items)
            if items_seen > max_items:
                return f"more than {max_items} sequence items"
            pending.extend((item, depth + 1) for item in items)
    return None


def _undefined_length(raw: object) -> bool:
    """Implicit VR leaves unknown tags' VR open; an undefined length means a sequence."""
    return getattr(raw, "length", 0) == 0xFFFFFFFF
