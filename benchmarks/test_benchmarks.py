"""Tests of the benchmark tools: the database builder, the load generator and the runner's logic.

Run with ``python -m pytest benchmarks`` (the main suite's testpaths is ``tests``).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from benchmarks import build_db, run
from benchmarks.loadgen import Client, encode_identifier, find_once, run_load
from tests.support.processes import free_port, start_wlmscpfs, stop_process

SIZE = 40


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db.build(SIZE, cache=tmp_path_factory.mktemp("cache"), log=False)


@pytest.fixture(scope="module")
def wlmscpfs(database: Path) -> Iterator[int]:
    port = free_port()
    proc = start_wlmscpfs(["-dfp", str(database)], port)
    yield port
    stop_process(proc)


def decode(identifier: bytes):
    """An implicit VR little endian identifier as a dataset."""
    return read_dataset(DicomBytesIO(identifier), is_implicit_VR=True, is_little_endian=True)


def test_files_hold_the_values_of_their_entries(database: Path) -> None:
    files = sorted((database / build_db.CALLED_AE).glob("*.wl"))
    assert len(files) == SIZE
    for index in (0, 7, SIZE - 1):
        ds = dcmread(files[index])
        values = build_db.entry(index).values
        sps = ds.ScheduledProcedureStepSequence[0]
        assert ds.AccessionNumber == values["accession"]
        assert str(ds.PatientName) == values["patient_name"]
        assert ds.StudyInstanceUID == values["study_uid"]
        assert ds.file_meta.MediaStorageSOPInstanceUID == values["meta_uid"]
        assert sps.ScheduledStationAETitle == values["station"]
        assert sps.ScheduledProcedureStepStartDate == values["sps_date"]
        assert sps.ScheduledProtocolCodeSequence[0].CodeMeaning == values["protocol_meaning"]


def test_selective_query_matches_about_one_percent() -> None:
    entries = [build_db.entry(i) for i in range(20_000)]
    hits = sum(e.station == build_db.SELECTIVE_STATION and e.date == build_db.SELECTIVE_DATE
               for e in entries)
    assert 0.007 < hits / len(entries) < 0.013
    assert len({e.values["patient_name"] for e in entries}) > 500


def test_cached_database_is_reused(database: Path) -> None:
    marker = database / build_db.CALLED_AE / "A000000000.wl"
    before = marker.stat().st_mtime_ns
    assert build_db.build(SIZE, cache=database.parent, log=False) == database
    assert marker.stat().st_mtime_ns == before


def test_load_counts_every_response(wlmscpfs: int) -> None:
    client = Client("127.0.0.1", wlmscpfs, build_db.CALLED_AE,
                    [encode_identifier(build_db.all_entries_query())], queries_per_assoc=3)
    result = asyncio.run(run_load(client, assocs=6, concurrency=3, budget=20))
    assert (result.assocs, result.queries, result.failures) == (6, 18, 0)
    assert result.responses == 18 * SIZE
    assert len(result.assoc_latencies) == 6 and len(result.query_latencies) == 18


def test_identifiers_are_the_matching_entries(wlmscpfs: int) -> None:
    query = build_db.all_entries_query()
    query.PatientID = build_db.entry(5).values["patient_id"]
    client = Client("127.0.0.1", wlmscpfs, build_db.CALLED_AE, [encode_identifier(query)])
    found = asyncio.run(find_once(client, 20))
    assert found is not None and found.status == 0
    expected = {build_db.entry(i).values["accession"] for i in range(SIZE)
                if build_db.entry(i).values["patient_id"] == query.PatientID}
    assert {decode(i).AccessionNumber for i in found.identifiers} == expected


def test_rejected_associations_are_failures(wlmscpfs: int) -> None:
    client = Client("127.0.0.1", wlmscpfs, "NO_SUCH_AE", [b""])
    result = asyncio.run(run_load(client, assocs=4, concurrency=2, budget=20))
    assert (result.assocs, result.failures) == (0, 4)
    assert result.errors == {"associate-pdu-3": 4}


def test_budget_bounds_a_run(wlmscpfs: int) -> None:
    client = Client("127.0.0.1", wlmscpfs, build_db.CALLED_AE,
                    [encode_identifier(build_db.selective_query())])
    result = asyncio.run(run_load(client, assocs=10**6, concurrency=2, budget=0.3))
    assert 0 < result.assocs < 10**6
    assert result.wall < 5


def test_a_rewritten_entry_is_in_the_next_answer(database: Path, wlmscpfs: int) -> None:
    index = 3
    query = build_db.all_entries_query()
    query.AccessionNumber = build_db.entry(index).values["accession"]
    client = Client("127.0.0.1", wlmscpfs, build_db.CALLED_AE, [encode_identifier(query)])
    try:
        build_db.rewrite_entry(database, index, "CHANGED^TEST")
        found = asyncio.run(find_once(client, 20))
        assert found is not None
        assert [str(decode(i).PatientName) for i in found.identifiers] == ["CHANGED^TEST"]
    finally:
        build_db.rewrite_entry(database, index, None)
    found = asyncio.run(find_once(client, 20))
    assert found is not None
    assert [str(decode(i).PatientName) for i in found.identifiers] == [
        build_db.entry(index).values["patient_name"]]


@pytest.mark.parametrize(("kind", "value", "reference", "candidate", "met"), [
    ("ratio_min", 1.0, 500, 520, True),
    ("ratio_min", 1.0, 500, 480, False),
    ("ratio_max", 0.05, 300, 14, True),
    ("ratio_max", 0.05, 300, 16, False),
    ("max", 30, 3000, 29, True),
    ("max", 30, float("nan"), 31, False),
    ("ratio_max", 1.0, float("nan"), 3, None),
    ("ratio_min", 1.0, 500, float("nan"), False),
    ("max", 400, 80, float("nan"), False),
])
def test_targets(kind: str, value: float, reference: float, candidate: float,
                 met: bool | None) -> None:
    assert run.Target(kind, value, "").met(reference, candidate) is met


def test_select_by_group_and_name() -> None:
    rows = run.scenarios()
    assert [r.name for r in run.select(rows, ["small"])] == [
        "small-rate", "small-latency", "small-queries"]
    assert [r.name for r in run.select(rows, ["large-pss,medium"])] == [
        "medium-selective", "large-pss"]
    with pytest.raises(SystemExit):
        run.select(rows, ["nonsense"])


@pytest.mark.skipif(bool(run.orthanc_missing()), reason="Orthanc is not installed")
def test_orthanc_peer_serves_the_database(database: Path) -> None:
    server = run.orthanc_server()
    query = build_db.all_entries_query()
    query.PatientID = build_db.entry(5).values["patient_id"]
    try:
        assert server.start(database, encode_identifier(query), 60) > 0
        client = Client("127.0.0.1", server.port, build_db.CALLED_AE, [encode_identifier(query)])
        found = asyncio.run(find_once(client, 20))
    finally:
        server.stop()
    assert found is not None and found.status == 0
    expected = {build_db.entry(i).values["accession"] for i in range(SIZE)
                if build_db.entry(i).values["patient_id"] == query.PatientID}
    assert {decode(i).AccessionNumber for i in found.identifiers} == expected


def test_runner_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--candidate", "wlmscpfs", "--scenario", "small-latency", "--quick",
                     "--no-orthanc"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("Machine: ") and "wlmscpfs v3.6.7" in table[0]
    row = next(line for line in table if line.startswith("| 10 entries, sequential"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith(" ms") and cells[2].endswith(" ms")
    assert float(cells[3].rstrip("×")) > 0 and cells[5] in ("yes", "**no**")


def test_table_has_a_column_and_a_ratio_per_peer() -> None:
    reference, peer, candidate = run.reference_server(), run.orthanc_server(), run.wlmd_server([])
    rows = run.select(run.scenarios(), ["small-latency", "large-start-index"])
    for row in rows:
        row.samples = {"wlmscpfs": [run.Sample(4.0)], "Orthanc": [run.Sample(2.0)],
                       "wlmd": [run.Sample(1.0)]}
    rows[1].samples["Orthanc"] = [run.Sample(float("nan"), 0, "keeps no index")]
    opts = run.Options(True, 1, 1, 1)
    lines = run.table(rows, reference, candidate, opts, peer).splitlines()
    assert lines[3] == ("| scenario | wlmscpfs | Orthanc | wlmd | wlmd/wlmscpfs | wlmd/Orthanc "
                        "| target | met |")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[5:7]]
    assert cells[0][1:] == ["4 ms", "2 ms", "1 ms", "0.25×", "0.5×", "≤ 1.0×", "yes"]
    assert cells[1][2] == "— (keeps no index)" and cells[1][5] == "—"


def test_settle_waits_for_a_server_that_serves_while_it_loads(tmp_path: Path) -> None:
    server = run.wlmd_server([])
    began, done = run.WLMD_LOADING_LINES
    server.log_path = tmp_path / "wlmd.log"
    server.log_path.write_text("I: supervisor 1 listening on 127.0.0.1:1\n")
    assert server.settle(5) < 1  # it loaded before serving
    server.log_path.write_text(f"I: {began}; meanwhile workers read the files\n")
    with pytest.raises(TimeoutError):  # no process: it will never finish
        server.settle(5)
    server.proc = subprocess.Popen(["sleep", "5"])
    try:
        timer = threading.Timer(0.5, lambda: server.log_path.write_text(f"I: {done} in 1 s\n"))
        timer.start()
        assert 0.4 < server.settle(5) < 4
        timer.join()
    finally:
        server.proc.kill()
        server.proc.wait()
