"""The file-reject rules (docs/compat.md §3), against hand-made files and DCMTK's wlmscpfs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.processes import require_dcmtk
from tests.support.worklists import COMPLETENESS_CASES, make_case, query_wlmscpfs
from wlmd.worklist.completeness import is_complete


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The rule lines logged at DEBUG, in order."""
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.DEBUG and r.getMessage().startswith("- ")]


@pytest.mark.parametrize("name", sorted(COMPLETENESS_CASES))
def test_rule(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, _, served, expected = COMPLETENESS_CASES[name]
    dataset = dcmread(make_case(tmp_path, name), force=True)
    with caplog.at_level(logging.DEBUG, logger="wlmd.worklist"):
        assert is_complete(dataset) is served
    assert reasons(caplog) == expected


def test_missing_reference_sequences_are_inserted_empty(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    dataset = dcmread(make_case(tmp_path, "complete"), force=True)
    assert "ReferencedStudySequence" not in dataset
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist"):
        assert is_complete(dataset)
    assert len(dataset.ReferencedStudySequence) == 0
    assert len(dataset.ReferencedPatientSequence) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "Added missing type 2 sequence attribute (0008,1110) to the current record",
        "Added missing type 2 sequence attribute (0008,1120) to the current record",
    ]


def test_a_failed_rule_stops_the_checks_before_any_insertion(tmp_path: Path) -> None:
    dataset = dcmread(make_case(tmp_path, "no_patient_id"), force=True)
    assert not is_complete(dataset)
    assert "ReferencedStudySequence" not in dataset


@pytest.mark.interop
def test_rules_and_reasons_match_wlmscpfs(tmp_path: Path) -> None:
    """Every case, served or rejected by the real wlmscpfs with the same DEBUG reasons."""
    require_dcmtk("wlmscpfs", "findscu")
    ae_dir = tmp_path / "db" / "RULES"
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    names = sorted(COMPLETENESS_CASES)
    for number, name in enumerate(names):
        make_case(ae_dir, name, accession=f"A{number:03d}")
    served, log = query_wlmscpfs(tmp_path, "RULES", ["-d"])
    assert served == {f"A{n:03d}" for n, name in enumerate(names) if COMPLETENESS_CASES[name][2]}
    for name in names:
        assert _dcmtk_reasons(log, f"{name}.wl") == COMPLETENESS_CASES[name][3], name


def _dcmtk_reasons(log: str, file_name: str) -> list[str]:
    """The ``D: - …`` lines wlmscpfs logged while checking ``file_name``."""
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("I: Checking whether worklist file")
                 and line.endswith(f'/{file_name}" is complete'))
    found = []
    for line in lines[start + 1:]:
        if line.startswith(("W: Worklist file", "I: Information from", "I: Checking whether")):
            break
        if line.startswith("D: - "):
            found.append(line[3:])
    return found
