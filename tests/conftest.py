"""The test tiers are the folders: every test gets the marker of the folder it lives in, so
``pytest -m unit`` (``make check``) selects the fast tier without a list to keep up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = frozenset(("unit", "integration", "interop", "chaos", "fuzz"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue  # outside tests/ (benchmarks/)
        if folder in TIERS:
            item.add_marker(folder)
