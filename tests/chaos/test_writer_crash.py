"""Issue #11: writers killed at every step never let wlmd or wlmscpfs serve a broken entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import require_dcmtk
from tests.support.wlmctl import wlmctl
from tests.support.writer_crash import AE, changes, run

pytestmark = pytest.mark.interop


def test_writers_killed_at_every_step_leave_only_whole_entries(tmp_path: Path) -> None:
    require_dcmtk("wlmscpfs")
    report = run(tmp_path, rounds=1, time_limit=240)
    steps = sum(len(steps) for _name, _args, steps in changes())
    assert report.not_killed == []
    assert report.kills == steps  # every step of every change was reached and died there
    assert report.broken == []
    assert report.bad_file_warnings == []
    assert report.queries["wlmd"] > 0 and report.queries["wlmscpfs"] > 0
    assert report.answers["wlmd"] >= 3 * report.queries["wlmd"]
    lint = wlmctl(tmp_path / "worklists", "lint", "--fix", AE)
    assert lint.returncode == 0, lint.stdout  # whole entries only; strays were cleaned
