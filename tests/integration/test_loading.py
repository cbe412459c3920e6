"""A start with ``--index-file`` serves at once: while a child parses into the index file and
the supervisor loads it, workers answer from the files; then a new generation of workers
serves the loaded worklist. A writer holding one AE's lockfile keeps the load waiting for as
long as the test needs (the load takes the AEs in name order, that one first)."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.processes import wait_until
from tests.support.server import ANY_AE, SMALL_POOL, Wlmd, alive, start_configured
from tests.support.worklists import worklist_dataset, write_ae_directory, write_worklist

LOCKED_AE = "AAHELD"  # sorts before ANY_AE: the load waits for its writer first
LOADING_TITLE = "wlmd: loading the worklist"


def accession_numbers(port: int) -> list[str]:
    """The AccessionNumber of every pending answer to a universal query, sorted."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=ANY_AE)
    assert assoc.is_established
    query = Dataset()
    query.AccessionNumber = ""
    try:
        return sorted(str(identifier.AccessionNumber) for status, identifier
                      in assoc.send_c_find(query, ModalityWorklistInformationFind)
                      if status and status.Status in (0xFF00, 0xFF01))
    finally:
        assoc.release()
        ae.shutdown()


@contextmanager
def load_held(tmp_path: Path) -> Iterator[int]:
    """Hold the write lock of LOCKED_AE's lockfile (as a writer would) until the block ends;
    the descriptor of the held lockfile."""
    ae_dir = tmp_path / "db" / LOCKED_AE
    ae_dir.mkdir(parents=True)
    write_worklist(ae_dir / "held.wl", worklist_dataset("HELD"))
    fd = os.open(ae_dir / "lockfile", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def start(tmp_path: Path) -> Wlmd:
    write_ae_directory(tmp_path / "db" / ANY_AE, ["A0", "A1", "A2"])
    (tmp_path / "cache").mkdir()
    return start_configured(tmp_path, {**SMALL_POOL,
                                       "index_file": str(tmp_path / "cache" / "index")})


def loading_children(server: Wlmd) -> list[psutil.Process]:
    return [child for child in server.children() if LOADING_TITLE in " ".join(child.cmdline())]


def test_served_from_the_files_while_loading_then_by_a_generation_that_shares_the_load(
        tmp_path: Path) -> None:
    with load_held(tmp_path) as held:
        server = start(tmp_path)
        try:
            assert loading_children(server)
            first_workers = set(server.workers())
            assert accession_numbers(server.port) == ["A0", "A1", "A2"]
            write_worklist(tmp_path / "db" / ANY_AE / "3.wl", worklist_dataset("A3"))
            assert accession_numbers(server.port) == ["A0", "A1", "A2", "A3"]
            server.proc.send_signal(signal.SIGHUP)  # waits for the load
            wait_until(lambda: "reload: waiting for the worklist load" in server.log(),
                       what="the reload put off")
            assert "worklist loaded" not in server.log()
            assert "serves it" not in server.log()
            fcntl.lockf(held, fcntl.LOCK_UN)
            wait_until(lambda: "worklist loaded" in server.log(), timeout=30,
                       what="the worklist loaded")
            wait_until(lambda: "reloaded: starting worker generation 2" in server.log(),
                       what="the reload once loaded")
            assert f"Loaded 4 worklist records of {ANY_AE}" in server.log()
            assert f"Loaded 1 worklist records of {LOCKED_AE}" in server.log()
            wait_until(lambda: not first_workers & set(server.workers()),
                       what="the workers that read the files replaced")
            assert not loading_children(server)
            assert accession_numbers(server.port) == ["A0", "A1", "A2", "A3"]
        finally:
            server.stop()


def test_a_stop_while_loading_ends_the_loading_child(tmp_path: Path) -> None:
    with load_held(tmp_path):
        server = start(tmp_path)
        try:
            (child,) = loading_children(server)
            assert os.getpgid(child.pid) == child.pid  # its parsing processes go with it
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(10) == 0
            wait_until(lambda: not alive(child), what="the loading child gone")
        finally:
            server.stop()
