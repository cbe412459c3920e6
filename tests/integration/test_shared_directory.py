"""Several nodes on one directory (issue #11): two wlmd instances with inotify off
(``--refresh stat``) see every ``wlmctl`` change in their next query, and concurrent
read-modify-write changes through the writer lose nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import free_port, start_wlmd, stop_process
from tests.support.wlmctl import entry_keys, find, wlmctl

AE = "CT01"
PROCESSES, INCREMENTS = 4, 25

INCREMENT = """
import sys
from pathlib import Path
from wlmd.worklist.writer import WorklistWriter
writer = WorklistWriter(Path(sys.argv[1]))
for _ in range(int(sys.argv[3])):
    with writer.transaction("CT01") as transaction:
        dataset = transaction.read(sys.argv[2])
        dataset.PatientComments = str(int(dataset.get("PatientComments") or 0) + 1)
        transaction.write(sys.argv[2], dataset)
"""


def accessions(port: int) -> dict[str, str]:
    """AccessionNumber -> SPS status of every entry the server at ``port`` answers with."""
    return {str(i.AccessionNumber): str(i.ScheduledProcedureStepSequence[0].get(
        "ScheduledProcedureStepStatus", "")) for i in find(port, AE)}


def test_two_nodes_with_stat_refresh_see_each_change_in_their_next_query(
        tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    assert wlmctl(root, "add", AE, "--new-ae", *entry_keys("N1")).returncode == 0
    ports = [free_port(), free_port()]
    nodes = [start_wlmd(["--refresh", "stat", "-dfp", str(root)], port) for port in ports]
    try:
        assert [accessions(port) for port in ports] == [{"N1": ""}] * 2
        assert wlmctl(root, "add", AE, *entry_keys("N2", patient_id="P2")).returncode == 0
        assert [accessions(port) for port in ports] == [{"N1": "", "N2": ""}] * 2
        assert wlmctl(root, "set-status", "N1", "STARTED").returncode == 0
        assert [accessions(port) for port in ports] == [{"N1": "STARTED", "N2": ""}] * 2
        assert wlmctl(root, "rm", "N2").returncode == 0
        assert [accessions(port) for port in ports] == [{"N1": "STARTED"}] * 2
    finally:
        for node in nodes:
            stop_process(node)


def test_concurrent_read_modify_write_loses_no_update(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    assert wlmctl(root, "add", AE, "--new-ae", "--name", "counter.wl",
                  *entry_keys("K1")).returncode == 0
    writers = [subprocess.Popen([sys.executable, "-c", INCREMENT, str(root), "counter.wl",
                                 str(INCREMENTS)]) for _ in range(PROCESSES)]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * PROCESSES
    shown = wlmctl(root, "show", "--json", f"{AE}/counter.wl")
    assert '"00104000"' in shown.stdout
    assert f'"{PROCESSES * INCREMENTS}"' in shown.stdout.split('"00104000"')[1].split("}")[0]
