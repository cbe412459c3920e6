"""MPPS over real sockets, driven by pynetdicom's SCU: statuses, worklist policies, durability,
concurrency and forwarding to a pynetdicom MPPS SCP."""

from __future__ import annotations

import os
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE

from tests.support.mpps import (
    MPPS,
    MppsPeer,
    create_attributes,
    final_modifications,
    n_create,
    n_set,
    worklist_status,
    write_entry,
)
from tests.support.processes import free_port, start_wlmd, stop_process, wait_until
from tests.support.server import rejection
from tests.support.wlmctl import wlmctl

AES = ("MARK", "HIDE", "ARCH", "DELE", "RESCH", "DARCH", "DELAY", "FWD")


class Server:
    """wlmd with --mpps on a loopback port, one AE per policy under test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "worklists"
        self.mpps = root / "mpps"
        self.forward_port = free_port()
        self.port = free_port()
        self.config = root / "wlmd.conf"
        self.config.write_text(
            'mpps = true\n'
            f'mpps_path = "{self.mpps}"\n'
            '[mpps_policy."*"]\n'
            '[mpps_policy.HIDE]\nin_progress = "hide"\n'
            '[mpps_policy.ARCH]\ncompleted = "archive"\n'
            '[mpps_policy.DELE]\ncompleted = "delete"\n'
            '[mpps_policy.RESCH]\nin_progress = "hide"\ndiscontinued = "reschedule"\n'
            '[mpps_policy.DARCH]\ndiscontinued = "archive"\n'
            '[mpps_policy.DELAY]\ncompleted = "delete"\ncompleted_delay = 1\n'
            '[mpps_policy.FWD]\n'
            f'forward = [{{ ae_title = "RIS", host = "127.0.0.1", port = {self.forward_port} }}]\n'
        )
        for ae in AES:
            (self.data / ae).mkdir(parents=True)
            (self.data / ae / "lockfile").touch()
        self.proc = self.start()

    def start(self):  # type: ignore[no-untyped-def]
        self.proc = start_wlmd(["-dfp", str(self.data), "--config", str(self.config)],
                               self.port)
        return self.proc

    def stop(self) -> None:
        stop_process(self.proc)

    def entry(self, ae: str) -> tuple[str, str]:
        """A new scheduled entry in ``ae``: (accession, study UID)."""
        accession = generate_uid()[-12:].replace(".", "")
        study = generate_uid()
        write_entry(self.data / ae, accession, study)
        return accession, study

    def start_step(self, ae: str, accession: str, study: str) -> str:
        uid = generate_uid()
        assert n_create(self.port, ae, uid, create_attributes(accession, study)).Status == 0
        return uid

    def view(self, ae: str, accession: str) -> list[str]:
        return worklist_status(self.port, ae, accession)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mpps"))
    yield srv
    srv.stop()


# --- statuses -------------------------------------------------------------------------------


def test_create_then_complete_marks_the_entry_and_stores_the_instance(server: Server) -> None:
    accession, study = server.entry("MARK")
    assert server.view("MARK", accession) == ["SCHEDULED"]
    uid = server.start_step("MARK", accession, study)
    stored = server.mpps / "MARK" / f"{uid}.dcm"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert dcmread(stored).PerformedProcedureStepStatus == "IN PROGRESS"
    assert server.view("MARK", accession) == ["STARTED"]
    assert n_set(server.port, "MARK", uid, final_modifications()).Status == 0
    assert dcmread(stored).PerformedProcedureStepStatus == "COMPLETED"
    assert dcmread(stored).PatientID == f"P{accession}"  # N-CREATE values kept
    assert server.view("MARK", accession) == ["COMPLETED"]


def test_duplicate_instance_is_refused(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    assert n_create(server.port, "MARK", uid, create_attributes(accession, study)).Status == 0x0111


@pytest.mark.parametrize(("change", "status"), [
    (lambda ds: delattr(ds, "Modality"), 0x0120),
    (lambda ds: delattr(ds, "PatientID"), 0x0120),
    (lambda ds: delattr(ds.ScheduledStepAttributesSequence[0], "AccessionNumber"), 0x0120),
    (lambda ds: setattr(ds, "PerformedStationAETitle", ""), 0x0121),
    (lambda ds: setattr(ds, "PerformedProcedureStepStatus", "COMPLETED"), 0x0106),
])
def test_create_with_a_missing_or_bad_attribute_is_refused(server: Server, change,
                                                           status: int) -> None:
    accession, study = server.entry("MARK")
    attributes = create_attributes(accession, study)
    change(attributes)
    uid = generate_uid()
    response = n_create(server.port, "MARK", uid, attributes)
    assert response.Status == status
    assert response.ErrorComment  # pynetdicom does not surface (0000,1005) of an N-CREATE-RSP
    assert not (server.mpps / "MARK" / f"{uid}.dcm").exists()
    assert server.view("MARK", accession) == ["SCHEDULED"]


def test_set_of_an_unknown_instance_is_no_such_instance(server: Server) -> None:
    response = n_set(server.port, "MARK", generate_uid(), final_modifications())
    assert response.Status == 0x0112


def test_set_may_not_change_creation_only_attributes(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    change = final_modifications()
    change.PatientID = "OTHER"
    response = n_set(server.port, "MARK", uid, change)
    assert response.Status == 0x0106
    assert _tags(response.AttributeIdentifierList) == [0x00100020]
    assert server.view("MARK", accession) == ["STARTED"]


def test_final_state_needs_end_date_and_time(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    change = final_modifications()
    del change.PerformedProcedureStepEndDate
    response = n_set(server.port, "MARK", uid, change)
    assert response.Status == 0x0121
    assert 0x00400250 in _tags(response.AttributeIdentifierList)


def test_an_in_progress_update_is_accepted_and_kept(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    change = final_modifications("IN PROGRESS")
    del change.PerformedProcedureStepEndDate
    assert n_set(server.port, "MARK", uid, change).Status == 0
    stored = dcmread(server.mpps / "MARK" / f"{uid}.dcm")
    assert len(stored.PerformedSeriesSequence) == 1
    assert server.view("MARK", accession) == ["STARTED"]


def test_a_final_step_may_no_longer_be_updated(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    assert n_set(server.port, "MARK", uid, final_modifications("DISCONTINUED")).Status == 0
    response = n_set(server.port, "MARK", uid, final_modifications())
    assert response.Status == 0x0110
    assert response.ErrorID == 0xA710
    assert response.ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assert server.view("MARK", accession) == ["DISCONTINUED"]


def test_an_unscheduled_exam_is_stored_not_refused(server: Server) -> None:
    uid = generate_uid()
    response = n_create(server.port, "MARK", uid, create_attributes("NOPE1", generate_uid()))
    assert response.Status == 0
    assert (server.mpps / "MARK" / f"{uid}.dcm").is_file()


# --- policies -------------------------------------------------------------------------------


def test_hide_then_complete_mark_brings_the_entry_back_completed(server: Server) -> None:
    accession, study = server.entry("HIDE")
    uid = server.start_step("HIDE", accession, study)
    assert server.view("HIDE", accession) == []
    assert (server.mpps / "HIDE" / "hidden" / f"{accession}.wl").is_file()
    assert n_set(server.port, "HIDE", uid, final_modifications()).Status == 0
    assert server.view("HIDE", accession) == ["COMPLETED"]
    assert not (server.mpps / "HIDE" / "hidden" / f"{accession}.wl").exists()


def test_completed_archive_moves_the_entry_out(server: Server) -> None:
    accession, study = server.entry("ARCH")
    uid = server.start_step("ARCH", accession, study)
    assert server.view("ARCH", accession) == ["STARTED"]
    assert n_set(server.port, "ARCH", uid, final_modifications()).Status == 0
    assert server.view("ARCH", accession) == []
    archived = dcmread(server.mpps / "ARCH" / "archive" / f"{accession}.wl")
    assert archived.AccessionNumber == accession


def test_completed_delete_removes_the_entry(server: Server) -> None:
    accession, study = server.entry("DELE")
    uid = server.start_step("DELE", accession, study)
    assert n_set(server.port, "DELE", uid, final_modifications()).Status == 0
    assert server.view("DELE", accession) == []
    assert not (server.data / "DELE" / f"{accession}.wl").exists()


def test_discontinued_reschedule_after_hide_returns_the_entry(server: Server) -> None:
    accession, study = server.entry("RESCH")
    uid = server.start_step("RESCH", accession, study)
    assert server.view("RESCH", accession) == []
    assert n_set(server.port, "RESCH", uid, final_modifications("DISCONTINUED")).Status == 0
    assert server.view("RESCH", accession) == ["SCHEDULED"]


def test_discontinued_archive(server: Server) -> None:
    accession, study = server.entry("DARCH")
    uid = server.start_step("DARCH", accession, study)
    assert n_set(server.port, "DARCH", uid, final_modifications("DISCONTINUED")).Status == 0
    assert server.view("DARCH", accession) == []
    assert (server.mpps / "DARCH" / "archive" / f"{accession}.wl").is_file()


def test_delayed_delete_marks_first_and_deletes_later(server: Server) -> None:
    accession, study = server.entry("DELAY")
    uid = server.start_step("DELAY", accession, study)
    assert n_set(server.port, "DELAY", uid, final_modifications()).Status == 0
    assert server.view("DELAY", accession) == ["COMPLETED"]
    wait_until(lambda: not (server.data / "DELAY" / f"{accession}.wl").exists(), 15,
               "delayed delete")
    assert server.view("DELAY", accession) == []


# --- durability and concurrency -------------------------------------------------------------


def _workers(proc) -> list[psutil.Process]:  # type: ignore[no-untyped-def]
    return psutil.Process(proc.pid).children()


def test_a_worker_killed_after_the_response_loses_nothing(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    killed = {worker.pid for worker in _workers(server.proc)}
    for pid in killed:
        os.kill(pid, signal.SIGKILL)  # workers of the server this test started
    assert dcmread(server.mpps / "MARK" / f"{uid}.dcm").PerformedProcedureStepStatus == \
        "IN PROGRESS"
    assert not list((server.mpps / "MARK").glob(".wlmd-*"))  # no half-written file
    wait_until(lambda: not killed & {w.pid for w in _workers(server.proc)}, 15, "killed reaped")
    wait_until(lambda: len(_workers(server.proc)) >= 2, 15, "replacement workers")
    assert n_set(server.port, "MARK", uid, final_modifications()).Status == 0
    assert server.view("MARK", accession) == ["COMPLETED"]


def _race(server: Server, uid: str) -> dict[str, int]:
    """N-SET COMPLETED and N-SET DISCONTINUED of one instance at once, on two associations."""
    results: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def finish(status: str) -> None:
        barrier.wait(10)
        results[status] = int(n_set(server.port, "MARK", uid, final_modifications(status)).Status)

    threads = [threading.Thread(target=finish, args=(s,)) for s in ("COMPLETED", "DISCONTINUED")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_workers_setting_one_instance_take_turns(server: Server) -> None:
    for _ in range(3):
        accession, study = server.entry("MARK")
        uid = server.start_step("MARK", accession, study)
        results = _race(server, uid)
        assert sorted(results.values()) == [0x0000, 0x0110]
        winner = next(s for s, code in results.items() if code == 0)
        assert dcmread(server.mpps / "MARK" / f"{uid}.dcm").PerformedProcedureStepStatus == \
            winner
        assert server.view("MARK", accession) == [winner]


def test_restart_between_create_and_set(server: Server) -> None:
    accession, study = server.entry("MARK")
    uid = server.start_step("MARK", accession, study)
    server.stop()
    server.start()
    assert server.view("MARK", accession) == ["STARTED"]
    assert n_set(server.port, "MARK", uid, final_modifications()).Status == 0
    assert server.view("MARK", accession) == ["COMPLETED"]


# --- forwarding -----------------------------------------------------------------------------


def test_forwarding_survives_a_down_destination_and_a_restart(server: Server) -> None:
    accession, study = server.entry("FWD")
    uid = server.start_step("FWD", accession, study)
    assert n_set(server.port, "FWD", uid, final_modifications()).Status == 0
    queue = server.mpps / ".forward" / f"RIS@127.0.0.1_{server.forward_port}"
    assert len(list(queue.glob("*.msg"))) == 2  # queued durably while nobody listens
    server.stop()
    server.start()
    peer = MppsPeer(server.forward_port)
    scp = peer.start()
    try:
        wait_until(lambda: len(peer.received) == 2, 30, "both messages forwarded")
        assert peer.received == [("create", uid, "IN PROGRESS"), ("set", uid, "COMPLETED")]
        wait_until(lambda: not list(queue.glob("*.msg")), 10, "queue drained")
    finally:
        scp.shutdown()


def _tags(value: object) -> list[int]:
    """(0000,1005) as pydicom gives it: one tag, or a list of them."""
    return [int(t) for t in value] if isinstance(value, list) else [int(value)]  # type: ignore[call-overload]


def test_without_mpps_the_mpps_context_is_refused(tmp_path: Path) -> None:
    """A wlmscpfs command line (no --mpps) negotiates exactly what it did before."""
    (tmp_path / "MARK").mkdir()
    (tmp_path / "MARK" / "lockfile").touch()
    port = free_port()
    proc = start_wlmd(["-dfp", str(tmp_path)], port)
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(MPPS)
        # the only proposed context is refused: A-ASSOCIATE-RJ
        assert rejection(ae, port, "MARK") is not None
    finally:
        stop_process(proc)


def test_wlmctl_mpps_starts_completes_and_lists_a_step(server: Server) -> None:
    accession, _study = server.entry("MARK")
    entry = server.data / "MARK" / f"{accession}.wl"
    network = ["--port", str(server.port), "--aec", "MARK"]
    started = wlmctl(server.data, "--config", str(server.config), "mpps", "start", *network,
                     "--worklist-file", str(entry))
    assert started.returncode == 0, started.stderr
    uid = started.stdout.strip()
    assert server.view("MARK", accession) == ["STARTED"]
    done = wlmctl(server.data, "--config", str(server.config), "mpps", "complete", *network, uid)
    assert done.returncode == 0, done.stderr
    assert server.view("MARK", accession) == ["COMPLETED"]
    again = wlmctl(server.data, "--config", str(server.config), "mpps", "complete", *network, uid)
    assert again.returncode == 1 and "0x0110" in again.stderr
    listed = wlmctl(server.data, "--config", str(server.config), "mpps", "list", "--ae", "MARK")
    assert f"MARK\t{uid}\tCOMPLETED\t" in listed.stdout
    queue = wlmctl(server.data, "--config", str(server.config), "mpps", "queue")
    assert queue.returncode == 0
