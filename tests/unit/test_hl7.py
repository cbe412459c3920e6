"""HL7 intake parts on their own: charsets, mapping file, ACK/ERR forms, journal, order book."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.hl7 import CALLED_AE, Order
from wlmd.hl7.ack import Header, acknowledgement, application_acknowledgement
from wlmd.hl7.charsets import by_hl7_name, msh18_of
from wlmd.hl7.intake import ApplicationRule, Intake
from wlmd.hl7.journal import FILE_NAME, KEEP_ROTATED, Journal, received_in
from wlmd.hl7.mapping import Mapping, MappingError
from wlmd.hl7.message import Hl7Error, OrderMessage

DEFAULT = dataclasses.replace(Mapping.default(), default_ae=CALLED_AE)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for ae in (CALLED_AE, "MR_WL"):
        (tmp_path / "wl" / ae).mkdir(parents=True)
    return tmp_path / "wl"


def mapping_file(tmp_path: Path, text: str) -> Mapping:
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return Mapping.load(path)


def test_msh18_is_read_from_the_raw_header() -> None:
    raw = Order(charset="8859/1", name="Müller^Jö").message()
    assert msh18_of(raw) == "8859/1"
    assert msh18_of(Order().message()) == ""
    assert by_hl7_name("8859/15").dicom == "ISO_IR 203"  # type: ignore[union-attr]
    assert by_hl7_name("ISO 2022-1994") is None


def test_undeclared_latin1_bytes_are_refused_not_guessed() -> None:
    raw = Order().message().replace(b"Doe", "Müller".encode("latin-1"))
    with pytest.raises(Hl7Error) as refused:
        OrderMessage.decode(raw)
    assert (refused.value.ack, refused.value.location) == ("AR", "MSH-18")


def test_mapping_file_overrides_constants_and_routes(tmp_path: Path) -> None:
    mapping = mapping_file(tmp_path, f"""
default_ae = "{CALLED_AE}"
[fields]
AccessionNumber = "OBR-2.1"
AdmissionID = []
[constants]
InstitutionName = "General Hospital"
"ScheduledProcedureStepSequence.ScheduledStationName" = "ROOM 3"
[[route]]
modality = "M?"
location = "RAD*"
ae = "MR_WL"
station_ae = "MR01"
""")
    message = OrderMessage.decode(Order(modality="MR").message())
    ((_group, entry),) = mapping.entries(message)
    assert entry.ae == "MR_WL"
    assert entry.dataset.AccessionNumber == "PL1001"
    assert entry.dataset.InstitutionName == "General Hospital"
    step = entry.dataset.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledStationAETitle, step.ScheduledStationName) == ("MR01", "ROOM 3")
    ((_group, other),) = mapping.entries(OrderMessage.decode(Order(modality="CT").message()))
    assert other.ae == CALLED_AE


@pytest.mark.parametrize(("text", "complaint"), [
    ("[fields]\nNotAKeyword = \"PID-3\"\n", "not a DICOM keyword"),
    ("[fields]\nPatientID = \"PID3\"\n", "not an HL7 field location"),
    ("[[route]]\nmodality = \"CT\"\n", "needs ae"),
    ("[[route]]\nae = \"../etc\"\n", "not a usable called AE"),
    ("character_set = \"ISO 2022 IR 87\"\n", "unsupported"),
    ("surprise = 1\n", "unknown key"),
    ("default_ae = \n", "mapping.toml"),
])
def test_bad_mapping_files_are_refused_with_the_reason(tmp_path: Path, text: str,
                                                       complaint: str) -> None:
    with pytest.raises(MappingError, match=complaint):
        mapping_file(tmp_path, text)


def test_names_and_codes_follow_the_ihe_mapping() -> None:
    order = Order(name="Smith^Anna^Maria^Jr^Dr", code="71020^Chest 2 views^C4")
    ((_group, entry),) = DEFAULT.entries(OrderMessage.decode(order.message()))
    ds = entry.dataset
    assert str(ds.PatientName) == "Smith^Anna^Maria^Dr^Jr"  # HL7 suffix^prefix, DICOM swapped
    assert str(ds.ReferringPhysicianName) == "Welby^Marcus"  # XCN: the ID is left out
    code = ds.RequestedProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodeMeaning, code.CodingSchemeDesignator) == (
        "71020", "Chest 2 views", "C4")
    assert entry.key == ("FI1001", "RP1001", "SPS1001")


def test_study_uid_is_stable_per_order_when_generated() -> None:
    def uid(order: Order) -> str:
        ((_g, entry),) = DEFAULT.entries(OrderMessage.decode(order.message()))
        return str(entry.dataset.StudyInstanceUID)

    assert uid(Order()) == uid(Order(control_id="OTHER"))
    assert uid(Order()) != uid(Order(filler="FI2"))
    assert uid(Order(study_uid="1.2.3")) == "1.2.3"


def test_original_and_enhanced_acknowledgements() -> None:
    header = Header.of(Order(version="2.3").message())
    error = Hl7Error("bad | value^here", location="PID-5", code="102")
    ack = acknowledgement(header, "AE", error, "ascii")
    assert ack is not None
    msh, msa, err = ack.decode().strip("\r").split("\r")
    assert msh.split("|")[2:6] == ["WLMD", "RADIOLOGY", "RIS", "HOSPITAL"]
    assert msa == "MSA|AE|MSG0001|bad \\F\\ value\\S\\here"
    assert err == "ERR|PID^1^5^102&Data type error"
    enhanced = Header.of(Order(version="2.5.1", ack_modes=("SU", "AL")).message())
    assert acknowledgement(enhanced, "AE", error, "ascii") is None  # SU: success only
    accepted = acknowledgement(enhanced, "AA", None, "ascii")
    assert accepted is not None and b"MSA|CA|MSG0001" in accepted


@pytest.mark.parametrize(("modes", "code", "wanted"), [
    (("AL", "AL"), "AA", True), (("AL", "AL"), "AE", True), (("NE", "ER"), "AA", False),
    (("NE", "ER"), "AR", True), (("AL", "SU"), "AA", True), (("AL", "SU"), "AE", False),
    (("AL", "NE"), "AA", False), (("AL", ""), "AA", False), (("", ""), "AA", False)])
def test_application_acknowledgement_follows_msh16(modes: tuple[str, str], code: str,
                                                    wanted: bool) -> None:
    header = Header.of(Order(version="2.5.1", ack_modes=modes).message())
    error = None if code == "AA" else Hl7Error("unknown order", location="ORC-3", code="204")
    ack = application_acknowledgement(header, code, error, "ascii")
    assert (ack is not None) == wanted
    if ack is not None:
        msh, msa, *rest = ack.decode().strip("\r").split("\r")
        assert msa.startswith(f"MSA|{code}|MSG0001")  # the application's code, not CA/CE/CR
        assert msh.split("|")[14:16] == ["NE", "NE"]  # no acknowledgement asked back
        assert bool(rest) == (error is not None)  # an ERR segment with a refusal


def test_unparseable_input_still_gets_a_nak() -> None:
    ack = acknowledgement(Header.of(b"\x00garbage"), "AR", Hl7Error("no MSH"), "ascii")
    assert ack is not None and ack.split(b"\r")[1] == b"MSA|AR||no MSH"


def test_application_allow_list() -> None:
    rules = ApplicationRule.parse_list("RIS^HOSPITAL, PACS")
    assert rules[0].allows("ris", "hospital")
    assert not rules[0].allows("RIS", "ELSEWHERE")
    assert rules[1].allows("PACS", "ANY")
    assert ApplicationRule.parse_list(None) == ()


def test_journal_is_durable_owner_only_and_recovers_unfinished(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    first = journal.received(b"MSH|one", "127.0.0.1", "RIS|H|1")
    journal.done(first, "AA")
    journal.received(b"MSH|two", "127.0.0.1", "RIS|H|2")  # the process dies here
    journal.close()
    assert stat.S_IMODE((tmp_path / "j" / FILE_NAME).stat().st_mode) == 0o600
    with (tmp_path / "j" / FILE_NAME).open("a") as torn:
        torn.write('{"seq":3,"event":"rec')  # a crash in the middle of an append
    again = Journal(tmp_path / "j")
    assert again.accepted("RIS|H|1") and not again.accepted("RIS|H|2")
    assert [(r.seq, r.raw) for r in again.pending()] == [(2, b"MSH|two")]
    assert again.received(b"MSH|three", "x", "k").seq == 3


def test_journal_rotates_and_keeps_a_fixed_number(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=200)
    for number in range(KEEP_ROTATED + 4):
        record = journal.received(b"MSH|" + b"x" * 200, "peer", f"k{number}")
        journal.done(record, "AA")
    journal.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == KEEP_ROTATED + 1
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir())
    assert [r.seq for r in received_in(tmp_path, 1, 100)] == list(range(5, KEEP_ROTATED + 5))
    assert Journal(tmp_path).accepted(f"k{KEEP_ROTATED + 3}")


def test_failed_message_changes_nothing_even_with_several_orders(root: Path,
                                                                 tmp_path: Path) -> None:
    """The second order group is unknown: the first (valid) one is not applied either."""
    intake = Intake(root, mapping_file(tmp_path, f'default_ae = "{CALLED_AE}"\n'))
    assert intake.handle(Order().message(), "test").ack_code == "AA"
    text = Order(control="XO", control_id="M2", code="X^Changed^L").message().decode()
    second = text[text.index("ORC|"):].replace("FI1001", "NOSUCH").replace("PL1001", "PL9")
    result = intake.handle((text + second).encode(), "test")
    assert result.ack_code == "AE" and result.error is not None
    assert result.error.code == "204"
    (path,) = root.glob("*/*.wl")
    assert dcmread(path).RequestedProcedureDescription == "CT head"


def test_writes_are_owner_only_files(root: Path, tmp_path: Path) -> None:
    intake = Intake(root, mapping_file(tmp_path, f'default_ae = "{CALLED_AE}"\n'))
    intake.handle(Order().message(), "test")
    (path,) = root.glob("*/*.wl")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".wlmd-")]


def test_journal_lines_are_json_with_base64_messages(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.done(journal.received("MSH|Ü".encode(), "peer", "k"), "AE", "PID-5 102: x")
    lines = [json.loads(line) for line in (tmp_path / FILE_NAME).read_text().splitlines()]
    assert [line["event"] for line in lines] == ["received", "done"]
    assert lines[1]["ack"] == "AE"


def test_a_cancel_applied_before_a_crash_is_not_refused_on_recovery_or_resend(
        root: Path, tmp_path: Path) -> None:
    """The crash came after the entry was removed but before ``done`` reached the disk: the
    restart applies the cancel again (the entry is already gone: nothing to do, AA) and the
    sender's resend is a duplicate, not an unknown order."""
    mapping = mapping_file(tmp_path, f'default_ae = "{CALLED_AE}"\n')
    journal = Journal(tmp_path / "j")
    intake = Intake(root, mapping, journal)
    assert intake.handle(Order().message(), "test").ack_code == "AA"
    cancel = Order(control="CA", control_id="M2").message()
    assert intake.handle(cancel, "test").ack_code == "AA"
    journal.close()
    path = tmp_path / "j" / FILE_NAME
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # the cancel's done line was lost
    restarted = Intake(root, mapping, Journal(tmp_path / "j"))
    assert restarted.recover() == 1
    assert list(root.glob("*/*.wl")) == []
    resent = restarted.handle(cancel, "test")
    assert (resent.ack_code, resent.outcomes) == ("AA", ())
    done = [json.loads(line) for line in path.read_text().splitlines() if '"done"' in line]
    assert [(d["ack"], d["detail"]) for d in done] == [("AA", ""), ("AA", ""),
                                                       ("AA", "duplicate")]
