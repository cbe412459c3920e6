"""Per-peer policy (issue #17) end to end: wlmd with [[policy]] tables, queried by pynetdicom's
SCU and DCMTK's findscu with the calling AE title each test needs.

Entries are stored in Latin-1, Cyrillic, Greek, Japanese (ISO 2022 IR 87) and UTF-8; peers
declare each of those sets and must get every name in their own set (characters it cannot hold
as '?', the configured fallback), matching on non-ASCII values compares decoded text.
"""

from __future__ import annotations

import contextlib
import datetime
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from tests.support.processes import (
    dcmtk_tool,
    free_port,
    require_dcmtk,
    start_wlmd,
    stop_process,
    wait_until,
)
from tests.support.server import rejection
from tests.support.wlmctl import wlmctl
from tests.support.worklist_entries import entry, write_entry
from wlmd.policy.charsets import Charset


def day(offset: int) -> str:
    """The date ``offset`` days from today, taken when the entries are written, not when the
    module is collected: a run that crosses midnight moved the server's window away from
    dates of the day before."""
    return f"{datetime.date.today() + datetime.timedelta(days=offset):%Y%m%d}"


@dataclass(frozen=True)
class Stored:
    file: str
    charset: str  # as (0008,0005) holds it, '\' between terms
    name: str
    station: str
    modality: str
    offset: int  # scheduled day, relative to today


STORED = (
    Stored("latin.wl", "ISO_IR 100", "Müller^Jörg", "CT1", "CT", 0),
    Stored("cyrillic.wl", "ISO_IR 144", "Иванов^Иван", "CT2", "MR", 0),
    Stored("greek.wl", "ISO_IR 126", "Παπαδόπουλος^Γιώργος", "CT1", "CT", 5),
    Stored("japanese.wl", "ISO 2022 IR 6\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎", "CT1",
           "CT", 1),
    Stored("utf8.wl", "ISO_IR 192", "Ørsted^Åsa", "CT2", "CT", -10),
    Stored("ascii.wl", "", "Smith^John", "CT1", "MR", -1),
)
CHARSETS = sorted({s.charset for s in STORED if s.charset})

CONFIG = """
[[policy]]
name = "gate"
called_ae = "GATED"
allow_calling = ["GOOD*"]

[[policy]]
name = "room1"
called_ae = "WLMD"
calling_ae = "CT1"
station_from_caller = true
date_window_days = 1
add_return_keys = ["PatientWeight"]
drop_return_keys = ["PatientBirthDate"]

[[policy]]
name = "mr-only"
calling_ae = "MRSCANNER"
set_keys = ["ScheduledProcedureStepSequence[0].Modality=MR"]

[[policy]]
name = "limit-refuse"
calling_ae = "LIMR"
max_answers = 2

[[policy]]
name = "limit-partial"
calling_ae = "LIMP"
max_answers = 2
on_too_many = "partial"

[[policy]]
name = "limit-truncate"
calling_ae = "LIMT"
max_answers = 2
on_too_many = "truncate"

[[policy]]
name = "fold"
calling_ae = "FOLD"
name_matching = "fold"

[[policy]]
name = "sound"
calling_ae = "SOUND"
name_matching = "phonetic"

[[policy]]
name = "charsets"
calling_ae = "CSQ"
charset = "query"
charset_fallback = "replace"

[[policy]]
name = "latin-only"
calling_ae = "LATIN"
charset = "ISO_IR 100"
charset_fallback = "omit"
"""


@dataclass
class Server:
    port: int
    log: Path
    root: Path  # -dfp
    config: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("policy")
    for stored in STORED:
        terms = stored.charset.split("\\")
        ds = entry(stored.name, charset=terms if len(terms) > 1 else stored.charset,
                   station=stored.station, modality=stored.modality, date=day(stored.offset),
                   patient_id=stored.file.split(".")[0].upper(), PatientWeight="70")
        write_entry(root / "db" / "WLMD", stored.file, ds)
    write_entry(root / "db" / "GATED", "one.wl", entry("Gated^One"))
    config = root / "wlmd.conf"
    config.write_text(CONFIG, encoding="utf-8")
    port = free_port()
    log = root / "wlmd.log"
    with log.open("wb") as stderr:
        proc = start_wlmd(["--config", str(config), "-dfp", str(root / "db"), "-ll", "info"],
                          port, stderr=stderr)
    try:
        yield Server(port, log, root / "db", config)
    finally:
        stop_process(proc)


def mask(charset: str = "", **top: object) -> Dataset:
    ds = Dataset()
    if charset:
        terms = charset.split("\\")
        ds.SpecificCharacterSet = terms if len(terms) > 1 else charset
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    step = Dataset()
    step.ScheduledStationAETitle = ""
    step.Modality = ""
    step.ScheduledProcedureStepStartDate = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


@dataclass
class Answer:
    statuses: list[int]
    identifiers: list[Dataset]
    comment: str = ""

    @property
    def ids(self) -> list[str]:
        return sorted(str(ds.PatientID) for ds in self.identifiers)


def pynetdicom_find(port: int, calling: str, query: Dataset, called: str = "WLMD") -> Answer:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    answer = Answer([], [])
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            answer.statuses.append(status.Status)
            if identifier is not None:
                answer.identifiers.append(identifier)
            if "ErrorComment" in status:
                answer.comment = str(status.ErrorComment)
    finally:
        assoc.release()
    return answer


def findscu(port: int, calling: str, out: Path, *keys: str, called: str = "WLMD") -> Answer:
    require_dcmtk("findscu")
    out.mkdir()
    args = [arg for key in keys for arg in ("-k", key)]
    done = subprocess.run([dcmtk_tool("findscu"), "-W", "-X", "-od", str(out), "-aet", calling,
                           "-aec", called, *args, "127.0.0.1", str(port)],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    identifiers = [dcmread(path) for path in sorted(out.iterdir())]
    return Answer([], identifiers)


def names_in(answer: Answer) -> dict[str, str]:
    """PatientID -> PatientName as the peer reads it, checked against (0008,0005)."""
    return {str(ds.PatientID): str(ds.PatientName) for ds in answer.identifiers}


def readable(name: str, charset: str) -> str:
    """``name`` as a peer declaring ``charset`` must receive it ('?' where it cannot)."""
    target = Charset.of(charset)
    return "".join(ch if target.can_hold(ch) else "?" for ch in name)


def log_lines(server: Server, word: str, at_least: int = 1) -> list[str]:
    """The log lines holding ``word``, waiting a little for ``at_least`` of them: the
    supervisor writes the association line after the worker reports, which may be after the
    client is done."""
    def found() -> list[str]:
        return [line for line in server.log.read_text(errors="replace").splitlines()
                if word in line]
    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(found()) >= at_least, timeout=5)
    return found()


# --- 1. the calling-AE allow-list --------------------------------------------------------------


def test_caller_outside_the_allow_list_is_rejected_1_1_3_and_logged(server: Server) -> None:
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assert rejection(ae, server.port, "GATED") == (1, 1, 3)
    assert pynetdicom_find(server.port, "GOOD1", mask(), called="GATED").ids == ["P1"]
    refused = [line for line in log_lines(server, "calling='INTRUDER'")]
    assert refused and "outcome=rejected" in refused[-1] and "policy=gate" in refused[-1]


def test_findscu_outside_the_allow_list_is_rejected(server: Server, tmp_path: Path) -> None:
    require_dcmtk("findscu")
    done = subprocess.run([dcmtk_tool("findscu"), "-W", "-aet", "OTHER", "-aec", "GATED",
                           "-k", "PatientName", "127.0.0.1", str(server.port)],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode != 0
    assert b"Calling AE Title Not Recognized" in done.stderr


# --- 2-3. station from the caller, coercion, date window, return keys -------------------------


def test_station_from_caller_with_date_window_and_return_keys(server: Server,
                                                              tmp_path: Path) -> None:
    expected = ["JAPANESE", "LATIN", "ASCII"]  # CT1, scheduled today-1 .. today+1
    answer = pynetdicom_find(server.port, "CT1", mask())
    assert answer.ids == sorted(expected)
    for ds in answer.identifiers:
        assert "PatientBirthDate" not in ds  # dropped
        assert ds.PatientWeight == "70"  # added
    by_findscu = findscu(server.port, "CT1", tmp_path / "out", "PatientName", "PatientID",
                         "ScheduledProcedureStepSequence[0].ScheduledStationAETitle")
    assert by_findscu.ids == sorted(expected)
    assert [line for line in log_lines(server, "calling='CT1'") if "policy=room1" in line]


def test_a_query_naming_its_station_keeps_it(server: Server) -> None:
    query = mask()
    query.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "CT2"
    query.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = (
        f"{day(-30)}-{day(30)}")
    assert pynetdicom_find(server.port, "CT1", query).ids == ["CYRILLIC", "UTF8"]


def test_set_keys_apply_only_when_the_query_leaves_them_open(server: Server,
                                                             tmp_path: Path) -> None:
    assert pynetdicom_find(server.port, "MRSCANNER", mask()).ids == ["ASCII", "CYRILLIC"]
    query = mask()
    query.ScheduledProcedureStepSequence[0].Modality = "CT"
    assert len(pynetdicom_find(server.port, "MRSCANNER", query).ids) == 4
    assert findscu(server.port, "MRSCANNER", tmp_path / "out", "PatientID",
                   "ScheduledProcedureStepSequence[0].Modality").ids == ["ASCII", "CYRILLIC"]


def test_no_policy_for_the_caller_answers_as_wlmscpfs(server: Server) -> None:
    answer = pynetdicom_find(server.port, "SOMEONE", mask())
    assert len(answer.ids) == len(STORED)
    assert all("PatientBirthDate" in ds and "PatientWeight" not in ds
               for ds in answer.identifiers)
    lines = log_lines(server, "calling='SOMEONE'")
    assert lines and "policy=" not in lines[-1]


# --- 4. answer limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(("calling", "pending", "final"), [
    ("LIMR", 0, 0xA700), ("LIMP", 2, 0xA700), ("LIMT", 2, 0x0000),
])
def test_max_answers(server: Server, calling: str, pending: int, final: int) -> None:
    answer = pynetdicom_find(server.port, calling, mask())
    assert answer.statuses == [0xFF00] * pending + [final]
    if final:
        assert "Too many matches" in answer.comment
    warned = log_lines(server, f"Query from {calling} ")
    assert warned and "max_answers 2" in warned[-1]


def test_findscu_sees_the_truncated_answers(server: Server, tmp_path: Path) -> None:
    assert len(findscu(server.port, "LIMT", tmp_path / "out", "PatientID").ids) == 2


# --- 5. name matching ---------------------------------------------------------------------------


def test_case_and_accent_insensitive_names(server: Server, tmp_path: Path) -> None:
    assert pynetdicom_find(server.port, "FOLD", mask(PatientName="muller^jorg")).ids == ["LATIN"]
    assert pynetdicom_find(server.port, "SOMEONE", mask(PatientName="muller^jorg")).ids == []
    assert findscu(server.port, "FOLD", tmp_path / "out", "PatientName=MUL*",
                   "PatientID").ids == ["LATIN"]


def test_phonetic_names(server: Server, tmp_path: Path) -> None:
    assert pynetdicom_find(server.port, "SOUND", mask(PatientName="SMYTH^JON")).ids == ["ASCII"]
    assert findscu(server.port, "SOUND", tmp_path / "out", "PatientName=SMYTHE",
                   "PatientID").ids == ["ASCII"]
    assert pynetdicom_find(server.port, "FOLD", mask(PatientName="SMYTH^JON")).ids == []


# --- 6. character sets --------------------------------------------------------------------------


@pytest.mark.parametrize("asked", CHARSETS)
def test_every_entry_in_the_peers_charset_pynetdicom(server: Server, asked: str) -> None:
    answer = pynetdicom_find(server.port, "CSQ", mask(asked))
    assert len(answer.identifiers) == len(STORED)
    names = names_in(answer)
    for stored in STORED:
        assert names[stored.file.split(".")[0].upper()] == readable(stored.name, asked)
    for ds in answer.identifiers:
        declared = ds.SpecificCharacterSet
        declared = "\\".join(declared) if not isinstance(declared, str) else declared
        assert declared == asked


@pytest.mark.parametrize("asked", CHARSETS)
def test_every_entry_in_the_peers_charset_findscu(server: Server, tmp_path: Path,
                                                 asked: str) -> None:
    answer = findscu(server.port, "CSQ", tmp_path / "out", f"SpecificCharacterSet={asked}",
                     "PatientName", "PatientID")
    names = names_in(answer)
    assert len(names) == len(STORED)
    for stored in STORED:
        assert names[stored.file.split(".")[0].upper()] == readable(stored.name, asked)


def test_omit_leaves_out_entries_the_peer_cannot_read_and_logs_once(server: Server) -> None:
    """Once per entry in each worker process that met it."""
    for _ in range(2):
        answer = pynetdicom_find(server.port, "LATIN", mask())
        assert answer.ids == ["ASCII", "LATIN", "UTF8"]
    omitted = log_lines(server, "cannot represent (policy latin-only)")
    workers = {line.split(" worker=")[1].split()[0]
               for line in log_lines(server, "calling='LATIN'", 2) if " worker=" in line}
    assert 1 <= len([line for line in omitted if "cyrillic.wl" in line]) <= len(workers)
    assert not [line for line in omitted if "Иванов" in line]  # no patient data


@pytest.mark.parametrize(("asked", "value", "expected"), [
    ("ISO_IR 192", "Иванов*", ["CYRILLIC"]),
    ("ISO_IR 144", "Иванов^Иван", ["CYRILLIC"]),
    ("ISO_IR 192", "Müller^Jörg", ["LATIN"]),
    ("ISO_IR 100", "Ørsted^Åsa", ["UTF8"]),
    ("ISO 2022 IR 6\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎", ["JAPANESE"]),
    ("ISO_IR 192", "Yamada^Tarou=山田^太郎", ["JAPANESE"]),
])
def test_non_ascii_values_match_as_decoded_text(server: Server, asked: str, value: str,
                                               expected: list[str]) -> None:
    assert pynetdicom_find(server.port, "CSQ", mask(asked, PatientName=value)).ids == expected


# --- wlmctl explain tells the truth under a policy -----------------------------------------


def explain(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return wlmctl(server.root, "--config", str(server.config), "explain", *args)


def explained_matches(output: str) -> list[str]:
    return sorted(line.split(".")[0].upper() for line in output.splitlines()
                  if line.endswith(": matches"))


def test_explain_applies_the_callers_policy(server: Server) -> None:
    keys = ("-k", "PatientName", "-k", "ScheduledProcedureStepSequence[0].Modality")
    result = explain(server, "WLMD", "-aet", "CT1", *keys)
    assert result.returncode == 0, result.stderr
    assert "policy: room1 (calling AE CT1)" in result.stdout
    assert explained_matches(result.stdout) == pynetdicom_find(server.port, "CT1", mask()).ids
    assert "ScheduledStationAETitle" in next(line for line in result.stdout.splitlines()
                                             if line.startswith("cyrillic.wl"))
    plain = explain(server, "WLMD", *keys)  # findscu's default title: no policy applies
    assert "policy: none (calling AE FINDSCU)" in plain.stdout
    assert len(explained_matches(plain.stdout)) == len(STORED)


def test_explain_text_matching_omitted_entries_limits_and_refusals(server: Server) -> None:
    folded = explain(server, "WLMD", "-aet", "FOLD", "-k", "PatientName=muller^jorg").stdout
    assert explained_matches(folded) == ["LATIN"]
    assert "PatientName does not match (compared as text, policy fold)" in folded
    latin = explain(server, "WLMD", "-aet", "LATIN", "-k", "PatientName").stdout
    assert explained_matches(latin) == pynetdicom_find(server.port, "LATIN", mask()).ids
    assert "cannot represent (charset_fallback omit, policy latin-only)" in latin
    limited = explain(server, "WLMD", "-aet", "LIMT", "-k", "PatientName").stdout
    assert "max_answers 2 (truncate): 2 of them are sent" in limited
    refused = explain(server, "GATED", "-aet", "INTRUDER", "-k", "PatientName")
    assert refused.returncode != 0
    assert "refused by policy 'gate' (A-ASSOCIATE-RJ 1/1/3)" in refused.stderr
