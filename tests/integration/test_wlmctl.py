"""Every ``wlmctl`` subcommand, run as a process on a real worklist directory."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from tests.support.wlmctl import entry_keys, wlmctl
from wlmd.dicom.dump import dump_request
from wlmd.worklist.writer import encode_entry

AE = "CT01"
DCMTK_DUMP = Path("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS/wklist1.dump")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A worklist root with one empty AE directory (and its lockfile)."""
    root = tmp_path / "worklists"
    (root / AE).mkdir(parents=True)
    (root / AE / "lockfile").touch()
    return root


def files(root: Path) -> dict[str, bytes]:
    """Every file of the AE directory and its bytes: proves what changed and what did not."""
    return {p.name: p.read_bytes() for p in sorted((root / AE).iterdir())}


def add(root: Path, *args: str) -> None:
    result = wlmctl(root, "add", AE, *args)
    assert result.returncode == 0, result.stderr


def listed(root: Path, *args: str) -> list[dict[str, str]]:
    result = wlmctl(root, "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_add_keywords_fills_in_and_writes_an_owner_only_entry_lint_accepts(root: Path) -> None:
    result = wlmctl(root, "add", AE, *entry_keys("A1", name="MÜLLER^JÖRG"))
    assert result.returncode == 0, result.stderr
    assert "filled in: SpecificCharacterSet, StudyInstanceUID, RequestedProcedureID, " \
           "ScheduledProcedureStepID" in result.stdout
    path, = (root / AE).glob("A1_*.wl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    dataset = dcmread(path)
    assert dataset.SpecificCharacterSet == "ISO_IR 192"
    assert str(dataset.PatientName) == "MÜLLER^JÖRG"
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert dataset.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    step = dataset.ScheduledProcedureStepSequence[0]
    assert path.name == f"A1_{step.ScheduledProcedureStepID}.wl"
    lint = wlmctl(root, "lint")
    assert (lint.returncode, lint.stdout) == (0, "")


def test_add_reads_json_dump_text_and_dicom_files(root: Path, tmp_path: Path) -> None:
    base = Dataset()
    base.PatientName = "JSON^ONE"
    (tmp_path / "one.json").write_text(json.dumps(base.to_json_dict()))
    (tmp_path / "two.json").write_text(json.dumps([base.to_json_dict(), base.to_json_dict()]))
    dicom = Dataset()
    dicom.PatientName = "FILE^DICOM"
    (tmp_path / "entry.dcm").write_bytes(encode_entry(dicom))
    for number, source in enumerate(("one.json", "entry.dcm")):
        keys = [k for k in entry_keys(f"J{number}") if not k.startswith("PatientName")]
        add(root, str(tmp_path / source), *keys)
    add(root, str(tmp_path / "two.json"), *entry_keys("J9")[1:])  # an array: two entries
    add(root, str(DCMTK_DUMP))  # DCMTK's own example, as dump2dcm reads it
    rows = {row["accession"]: row for row in listed(root)}
    assert rows["J0"]["patient_name"] == "JSON^ONE"
    assert rows["J1"]["patient_name"] == "FILE^DICOM"
    assert rows["00000"]["patient_name"] == "VIVALDI^ANTONIO"
    assert rows["00000"]["station"] == "AA32\\AA33"
    assert [row["accession"] for row in listed(root)].count("J9") == 2


def test_add_from_standard_input(root: Path) -> None:
    dataset = Dataset()
    dataset.PatientName = "STDIN^PAT"
    result = wlmctl(root, "add", AE, "-", *entry_keys("S1")[1:],
                    input=json.dumps(dataset.to_json_dict()).encode())
    assert result.returncode == 0, result.stderr
    assert listed(root)[0]["patient_name"] == "STDIN^PAT"


@pytest.mark.parametrize(("args", "message"), [
    (["PatientName=DOE^JOHN"], "refused: -: wlmd and wlmscpfs skip this file"),
    (["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20241399"],
     "is not a date"),
    (["SpecificCharacterSet=ISO_IR 100", "PatientName=ИВАНОВ"], "cannot encode"),
    (["NoSuchKeyword=1"], "Unable to parse tag/dictionary name"),
    (["not-a-file-or-key"], "neither a file nor a KEY=VALUE"),
])
def test_add_refuses_bad_input_with_one_line_and_changes_nothing(
        root: Path, args: list[str], message: str) -> None:
    before = files(root)
    keys = [k for k in entry_keys("B1") if k.split("=")[0] not in {a.split("=")[0] for a in args}]
    result = wlmctl(root, "add", AE, *(keys if "PatientName=DOE^JOHN" not in args else []),
                    *args)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert files(root) == before


def test_add_refuses_a_taken_name_or_sps_id_unless_replacing(root: Path) -> None:
    add(root, *entry_keys("A1"), "--name", "a1.wl")
    before = files(root)
    again = wlmctl(root, "add", AE, *entry_keys("A1", name="OTHER^ONE"), "--name", "a1.wl")
    assert again.returncode == 1 and "already exists" in again.stderr
    sps = dcmread(root / AE / "a1.wl").ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    duplicate = wlmctl(root, "add", AE, *entry_keys("A2"),
                       f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepID={sps}")
    assert duplicate.returncode == 1 and f"{sps} is also used by a1.wl" in duplicate.stderr
    assert files(root) == before
    add(root, *entry_keys("A1", name="OTHER^ONE"), "--name", "a1.wl", "--replace")
    assert [row["patient_name"] for row in listed(root)] == ["OTHER^ONE"]


def test_add_needs_new_ae_to_create_a_directory(root: Path) -> None:
    refused = wlmctl(root, "add", "MR01", *entry_keys("M1"))
    assert refused.returncode == 1 and "no worklist directory" in refused.stderr
    assert not (root / "MR01").exists()
    add_new = wlmctl(root, "add", "MR01", "--new-ae", *entry_keys("M1"))
    assert add_new.returncode == 0, add_new.stderr
    assert (root / "MR01" / "lockfile").is_file()
    assert [row["ae"] for row in listed(root)] == [AE, "MR01"][1:]


def test_list_table_dates_and_json(root: Path) -> None:
    today = datetime.date.today().strftime("%Y%m%d")
    add(root, *entry_keys("T1", date=today, name="TODAY^PAT"))
    add(root, *entry_keys("T2", date="20240305", modality="MR", station="MR01"))
    table = wlmctl(root, "list").stdout.splitlines()
    assert table[0].split() == ["AE", "FILE", "PATIENT", "ID", "ACCESSION", "DATE", "TIME",
                                "MOD", "STATION", "STATUS"]
    assert len(table) == 3 and "TODAY^PAT" in table[2] and "MR01" in table[1]
    assert [row["accession"] for row in listed(root, "--date", "today")] == ["T1"]
    assert [row["accession"] for row in listed(root, "--date", "20240301-20240306")] == ["T2"]
    assert [row["accession"] for row in listed(root, "--date", "-20240305")] == ["T2"]
    bad = wlmctl(root, "list", "--date", "yesterday")
    assert bad.returncode == 1 and "--date yesterday" in bad.stderr


def test_show_by_accession_and_file(root: Path) -> None:
    add(root, *entry_keys("S1", name="SHOW^ME"))
    dump = wlmctl(root, "show", "S1")
    assert dump.returncode == 0
    assert "(0010,0010) PN [SHOW^ME ]" in dump.stdout  # padded to even length
    path, = (root / AE).glob("*.wl")
    as_json = json.loads(wlmctl(root, "show", "--json", str(path)).stdout)
    assert as_json["00100010"]["Value"] == [{"Alphabetic": "SHOW^ME"}]
    missing = wlmctl(root, "show", "NOPE")
    assert missing.returncode == 1 and "no entry file or accession number 'NOPE'" in missing.stderr


def test_set_status_and_rm(root: Path) -> None:
    add(root, *entry_keys("R1"))
    add(root, *entry_keys("R2", patient_id="P2"))
    add(root, *entry_keys("R2", patient_id="P3"), "--name", "second.wl")
    assert wlmctl(root, "set-status", "R1", "started").returncode == 0
    assert {r["accession"]: r["status"] for r in listed(root)}["R1"] == "STARTED"
    bad = wlmctl(root, "set-status", "R1", "FINISHED")
    assert bad.returncode == 1 and "not one of" in bad.stderr
    ambiguous = wlmctl(root, "rm", "R2")
    assert ambiguous.returncode == 1 and "names 2 entries" in ambiguous.stderr
    assert len(listed(root)) == 3
    assert wlmctl(root, "rm", "R2", "--all").returncode == 0
    assert wlmctl(root, "rm", f"{AE}/{(next((root / AE).glob('R1_*.wl'))).name}").returncode == 0
    assert listed(root) == []
    assert sorted(files(root)) == ["lockfile"]


def test_lint_reports_problems_one_per_line_and_fix_removes_only_stray_files(
        root: Path) -> None:
    add(root, *entry_keys("L1"))
    directory = root / AE
    (directory / "broken.wl").write_bytes(b"\0" * 10)
    good = next(directory.glob("L1_*.wl"))
    dataset = dcmread(good)
    step = dataset.ScheduledProcedureStepSequence[0]
    step[0x00400002] = raw(0x00400002, "DA", b"2024035 ")
    dataset[0x00100010] = raw(0x00100010, "PN", "ÄRGER".encode())  # no character set declared
    (directory / "copy.wl").write_bytes(encode_entry(dataset))
    stray = directory / ".wlmd-otherhost-1-abcdef.tmp"
    stray.write_bytes(b"partial")
    os.utime(stray, (1, 1))
    result = wlmctl(root, "lint")
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    expected = [
        "broken.wl: -: unreadable, wlmd skips it",
        "copy.wl: ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate: "
        "'2024035' is not a date",
        "copy.wl: PatientName: non-ASCII characters but no SpecificCharacterSet",
        "copy.wl: ScheduledProcedureStepSequence[0].ScheduledProcedureStepID: ",
        f"{stray.name}: -: stray temporary file",
    ]
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert len(lines) == len(expected)
    fixed = wlmctl(root, "lint", "--fix", AE)
    assert fixed.returncode == 1 and f"removed {stray}" in fixed.stdout
    assert not stray.exists() and (directory / "broken.wl").exists()
    only_good = wlmctl(root, "lint", str(good))
    assert (only_good.returncode, only_good.stdout) == (0, "")


def raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element holding exactly ``value``, as a broken writer would leave it."""
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def test_explain_says_which_key_excluded_each_entry(root: Path, tmp_path: Path) -> None:
    add(root, *entry_keys("E1", date="20240305", modality="MR", name="DOE^JOHN"))
    add(root, *entry_keys("E2", date="20240306", modality="MR", name="DOE^JANE",
                          patient_id="P2"))
    (root / AE / "incomplete.wl").write_bytes(encode_entry(_patient_only()))
    result = wlmctl(root, "explain", AE, "-k", "PatientName=DOE*", "-k",
                    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate="
                    "20240306-20240307", "-k", "ScheduledProcedureStepSequence[0].Modality=MR")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines()[:-1])
    e1 = next(name for name in lines if name.startswith("E1_"))
    e2 = next(name for name in lines if name.startswith("E2_"))
    assert lines[e1] == ("excluded: ScheduledProcedureStepStartDate '20240305' is outside "
                         "'20240306-20240307'")
    assert lines[e2] == "matches"
    assert lines["incomplete.wl"].startswith("not served: incomplete: ")
    assert result.stdout.splitlines()[-1] == "1 of 2 served entries match"
    # the same query as a request file written by -rfp (dump text)
    query = Dataset()
    query.PatientName = "DOE^JOHN"
    request = tmp_path / "request.dump"
    request.write_text(dump_request(query, ExplicitVRLittleEndian))
    from_file = wlmctl(root, "explain", AE, str(request)).stdout
    assert f"{e2}: excluded: PatientName 'DOE^JANE' does not match 'DOE^JOHN'" in from_file
    invalid = wlmctl(root, "explain", AE, "-k", "PatientBirthDate=tomorrow")
    assert invalid.returncode == 1 and "0xA900" in invalid.stderr


def _patient_only() -> Dataset:
    dataset = Dataset()
    dataset.PatientName = "NO^STEP"
    dataset.PatientID = "P9"
    return dataset


def test_expire_by_age_and_status_with_archive_and_dry_run(root: Path, tmp_path: Path) -> None:
    today = datetime.date.today()
    old = (today - datetime.timedelta(days=10)).strftime("%Y%m%d")
    recent = (today - datetime.timedelta(days=2)).strftime("%Y%m%d")
    add(root, *entry_keys("OLD", date=old))
    add(root, *entry_keys("NEW", date=recent, patient_id="P2"))
    add(root, *entry_keys("DONE", date=recent, patient_id="P3"))
    assert wlmctl(root, "set-status", "DONE", "COMPLETED").returncode == 0
    before = files(root)
    dry = wlmctl(root, "expire", "--older-than", "7", "--status", "COMPLETED", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.splitlines()[-1] == "2 entries would expire"
    assert files(root) == before
    archive = tmp_path / "archive"
    done = wlmctl(root, "expire", "--older-than", "7", "--status", "COMPLETED",
                  "--archive", str(archive))
    assert done.returncode == 0, done.stderr
    assert [row["accession"] for row in listed(root)] == ["NEW"]
    assert sorted(p.name.split("_")[0] for p in (archive / AE).iterdir()) == ["DONE", "OLD"]
    assert stat.S_IMODE((archive / AE).stat().st_mode) == 0o700
    nothing = wlmctl(root, "expire")
    assert nothing.returncode == 1 and "nothing to expire" in nothing.stderr


def test_expire_takes_its_defaults_from_wlmd_conf(root: Path, tmp_path: Path) -> None:
    add(root, *entry_keys("C1", date="20000101"))
    add(root, *entry_keys("C2", date="29991231", patient_id="P2"))
    config = tmp_path / "wlmd.conf"
    config.write_text(f'port = 104\ndata_files_path = "{root}"\n\n[expire]\nolder_than = 30\n'
                      'status = ["DISCONTINUED"]\n')
    result = wlmctl(root, "--config", str(config), "expire")
    assert result.returncode == 0, result.stderr
    assert [row["accession"] for row in listed(root)] == ["C2"]
    config.write_text("port = 104\n[expire]\nolder_than = -1\n")
    refused = wlmctl(root, "--config", str(config), "expire")
    assert refused.returncode == 1 and "older_than" in refused.stderr
