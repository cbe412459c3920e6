"""The process model: supervisor, worker pool, hand-off, refusals, single-process server."""
