"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.worklists import AE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A ``-dfp`` root with one AE directory and its lockfile."""
    ae_dir = tmp_path / "db" / AE
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    return tmp_path / "db"
