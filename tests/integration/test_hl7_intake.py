"""HL7 order intake end to end: python-hl7's ``mllp_send`` and ``MLLPClient`` send real
messages to ``python -m wlmd --hl7-listen``; every effect is checked with a C-FIND."""

from __future__ import annotations

import fcntl
import json
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7.client import MLLPClient  # type: ignore[import-untyped]

from tests.support.hl7 import (
    CALLED_AE,
    CR,
    FS,
    HOST,
    MLLP_SEND,
    VT,
    Hl7Server,
    Order,
    ack_segments,
    mllp_send,
    raw_blocks,
    raw_exchange,
    worklist,
)
from tests.support.pki import make_pki
from tests.support.processes import wait_until
from tests.support.wlmctl import wlmctl


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Hl7Server]:
    running = Hl7Server(tmp_path)
    yield running
    running.stop()


def send(server: Hl7Server, order: Order) -> dict[str, list[str]]:
    (ack,) = mllp_send(server.hl7_port, order.message())
    return ack_segments(ack, "utf-8" if "UTF-8" in order.charset else "latin-1")


def entry_files(server: Hl7Server) -> list[Path]:
    return sorted(server.root.glob("*/*.wl"))


@pytest.mark.parametrize(("kind", "version"), [("ORM^O01", "2.3"), ("ORM^O01", "2.5.1"),
                                               ("OMI^O23", "2.5.1"), ("OMG^O19", "2.5.1")])
def test_new_order_becomes_a_worklist_entry(server: Hl7Server, kind: str, version: str) -> None:
    ack = send(server, Order(kind=kind, version=version, study_uid="1.2.3.4.5"))
    assert ack["MSA"][1:3] == ["AA", "MSG0001"]
    assert ack["MSH"][8].startswith("ACK")
    (entry,) = worklist(server.port)
    assert str(entry.PatientName) == "Doe^John"
    assert entry.AccessionNumber == "ACC1001"
    assert entry.RequestedProcedureID == "RP1001"
    assert entry.StudyInstanceUID == "1.2.3.4.5"
    assert entry.FillerOrderNumberImagingServiceRequest == "FI1001"
    step = entry.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledProcedureStepID) == ("CT", "SPS1001")
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20250115", "1030")
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert step.ScheduledStationAETitle == CALLED_AE


@pytest.mark.parametrize(("charset", "name", "dicom"), [
    ("8859/1", "Müller^Jürgen", "ISO_IR 100"),
    ("UNICODE UTF-8", "Łukasiewicz^Żaneta", "ISO_IR 192"),
])
def test_names_keep_their_characters(server: Hl7Server, charset: str, name: str,
                                     dicom: str) -> None:
    ack = send(server, Order(charset=charset, name=name, version="2.5.1"))
    assert ack["MSA"][1] == "AA"
    (entry,) = worklist(server.port)
    assert entry.SpecificCharacterSet == dicom
    assert str(entry.PatientName) == name


def test_a_name_the_target_charset_cannot_hold_is_refused(tmp_path: Path) -> None:
    server = Hl7Server(tmp_path, mapping=f'default_ae = "{CALLED_AE}"\n'
                                         'character_set = "ISO_IR 100"\n')
    try:
        ack = send(server, Order(charset="UNICODE UTF-8", name="Łukasiewicz^Jan",
                                 version="2.5.1"))
        assert ack["MSA"][1] == "AE"
        assert ack["ERR"][2] == "PID^1^5"
        assert "ISO_IR 100" in ack["ERR"][8]
        assert worklist(server.port) == []
    finally:
        server.stop()


def test_a_duplicate_changes_nothing(server: Hl7Server) -> None:
    order = Order()
    first, second = mllp_send(server.hl7_port, order.message(), order.message())
    assert ack_segments(first)["MSA"][1] == ack_segments(second)["MSA"][1] == "AA"
    (path,) = entry_files(server)
    before = path.stat()
    order.control_id = "MSG0002"  # the same order again under a new control ID
    assert send(server, order)["MSA"][1] == "AA"
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(worklist(server.port)) == 1
    events = [json.loads(line) for line in server.journal_records()]
    assert [e.get("detail") for e in events if e["event"] == "done"] == ["", "duplicate", ""]


def test_change_keeps_the_generated_study_uid(server: Hl7Server) -> None:
    assert send(server, Order())["MSA"][1] == "AA"
    (before,) = worklist(server.port)
    changed = Order(control="XO", control_id="MSG0002", code="CTHEAD^CT head with contrast^L",
                    start="202501161400")
    assert send(server, changed)["MSA"][1] == "AA"
    (after,) = worklist(server.port)
    assert after.RequestedProcedureDescription == "CT head with contrast"
    assert after.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate == "20250116"
    assert after.StudyInstanceUID == before.StudyInstanceUID


def test_change_of_modality_moves_the_entry_to_its_route(server: Hl7Server) -> None:
    assert send(server, Order())["MSA"][1] == "AA"
    assert send(server, Order(control="XO", control_id="M2", modality="MR"))["MSA"][1] == "AA"
    assert worklist(server.port) == []
    (entry,) = worklist(server.port, "MR_WL")
    assert entry.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "MR01"


@pytest.mark.parametrize("control", ["CA", "DC", "OC", "OD"])
def test_cancel_and_discontinue_remove_the_entry(server: Hl7Server, control: str) -> None:
    assert send(server, Order())["MSA"][1] == "AA"
    assert send(server, Order(control=control, control_id="MSG0002"))["MSA"][1] == "AA"
    assert worklist(server.port) == []
    assert entry_files(server) == []


def test_status_change(server: Hl7Server) -> None:
    assert send(server, Order())["MSA"][1] == "AA"
    assert send(server, Order(control="SC", control_id="M2", status="IP"))["MSA"][1] == "AA"
    (entry,) = worklist(server.port)
    assert entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"
    assert send(server, Order(control="SC", control_id="M3", status="CM"))["MSA"][1] == "AA"
    assert worklist(server.port) == []


@pytest.mark.parametrize("version", ["2.3", "2.5.1"])
def test_cancel_of_an_unknown_order_is_an_error_naming_the_key(server: Hl7Server,
                                                              version: str) -> None:
    ack = send(server, Order(control="CA", version=version, filler="NOSUCH"))
    assert ack["MSA"][1] == "AE"
    if version == "2.3":
        assert ack["ERR"][1] == "ORC^1^3^204&Unknown key identifier"
    else:
        assert ack["ERR"][2:4] == ["ORC^1^3", "204^Unknown key identifier^HL70357"]
    assert entry_files(server) == []


def test_missing_required_field_writes_nothing(server: Hl7Server) -> None:
    ack = send(server, Order(patient_id="", version="2.5.1"))
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][2:4] == ["PID^1^3^1^1", "101^Required field missing^HL70357"]
    assert entry_files(server) == []


def test_unsupported_order_control_and_message_type_are_rejected(server: Hl7Server) -> None:
    assert send(server, Order(control="ZZ"))["MSA"][1] == "AR"
    ack = send(server, Order(kind="ADT^A01", control_id="M2", version="2.5.1"))
    assert ack["MSA"][1] == "AR"
    assert ack["ERR"][3].startswith("200^")
    assert entry_files(server) == []


def test_enhanced_mode_answers_with_commit_acknowledgements(server: Hl7Server) -> None:
    ack = send(server, Order(ack_modes=("AL", "NE"), version="2.5.1"))
    assert ack["MSA"][1] == "CA"
    failed = send(server, Order(control="CA", control_id="M2", filler="NOSUCH",
                                ack_modes=("AL", "NE"), version="2.5.1"))
    assert failed["MSA"][1] == "CE"
    silent = Order(control_id="M3", placer="PL2", filler="FI2", ack_modes=("ER", "NE"),
                   version="2.5.1")  # ER: an accept ACK only on error
    assert raw_exchange(server.hl7_port, VT + silent.message() + FS + CR, timeout=2) == b""
    assert len(worklist(server.port)) == 2


def test_enhanced_mode_sends_the_application_ack_after_the_commit_ack(
        server: Hl7Server) -> None:
    both = Order(control_id="M5", placer="PL5", filler="FI5", ack_modes=("AL", "AL"),
                 version="2.5.1")
    blocks = raw_blocks(server.hl7_port, VT + both.message() + FS + CR, count=2)
    assert [ack_segments(block)["MSA"][1] for block in blocks] == ["CA", "AA"]
    assert ack_segments(blocks[1])["MSH"][14:16] == ["NE", "NE"]
    refused = Order(control="CA", control_id="M6", filler="NOSUCH", ack_modes=("NE", "ER"),
                    version="2.5.1")  # no commit ACK asked; an application ACK on error
    (block,) = raw_blocks(server.hl7_port, VT + refused.message() + FS + CR, count=1)
    assert ack_segments(block)["MSA"][1] == "AE" and "ERR" in ack_segments(block)
    assert any(entry.AccessionNumber for entry in worklist(server.port))


def test_python_hl7_client_and_many_orders_on_one_connection(server: Hl7Server) -> None:
    with MLLPClient(HOST, server.hl7_port) as client:
        for number in range(20):
            order = Order(control_id=f"M{number}", placer=f"PL{number}", filler=f"FI{number}",
                          accession=f"A{number}", procedure=f"RP{number}", step=f"S{number}")
            reply = client.send_message(order.message())
            assert ack_segments(reply.encode() if isinstance(reply, str) else reply
                                )["MSA"][1] == "AA"
    assert len(worklist(server.port)) == 20


def test_sender_disconnecting_mid_message_applies_nothing(server: Hl7Server) -> None:
    message = Order().message()
    assert raw_exchange(server.hl7_port, VT + message[: len(message) // 2], timeout=1) == b""
    wait_until(lambda: "closed mid-message" in server.log(), what="mid-message log line")
    assert entry_files(server) == []
    assert send(server, Order())["MSA"][1] == "AA"  # the child is still serving


def test_crash_before_the_ack_is_applied_exactly_once(server: Hl7Server) -> None:
    """The HL7 child is killed after journalling a message but before applying it (the test
    holds the worklist lock): the respawned child applies it from the journal, and the
    sender's resend is acknowledged without being applied again."""
    lockfile = server.root / CALLED_AE / "lockfile"
    lockfile.touch()
    child = server.hl7_child()
    order = Order()
    with lockfile.open("r+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        batch = server.journal.parent / "order.hl7"
        batch.write_bytes(VT + order.message() + FS + CR)
        sender = subprocess.Popen([MLLP_SEND, "-p", str(server.hl7_port), "-f", str(batch),
                                   HOST], stdout=subprocess.PIPE)
        wait_until(lambda: '"event":"received"' in "".join(server.journal_records()),
                   what="message journalled")
        child.send_signal(signal.SIGKILL)
        assert sender.wait(30) == 0
        assert sender.stdout is not None and sender.stdout.read().strip() == b""  # no ACK
        sender.stdout.close()
    assert entry_files(server) == []  # the kill came before the write
    respawned = server.hl7_child()
    assert respawned.pid != child.pid
    wait_until(lambda: len(entry_files(server)) == 1, what="entry applied from the journal")
    assert send(server, order)["MSA"][1] == "AA"  # the sender's resend
    assert len(worklist(server.port)) == 1
    done = [json.loads(line) for line in server.journal_records() if '"done"' in line]
    assert [(d["seq"], d["ack"], d["detail"]) for d in done] == [(1, "AA", ""),
                                                                 (2, "AA", "duplicate")]


def test_malformed_input_gets_a_nak_and_the_child_survives(server: Hl7Server) -> None:
    no_start = raw_exchange(server.hl7_port, b"garbage" + FS + CR)
    assert ack_segments(no_start)["MSA"][1] == "AR"
    not_hl7 = raw_exchange(server.hl7_port, VT + b"\x00\xff not HL7" + FS + CR)
    assert ack_segments(not_hl7)["MSA"][1] == "AR"
    assert send(server, Order())["MSA"][1] == "AA"


def test_message_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    server = Hl7Server(tmp_path, "--hl7-max-message-size", "1024")
    try:
        big = Order(extra={"CT head": "CT head " + "x" * 2000}).message()
        reply = raw_exchange(server.hl7_port, VT + big + FS + CR)
        assert ack_segments(reply)["MSA"][1] == "AR"
        assert entry_files(server) == []
        assert send(server, Order())["MSA"][1] == "AA"
    finally:
        server.stop()


def test_sender_allow_lists(tmp_path: Path) -> None:
    server = Hl7Server(tmp_path, "--hl7-allow-senders", "10.0.0.0/8",
                       "--hl7-allow-applications", "RIS^HOSPITAL")
    try:
        assert raw_exchange(server.hl7_port, VT + Order().message() + FS + CR) == b""
        assert entry_files(server) == []
    finally:
        server.stop()
    server = Hl7Server(tmp_path / "second", "--hl7-allow-applications", "RIS^HOSPITAL")
    try:
        assert send(server, Order(sender="OTHER^HOSPITAL"))["MSA"][1] == "AR"
        assert entry_files(server) == []
        assert send(server, Order(control_id="M2"))["MSA"][1] == "AA"
    finally:
        server.stop()


def test_mllp_over_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = Hl7Server(tmp_path, "--hl7-tls", "--tls-key", str(pki / "server.key"),
                       "--tls-cert", str(pki / "server.crt"))
    try:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.check_hostname = False
        with socket.create_connection((HOST, server.hl7_port), timeout=10) as raw, \
                context.wrap_socket(raw) as tls:
            tls.sendall(VT + Order().message() + FS + CR)
            reply = b""
            while FS + CR not in reply:
                reply += tls.recv(4096)
        assert ack_segments(reply)["MSA"][1] == "AA"
        assert len(worklist(server.port, tls=context)) == 1  # --tls-key serves DICOM TLS too
    finally:
        server.stop()


def test_child_respawned_recycled_on_reload_and_stopped_with_the_server(
        server: Hl7Server) -> None:
    first = server.hl7_child()
    first.send_signal(signal.SIGKILL)
    second = server.hl7_child()
    assert second.pid != first.pid
    assert send(server, Order())["MSA"][1] == "AA"
    server.reload()
    wait_until(lambda: not second.is_running() or second.status() == "zombie",
               what="old HL7 child gone after SIGHUP")
    third = server.hl7_child()
    assert send(server, Order(control="CA", control_id="M2"))["MSA"][1] == "AA"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert not third.is_running() or third.status() == "zombie"


def test_single_process_mode_serves_hl7(tmp_path: Path) -> None:
    server = Hl7Server(tmp_path, "--single-process")
    try:
        assert send(server, Order())["MSA"][1] == "AA"
        assert len(worklist(server.port)) == 1
    finally:
        server.stop()


def test_journal_is_owner_only(server: Hl7Server) -> None:
    send(server, Order())
    assert stat.S_IMODE(server.journal.stat().st_mode) == 0o700
    assert stat.S_IMODE((server.journal / "journal.log").stat().st_mode) == 0o600
    assert "Doe" not in server.log()  # no patient data in the log at -v


def test_replay_after_a_mapping_fix_and_test_command(tmp_path: Path) -> None:
    server = Hl7Server(tmp_path, mapping='[[route]]\nmodality = "CT"\nae = "MR_WL"\n')
    try:
        ack = send(server, Order(modality="US"))
        assert ack["MSA"][1] == "AE" and "no route" in ack["MSA"][3]
        message_file = tmp_path / "order.hl7"
        message_file.write_bytes(Order(modality="US").message())
        fixed = tmp_path / "fixed.toml"
        fixed.write_text(f'default_ae = "{CALLED_AE}"\n')
        common = ["-dfp", str(server.root), "--mapping", str(fixed)]
        shown = subprocess.run([sys.executable, "-m", "wlmd.hl7", "test", *common,
                                str(message_file)], capture_output=True, text=True, check=True)
        assert f"# {CALLED_AE}/hl7_FI1001_RP1001_SPS1001.wl" in shown.stdout
        assert entry_files(server) == []  # test writes nothing
        config = tmp_path / "wlmctl.conf"
        config.write_text(f'hl7_mapping = "{fixed}"\nhl7_journal = "{server.journal}"\n')
        replayed = wlmctl(server.root, "--config", str(config), "hl7", "replay", "--from", "1")
        assert (replayed.returncode, replayed.stdout.strip()) == (0, "1: AA created")
        (entry,) = worklist(server.port)
        assert entry.ScheduledProcedureStepSequence[0].Modality == "US"
    finally:
        server.stop()
