"""``wlmctl``: manage the entries of a worklist directory (add, list, show, rm, set-status, lint,
explain, expire) through the crash-safe writer; no running server is needed."""
