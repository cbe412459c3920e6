"""Answers built from a file's raw elements are byte for byte those built from pydicom's decode."""

from __future__ import annotations

import contextlib
import io
import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tests.support.worklists import code_item, ref_item, worklist_dataset
from wlmd.config.settings import CharsetMode
from wlmd.dicom.dimse import encode_dataset
from wlmd.dicom.rawfile import ElementReader, NotRaw, RawLevel
from wlmd.worklist.compression import compressed
from wlmd.worklist.fileview import raw_elements
from wlmd.worklist.query import prepare_query
from wlmd.worklist.records import FileLoader, WorklistRecord
from wlmd.worklist.response import build_response
from wlmd.worklist.walker import explicit_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUERIES = sorted((EXAMPLES / "queries").glob("*.dcm"))
ANSWER_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)


def _varied_entry() -> Dataset:
    """Multi-valued, odd-length and empty values, nested and empty sequences, a US element
    (``worklist_dataset`` has no reference sequences: the file-reject check adds them)."""
    ds = worklist_dataset("A1")
    ds.PatientName = "M\xdcLLER^J\xd6RG\\DOE"
    ds.PatientBirthDate = ""
    ds.PregnancyStatus = 2
    ds.ReferencedStudySequence = Sequence([ref_item()])
    ds.ReferencedPatientSequence = Sequence([])
    ds.RequestedProcedureCodeSequence = Sequence([code_item()])
    ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence(
        [code_item("P1"), code_item("P2", "99Y")])
    return ds


def _file(ds: Dataset, syntax: str, undefined_lengths: bool) -> bytes:
    for element in ds.iterall():
        if element.VR == "SQ":
            element.value.is_undefined_length = undefined_lengths
            for item in element.value:
                item.is_undefined_length_sequence_item = undefined_lengths
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _record(path: Path) -> WorklistRecord:
    loader = FileLoader(str(path.parent), file_reject=True, max_file_bytes=1 << 20)
    entry, _ = loader.load(str(path), path.name, os.stat(path), False, str(path.parent))
    assert entry is not None and entry.record is not None
    return entry.record


def _records(tmp_path: Path) -> list[WorklistRecord]:
    found = [_record(path) for path in sorted((EXAMPLES / "worklists").rglob("*.wl"))]
    for syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                   DeflatedExplicitVRLittleEndian):
        for undefined in (False, True):
            for number, entry in enumerate((_varied_entry(), worklist_dataset("A2"))):
                path = tmp_path / f"{syntax}-{undefined}-{number}.wl"
                path.write_bytes(_file(entry, syntax, undefined))
                found.append(_record(path))
    return found


def _answer(identifier: Dataset, elements: object, syntax: str) -> bytes:
    query = prepare_query(identifier, no_fail=True, expand_sequences=True)
    response = build_response(query, elements, CharsetMode.KEEP)  # type: ignore[arg-type]
    return encode_dataset(response, syntax)


def test_answers_are_those_of_the_decoded_dataset(tmp_path: Path) -> None:
    records = _records(tmp_path)
    fast = [record for record in records if isinstance(raw_elements(record), RawLevel)]
    assert len(fast) == len(records) - 4  # only the deflated files need pydicom
    for identifier in map(dcmread, QUERIES):
        for record in fast:
            for syntax in ANSWER_SYNTAXES:
                assert (_answer(identifier, raw_elements(record), syntax)
                        == _answer(identifier, record.dataset, syntax)), record.name


def _explicit_element(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


@pytest.mark.parametrize("body", [
    _explicit_element(0x00100010, b"PN", b"DOE ") + _explicit_element(0x00100020, b"XX", b"1 "),
    _explicit_element(0x00100010, b"PN", b"DOE ") + struct.pack("<HH2sH", 0x0010, 0x0020, b"LO",
                                                                20) + b"P1",
    struct.pack("<HH2sHL", 0x0040, 0x0100, b"SQ", 0, 0xFFFFFFFF)
    + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HHL", 0x0008, 0x0060, 2)
    + b"MR" + struct.pack("<HHLHHL", 0xFFFE, 0xE00D, 0, 0xFFFE, 0xE0DD, 0),
], ids=["unknown VR", "value past the end", "an item in implicit VR"])
def test_bytes_pydicom_may_read_otherwise_are_left_to_pydicom(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "entry.wl"
    path.write_bytes(_file(worklist_dataset("A1"), ExplicitVRLittleEndian, False))
    record = _record(path)
    assert record.body is not None and isinstance(raw_elements(record), RawLevel)
    odd = replace(record, shelf=compressed(record.data[:record.body[0]] + body), slot=0)
    assert raw_elements(odd) is None
    # a read that keeps only PatientName (what an answer plan reads) still walks the rest
    assert raw_elements(odd, {0x00100010: {}}) is None


def test_the_quick_reader_gives_the_general_readers_elements(tmp_path: Path) -> None:
    """An explicit VR little endian file is read by the first start's quick reader, which
    must give exactly the levels of the general one."""
    quick = 0
    for record in _records(tmp_path):
        if record.body is None or record.body[1:] != (False, True):
            continue
        general = ElementReader(record.data, False).level(record.body[0], None, top=True)[0]
        with contextlib.suppress(NotRaw):
            assert explicit_dataset(record.data, record.body[0]) == general, record.name
            quick += 1
        read = raw_elements(record)  # with the reference sequences -dfr adds, if any
        assert read is not None and all(read[key] == element
                                        for key, element in general.items()), record.name
    assert quick > 20
