"""The worklist service: request files, resource limits, statuses (docs/compat.md §6, §8)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import Dataset, Sequence, dcmread

from wlmd.config.settings import Settings
from wlmd.dicom.dimse import EXPLICIT_LITTLE, decode_dataset, encode_dataset
from wlmd.dicom.types import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PENDING,
    STATUS_SUCCESS,
    AssociationInfo,
    FindResponse,
)
from wlmd.worklist import findlog
from wlmd.worklist.query import PreparedQuery, prepare_query
from wlmd.worklist.service import WorklistService, request_file_name

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"
ASSOC = AssociationInfo("127.0.0.1", 40000, calling_ae="MODALITY1", called_ae="CT01")
ILE = "1.2.840.10008.1.2"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES / "CT01", tmp_path / "db" / "CT01")
    return tmp_path / "db"


def query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = keys.get("PatientID", "")
    sps = Dataset()
    sps.Modality = keys.get("Modality", "")
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def run(root: Path, identifier: Dataset, **settings: object) -> list[FindResponse]:
    service = WorklistService(Settings(port=0, data_files_path=root, **settings))  # type: ignore[arg-type]
    return list(service.find(ASSOC, identifier, ILE))


def test_every_match_is_pending_then_one_final_success(root: Path) -> None:
    responses = run(root, query())
    entries = len(list((root / "CT01").glob("*.wl")))
    assert [r.status for r in responses] == [STATUS_PENDING] * entries + [STATUS_SUCCESS]


def test_max_responses_refuses_instead_of_truncating(root: Path) -> None:
    responses = run(root, query(), max_responses=3)
    assert len(responses) == 1
    assert responses[0].status == STATUS_OUT_OF_RESOURCES
    assert "Too many matches" in (responses[0].error_comment or "")
    assert run(root, query(), max_responses=100)[-1].status == STATUS_SUCCESS


def test_information_level_logs_each_file_and_why_it_does_not_match(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wlmd.worklist")
    responses = run(root, query(PatientID="PID107919"))
    files = sorted((root / "CT01").glob("*.wl"))
    assert [r.status for r in responses] == [STATUS_PENDING, STATUS_SUCCESS]
    text = caplog.text
    for path in files:
        assert f'Checking whether worklist file "{path}" is complete' in text
    assert text.count(" matches query") == 1
    assert text.count("does not match query: PatientID '") == len(files) - 1
    assert "does not match 'PID107919'" in text
    assert "Matching results: 1 matching records found in worklist files" in text
    assert "Worklist Find SCP Response 1 (Pending)" in text
    assert "Worklist Find SCP Response 2 (Success)" in text


def test_default_level_builds_none_of_those_messages(
        root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING)

    def refuse(*_: object) -> None:
        raise AssertionError("the C-FIND log was built at the default level")

    monkeypatch.setattr(findlog, "FindLog", refuse)
    assert run(root, query())[-1].status == STATUS_SUCCESS


def test_failed_query_logs_status_detail_as_warnings(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wlmd.worklist")
    bad = query()
    bad.PatientBirthDate = "2024-13-45"
    [response] = run(root, bad)
    assert response.status == STATUS_IDENTIFIER_MISMATCH
    details = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("Status Detail:\n(0000,0901) AT (0010,0030)") for m in details)
    assert any("ErrorComment" in m for m in details)
    assert "Worklist Find SCP Response 1 (Error: DataSetDoesNotMatchSOPClass)" in caplog.text


def nested(depth: int) -> Dataset:
    """An identifier whose private sequence nests ``depth`` levels deep."""
    inner = Dataset()
    for _ in range(depth):
        outer = Dataset()
        outer.add_new(0x00091010, "SQ", Sequence([inner]))
        inner = outer
    return inner


def test_sequence_depth_limit_refuses_with_a700(root: Path) -> None:
    responses = run(root, nested(50), max_sequence_depth=8)
    assert [r.status for r in responses] == [STATUS_OUT_OF_RESOURCES]
    assert "nesting deeper than 8" in (responses[0].error_comment or "")


def test_sequence_depth_within_limit_is_served(root: Path) -> None:
    assert run(root, nested(3), max_sequence_depth=8)[-1].status == STATUS_SUCCESS


def test_sequence_item_limit_refuses_with_a700(root: Path) -> None:
    identifier = query()
    identifier.add_new(0x00091010, "SQ", Sequence([Dataset() for _ in range(100)]))
    responses = run(root, identifier, max_sequence_items=64)
    assert [r.status for r in responses] == [STATUS_OUT_OF_RESOURCES]
    assert "more than 64 sequence items" in (responses[0].error_comment or "")


def test_invalid_value_gives_a900_with_the_offending_element(root: Path) -> None:
    identifier = query(Modality="ct")  # CS allows upper case only
    responses = run(root, identifier)
    assert [r.status for r in responses] == [STATUS_IDENTIFIER_MISMATCH]
    assert responses[0].offending_elements == (0x00080060,)


def test_missing_lockfile_gives_a700(root: Path) -> None:
    (root / "CT01" / "lockfile").unlink()
    assert [r.status for r in run(root, query())] == [STATUS_OUT_OF_RESOURCES]


@pytest.mark.parametrize(
    ("fmt", "patient_id", "expected"),
    [
        ("#a_#c_#p.dump", "PID1", "MODALITY1_CT01_PID1.dump"),
        ("req_#x_#p", "", "req_#x_"),  # unknown placeholders stay literal; empty Patient ID
        ("#p.dump", "../../etc/passwd", "___.._etc_passwd.dump"),
        ("#p", "a\\b\x00c", "a_b_c"),
        ("#p", "..", "__"),
        ("#p", ".", "_"),
        ("#p.dump", ".bashrc", "_bashrc.dump"),
        ("#p", "a.b\x7f", "a.b_"),
        ("#c#p", "x", "CT01x"),
    ],
)
def test_request_file_placeholders(fmt: str, patient_id: str, expected: str) -> None:
    assert request_file_name(fmt, ASSOC, patient_id) == expected


@given(called=st.text(min_size=1, max_size=16), calling=st.text(max_size=16),
       patient_id=st.text(max_size=64))
def test_request_file_placeholders_never_make_a_path(called: str, calling: str,
                                                     patient_id: str) -> None:
    """Whatever the AE titles and Patient ID hold, each placeholder yields one plain name."""
    assoc = AssociationInfo("127.0.0.1", 40000, calling_ae=calling, called_ae=called)
    for fmt in ("#c", "#a", "#p"):
        name = request_file_name(fmt, assoc, patient_id)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert all(ord(ch) >= 0x20 and ord(ch) != 0x7F for ch in name)


def test_request_file_pid_and_timestamp() -> None:
    name = request_file_name("#i-#t", ASSOC, "")
    pid, stamp = name.split("-")
    assert pid == str(os.getpid())
    assert len(stamp) == 20 and stamp.isdigit()


def test_request_file_is_written_inside_rfp(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "requests"
    out.mkdir()
    run(root, query(PatientID="../escape"), request_file_path=out, request_file_format="#p.dump")
    written = list(out.iterdir())
    assert [p.name for p in written] == ["___escape.dump"]
    text = written[0].read_text()
    assert "# Dicom-Data-Set" in text
    assert "# Used TransferSyntax: Little Endian Implicit" in text
    assert "(0010,0020) LO [../escape]" in text
    assert not (tmp_path / "escape.dump").exists()


def test_request_file_named_dotdot_is_not_written(root: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "requests"
    out.mkdir()
    responses = run(root, query(PatientID="PID1"), request_file_path=out,
                    request_file_format="..")
    assert responses[-1].status == STATUS_SUCCESS  # the query itself is still answered
    assert list(out.iterdir()) == []
    assert "would leave" in caplog.text


def test_repeated_query_sees_a_changed_file(root: Path) -> None:
    """Answers are cached per query and record; a rewritten file must not be answered stale."""
    service = WorklistService(Settings(port=0, data_files_path=root))
    first = list(service.find(ASSOC, query(), ILE))
    assert first == list(service.find(ASSOC, query(), ILE))  # served again, same bytes
    path = sorted((root / "CT01").glob("*.wl"))[0]
    dataset = dcmread(path)
    dataset.PatientName = "CHANGED^NAME"
    dataset.save_as(path)
    os.utime(path, ns=(1, 1))  # a new stat key even within the same mtime tick
    third = list(service.find(ASSOC, query(), ILE))
    assert len(third) == len(first)
    assert sum(b"CHANGED^NAME" in (r.identifier or b"") for r in third) == 1  # type: ignore[operator]
    assert not any(b"CHANGED^NAME" in (r.identifier or b"") for r in first)  # type: ignore[operator]


def test_a_repeated_query_keeps_no_answers_of_changed_files(root: Path) -> None:
    """A file rewritten again and again leaves no trail of stale answers in the cache."""
    service = WorklistService(Settings(port=0, data_files_path=root))
    for _ in range(2):  # asked twice: the query keeps all its answers
        list(service.find(ASSOC, query(), ILE))
    kept = service._cache.size  # what the worker keeps is the point here
    path = sorted((root / "CT01").glob("*.wl"))[0]
    dataset = dcmread(path)
    for round_number in range(1, 6):
        dataset.PatientName = f"CHANGED^{round_number}"
        dataset.save_as(path)
        os.utime(path, ns=(round_number, round_number))
        list(service.find(ASSOC, query(), ILE))
        assert service._cache.size < kept + 250  # at most the one changed answer twice


def received(identifier: Dataset, ts_uid: str = ILE) -> tuple[bytes, Dataset]:
    """``identifier`` as the engine hands it over: the bytes received and their decoding."""
    encoded = encode_dataset(identifier, ts_uid)
    return encoded, decode_dataset(encoded, ts_uid, 1 << 20)


def test_same_identifier_bytes_are_prepared_once(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared: list[Dataset] = []

    def counting(identifier: Dataset, **options: bool) -> PreparedQuery:
        prepared.append(identifier)
        return prepare_query(identifier, **options)

    monkeypatch.setattr("wlmd.worklist.service.prepare_query", counting)
    service = WorklistService(Settings(port=0, data_files_path=root))
    encoded, identifier = received(query())
    first = list(service.find(ASSOC, identifier, ILE, encoded))
    _, decoded_again = received(query())
    again = list(service.find(ASSOC, decoded_again, ILE, encoded))
    assert again == first and first[-1].status == STATUS_SUCCESS and len(first) > 2
    assert len(prepared) == 1
    other_bytes, other = received(query(PatientID="PID1"))
    assert list(service.find(ASSOC, other, ILE, other_bytes)) != first
    explicit_bytes, explicit = received(query(), EXPLICIT_LITTLE)
    list(service.find(ASSOC, explicit, EXPLICIT_LITTLE, explicit_bytes))
    list(service.find(ASSOC, identifier, ILE))  # bytes unknown: prepared anew
    assert len(prepared) == 4


def test_invalid_identifier_is_refused_and_logged_every_time(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wlmd.worklist.service")
    service = WorklistService(Settings(port=0, data_files_path=root))
    encoded, identifier = received(query(Modality="ct"))  # CS allows upper case only
    for _ in range(2):
        responses = list(service.find(ASSOC, identifier, ILE, encoded))
        assert [r.status for r in responses] == [STATUS_IDENTIFIER_MISMATCH]
    assert caplog.text.count("Invalid query from MODALITY1") == 2
