"""Request files (-rfp/-rff, docs/compat.md §8): wlmd writes wlmscpfs's text for a query."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.support.processes import (
    DCMTK_EXAMPLES,
    dcmtk_tool,
    dump2dcm,
    free_port,
    start_wlmd,
    start_wlmscpfs,
    stop_process,
)

FORMAT = "req_#a_#c_#p_#x.dump"


def _database(tmp_path: Path) -> Path:
    ae_dir = tmp_path / "db" / "OFFIS"
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    dump2dcm(DCMTK_EXAMPLES / "wlistdb" / "OFFIS" / "wklist1.dump", ae_dir / "wklist1.wl")
    return tmp_path / "db"


def _request_file(server: subprocess.Popen, port: int, query: Path, out: Path) -> str:
    """Send one query (with an overriding Patient ID) and return the request file written."""
    try:
        subprocess.run([dcmtk_tool("findscu"), "-aec", "OFFIS", "-k", "PatientID=PID 7",
                        "-k", "PatientName=VIV*", "127.0.0.1", str(port), str(query)],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 5
        while not list(out.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_process(server)
    [written] = list(out.iterdir())
    assert written.name == "req_FINDSCU_OFFIS_PID 7_#x.dump"
    return written.read_text(encoding="latin-1")


def test_request_file_matches_wlmscpfs(tmp_path: Path) -> None:
    db = _database(tmp_path)
    query = dump2dcm(DCMTK_EXAMPLES / "wlistqry" / "wlistqry1.dump", tmp_path / "q.dcm")
    texts = []
    for name, start in (("ref", start_wlmscpfs), ("wlmd", start_wlmd)):
        out = tmp_path / name
        out.mkdir()
        port = free_port()
        server = start(["--single-process", "-dfp", str(db), "-rfp", str(out),
                        "-rff", FORMAT], port)
        texts.append(_request_file(server, port, query, out))
    reference, ours = texts
    assert "(0010,0020) LO [PID 7 ]" in reference  # padded to even length, shown as sent
    assert ours == reference
