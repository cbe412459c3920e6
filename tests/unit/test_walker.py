"""The quick first-start parser gives exactly what pydicom's reading gives, or stands aside.

Each file is loaded twice, with the walker and with pydicom only: the record (bytes, sort key,
index keys, packed matching keys, where the dataset starts) and every log line must be the
same, for well-formed files and for truncated and damaged copies of them.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.support.datasets import file_bytes
from tests.support.worklists import worklist_dataset
from wlmd.worklist import records
from wlmd.worklist.walker import walk

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "worklists").rglob("*.wl"))
MUTANTS_PER_FILE = 12


def mutants(data: bytes, seed: int) -> Iterator[bytes]:
    """Truncated copies, copies with one byte changed, and one with junk appended."""
    rnd = random.Random(seed)
    for _ in range(MUTANTS_PER_FILE // 2):
        yield data[:rnd.randrange(1, len(data))]
        at = rnd.randrange(len(data))
        changed = rnd.choice([0, 0xFF, data[at] ^ 1, data[at] ^ 0x80])
        yield data[:at] + bytes([changed]) + data[at + 1:]
    yield data + bytes(rnd.randrange(1, 9))


def load(path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
         walker: bool) -> tuple[object, ...]:
    """What loading ``path`` gives and logs, with or without the walker."""
    caplog.clear()
    with monkeypatch.context() as patch:
        if not walker:
            patch.setattr(records, "walk", lambda data: None)
        loader = records.FileLoader(str(path.parent), file_reject=True, max_file_bytes=1 << 20)
        entry, parsed = loader.load(str(path), path.name, os.stat(path), False,
                                    os.path.realpath(path.parent))
    assert entry is not None
    record = entry.record
    found = None if record is None else (record.data, record.sort_key, record.keys,
                                         record.add_references, record.body, entry.matching)
    return found, parsed, [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def test_the_walker_reads_the_common_layouts_and_leaves_the_rest_to_pydicom() -> None:
    entry = worklist_dataset("A1")
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        data = file_bytes(worklist_dataset("A1"), syntax)
        walked = walk(data)
        assert walked is not None
        dataset, (offset, implicit, little) = walked
        body = records.parse_worklist_file(data)[1]
        assert body is not None and offset == body[0]
        assert (implicit, little) == (syntax == ImplicitVRLittleEndian, True)
        assert dataset.PatientID == entry.PatientID
        assert dataset.ScheduledProcedureStepSequence[0].Modality == \
            entry.ScheduledProcedureStepSequence[0].Modality
    assert walk(file_bytes(worklist_dataset("A1"), ExplicitVRBigEndian)) is None
    assert walk(file_bytes(worklist_dataset("A1"), None)) is None  # no meta header
    whole = file_bytes(worklist_dataset("A1"), ExplicitVRLittleEndian)
    assert walk(whole[:-1]) is None  # truncated: pydicom words the refusal
    assert all(walk(path.read_bytes()) is not None for path in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES[::3], ids=lambda path: path.name)
def test_walked_and_pydicom_loads_agree_on_files_and_their_damaged_copies(
        path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    latin1 = worklist_dataset("A2")
    latin1.PatientName = "ÄRZTIN^ÉVA"
    implicit = file_bytes(latin1, ImplicitVRLittleEndian)
    data = path.read_bytes()
    copies = [data, *mutants(data, seed=len(data)), implicit, *mutants(implicit, seed=len(data))]
    for number, copy in enumerate(copies):
        target = tmp_path / f"{number:03d}.wl"
        target.write_bytes(copy)
        with_walker = load(target, caplog, monkeypatch, walker=True)
        assert with_walker == load(target, caplog, monkeypatch, walker=False), number
