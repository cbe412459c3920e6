"""Per-peer policy (issue #17): the [[policy]] tables, the choice of a policy, names, charsets,
and what a policy does to a query and an answer."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from tests.support.worklist_entries import entry
from wlmd.cli import main
from wlmd.config.file import ConfigError, load_config
from wlmd.config.settings import CharsetMode
from wlmd.dicom.types import Admission
from wlmd.policy.apply import (
    AppliedQueries,
    PolicyQuery,
    apply_policy,
    convert_response,
    query_charset,
    value_of_path,
)
from wlmd.policy.charsets import Charset
from wlmd.policy.config import PolicyError, parse_policies
from wlmd.policy.model import Fallback, LimitAction, NameMatching, PeerPolicy, PolicySet
from wlmd.policy.names import fold_name, names_match
from wlmd.worklist.keys import (
    MODALITY,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SCHEDULED_STATION_AE_TITLE,
    SPS_START_DATE,
)
from wlmd.worklist.matching import matches
from wlmd.worklist.query import prepare_query
from wlmd.worklist.response import build_response

SPS = SCHEDULED_PROCEDURE_STEP_SEQUENCE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wlmd.conf"
    path.write_text(text, encoding="utf-8")
    return path


# --- configuration ----------------------------------------------------------------------------


def test_tables_load_in_file_order_with_every_key(tmp_path: Path) -> None:
    values = load_config(write(tmp_path, """
port = 104
[[policy]]
name = "ct"
called_ae = "WLMD"
calling_ae = "CT?"
station_from_caller = true
stations = ["CT1", "CT1B"]
set_keys = ["ScheduledProcedureStepSequence[0].Modality=CT"]
override_keys = ["(0010,0040)=F"]
date_window_days = 2
add_return_keys = ["PatientWeight"]
drop_return_keys = ["PatientBirthDate"]
max_answers = 5
on_too_many = "partial"
name_matching = "phonetic"
charset = "ISO 2022 IR 6\\\\ISO 2022 IR 87"
charset_fallback = "omit"

[[policy]]
called_ae = "MRWL"
allow_calling = ["MR*"]
"""))
    policies = values["policy"]
    assert isinstance(policies, PolicySet)
    first, second = policies.policies
    assert (first.name, second.name) == ("ct", "policy-2")
    assert first.on_too_many is LimitAction.PARTIAL
    assert first.name_matching is NameMatching.PHONETIC
    assert first.charset_fallback is Fallback.OMIT
    assert first.charset == "ISO 2022 IR 6\\ISO 2022 IR 87"
    assert [k.value for k in first.set_keys] == ["CT"]


@pytest.mark.parametrize(("table", "message"), [
    ('colour = "red"', "[[policy]] #1: unknown setting 'colour'"),
    ("max_answers = -1", "max_answers: expected an integer >= 0"),
    ('on_too_many = "drop"', "on_too_many: expected one of 'refuse', 'partial', 'truncate'"),
    ('charset = "ISO_IR 999"', "charset: unknown character set 'ISO_IR 999'"),
    ('set_keys = ["PatientWeight=70"]', "not a matching key at this level"),
    ('set_keys = ["Modality"]', "expected KEY=VALUE"),
    ('add_return_keys = ["PatientName=X"]', "a return key takes no value"),
    ('add_return_keys = ["NoSuchKeyword"]', "NoSuchKeyword"),
    ('stations = ["A_TITLE_LONGER_THAN_16"]', "is not an AE title"),
    ('calling_ae = "CT"\nallow_calling = ["CT"]', "allow_calling is per called AE"),
    ("station_from_caller = 1", "expected true or false"),
])
def test_bad_tables_are_refused_naming_table_and_key(tmp_path: Path, table: str,
                                                     message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"port = 104\n\n[[policy]]\nname = \"ok\"\n\n"
                                    f"[[policy]]\n{table}\n"))
    assert message.replace("#1", "#2") in str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'wlmd.conf'}:6: ")


def test_duplicate_names_and_a_non_table_are_refused() -> None:
    with pytest.raises(PolicyError, match="two policies are named 'a'"):
        parse_policies([{"name": "a"}, {"name": "a"}])
    with pytest.raises(PolicyError, match=r"expected \[\[policy\]\] tables"):
        parse_policies("x")


def test_check_config_validates_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    good = write(tmp_path, '[[policy]]\ncalled_ae = "WLMD"\nmax_answers = 3\n')
    assert main(["--check-config", "--config", str(good), "104"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    bad = write(tmp_path, '[[policy]]\nname_matching = "loose"\n')
    assert main(["--check-config", "--config", str(bad), "104"]) == 1
    assert "name_matching: expected one of" in capsys.readouterr().err


# --- choosing a policy ------------------------------------------------------------------------


def test_first_matching_policy_applies_and_allow_lists_hold_per_called_ae() -> None:
    policies = parse_policies([
        {"name": "ct", "called_ae": "WLMD", "calling_ae": "CT*"},
        {"name": "gate", "called_ae": "WLMD", "allow_calling": ["CT*", "MR1"]},
        {"name": "rest"},
    ])
    assert policies.for_peer("WLMD", "CT7").name == "ct"  # type: ignore[union-attr]
    assert policies.for_peer("WLMD", "MR1").name == "gate"  # type: ignore[union-attr]
    assert policies.for_peer("OTHER", "XA") is not None
    assert policies.admit("WLMD", "CT7") == Admission(True, "ct")
    refused = policies.admit("WLMD", "XA1")
    assert (refused.allowed, refused.policy) == (False, "gate")
    assert policies.admit("OTHER", "XA1").allowed
    assert policies.for_peer("wlmd", "CT7").name == "rest"  # type: ignore[union-attr]


# --- names ------------------------------------------------------------------------------------


def test_fold_name_ignores_case_accents_and_empty_trailing_components() -> None:
    assert fold_name("Müller^Jörg^^") == "MULLER^JORG"
    assert fold_name("ÉLODIE^Zoë=") == "ELODIE^ZOE"


@pytest.mark.parametrize(("query", "name", "phonetic", "expected"), [
    ("muller^jorg", "Müller^Jörg", False, True),
    ("MUL*", "Müller^Jörg", False, True),
    ("M?LLER^JORG", "Müller^Jörg", False, True),
    ("MILLER^JORG", "Müller^Jörg", False, False),
    ("SMYTH^JON", "Smith^John", True, True),
    ("SMYTH", "Smith^John", True, True),
    ("SMYTH^JON", "Smith^John", False, False),
    ("JONES", "Smith^John", True, False),
    ("SMY*", "Smith^John", True, False),  # wildcards are never phonetic
])
def test_names_match(query: str, name: str, phonetic: bool, expected: bool) -> None:
    assert names_match(query, name, phonetic=phonetic) is expected


# --- character sets ---------------------------------------------------------------------------

NAMES = {
    "ISO_IR 100": "Müller^Jörg",
    "ISO_IR 144": "Иванов^Иван",
    "ISO_IR 126": "Παπαδόπουλος^Γιώργος",
    "ISO 2022 IR 6\\ISO 2022 IR 87": "Yamada^Tarou=山田^太郎",
    "ISO_IR 192": "Ørsted^Åsa",
}


def _mask(**top: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    step = Dataset()
    step.ScheduledStationAETitle = ""
    step.Modality = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _answer(policy: PeerPolicy, record: Dataset, identifier: Dataset) -> Dataset | None:
    query = prepare_query(identifier, no_fail=False, expand_sequences=True)
    applied = apply_policy(policy, query, query_charset(identifier), "CT1")
    assert applied.target is not None
    response = build_response(applied.answer, record, CharsetMode.NONE)
    outcome = convert_response(response, Charset.of(_charset_text(record)), applied.target,
                               policy.charset_fallback)
    return None if outcome.omitted else response


def stored_bytes(ds: Dataset, keyword: str) -> bytes:
    """The element's bytes as they will be sent (without the padding)."""
    return ds.get_item(keyword).value.rstrip(b" ")


def _charset_text(ds: Dataset) -> str:
    value = ds.get("SpecificCharacterSet", "")
    return "\\".join(value) if not isinstance(value, str) else value


@pytest.mark.parametrize("stored", sorted(NAMES))
@pytest.mark.parametrize("asked", sorted(NAMES))
def test_answers_in_the_charset_the_query_declares(stored: str, asked: str) -> None:
    record = entry(NAMES[stored], charset=stored.split("\\") if "\\" in stored else stored)
    identifier = _mask(SpecificCharacterSet=asked.split("\\") if "\\" in asked else asked)
    policy = PeerPolicy("p", charset="query", charset_fallback=Fallback.REPLACE)
    response = _answer(policy, record, identifier)
    assert response is not None
    target = Charset.of(asked)
    raw = stored_bytes(response, "PatientName")
    text = target.decode(raw.rstrip(b" "), True)
    expected = "".join(ch if target.can_hold(ch) else "?" for ch in NAMES[stored])
    assert text == expected
    assert stored_bytes(response, "SpecificCharacterSet") == target.value


@pytest.mark.parametrize(("fallback", "expected"), [
    (Fallback.TRANSLITERATE, "Ivanov^Ivan"),
    (Fallback.REPLACE, "??????^????"),
    (Fallback.OMIT, None),
])
def test_fallbacks_for_characters_the_peer_cannot_read(fallback: Fallback,
                                                       expected: str | None) -> None:
    record = entry(NAMES["ISO_IR 144"], charset="ISO_IR 144")
    policy = PeerPolicy("p", charset="ISO_IR 100", charset_fallback=fallback)
    response = _answer(policy, record, _mask())
    if expected is None:
        assert response is None
        return
    assert response is not None
    assert stored_bytes(response, "PatientName") == expected.encode()
    assert stored_bytes(response, "SpecificCharacterSet") == b"ISO_IR 100"


def test_default_repertoire_answer_declares_no_charset() -> None:
    record = entry("Müller^Jörg", charset="ISO_IR 100")
    policy = PeerPolicy("p", charset="query")
    response = _answer(policy, record, _mask())
    assert response is not None
    assert stored_bytes(response, "PatientName") == b"Muller^Jorg"
    assert 0x00080005 not in response


# --- queries ----------------------------------------------------------------------------------


def _applied(policy: PeerPolicy, identifier: Dataset, calling: str = "CT1") -> PolicyQuery:
    query = prepare_query(identifier, no_fail=False, expand_sequences=True)
    return apply_policy(policy, query, query_charset(identifier), calling,
                        today=datetime.date(2026, 3, 10))


def test_station_date_window_and_coercion_change_the_match_mask_only() -> None:
    policy = PeerPolicy("p", station_from_caller=True, date_window_days=2,
                        set_keys=parse_policies([{"set_keys": [
                            "ScheduledProcedureStepSequence[0].Modality=MR"]}]).policies[0]
                        .set_keys)
    applied = _applied(policy, _mask())
    path = (SPS, SCHEDULED_STATION_AE_TITLE)
    assert value_of_path(applied.match.mask, path) == ("AE", b"CT1 ")
    assert value_of_path(applied.match.mask, (SPS, MODALITY)) == ("CS", b"MR")
    assert value_of_path(applied.match.mask, (SPS, SPS_START_DATE)) == ("DA",
                                                                        b"20260308-20260312 ")
    assert value_of_path(applied.answer.mask, (SPS, SPS_START_DATE)) is None  # not asked for
    assert matches(applied.match, entry("A^B", station="CT1", modality="MR", date="20260312"))
    assert not matches(applied.match, entry("A^B", station="CT2", modality="MR",
                                            date="20260312"))
    assert not matches(applied.match, entry("A^B", station="CT1", modality="MR",
                                            date="20260313"))


def test_a_repeated_query_reuses_its_masks_and_the_prefilter_of_the_coerced_keys() -> None:
    policy = PeerPolicy("p", stations=("CT1", "CT2"), date_window_days=2)
    applied = AppliedQueries()
    first = applied.get(policy, prepare_query(_mask(), no_fail=False, expand_sequences=True),
                        Charset.of(b""), "MOD1")
    again = applied.get(policy, prepare_query(_mask(), no_fail=False, expand_sequences=True),
                        Charset.of(b""), "MOD1")
    assert again is first
    assert first.prefilter is not None and first.prefilter.items is not None
    assert first.prefilter.items[0].stations == frozenset({b"CT1", b"CT2"})
    assert first.prefilter.items[0].dates is not None  # today ± 2 days narrows the index too


def test_a_query_that_names_the_station_or_modality_keeps_it() -> None:
    policy = PeerPolicy("p", station_from_caller=True, set_keys=parse_policies([{"set_keys": [
        "ScheduledProcedureStepSequence[0].Modality=MR"]}]).policies[0].set_keys)
    identifier = _mask()
    identifier.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "CT9"
    identifier.ScheduledProcedureStepSequence[0].Modality = "CT"
    applied = _applied(policy, identifier)
    assert value_of_path(applied.match.mask, (SPS, SCHEDULED_STATION_AE_TITLE))[1] == b"CT9"
    assert value_of_path(applied.match.mask, (SPS, MODALITY))[1] == b"CT"


def test_tolerant_and_decoded_name_matching() -> None:
    identifier = _mask(PatientName="muller^jorg")
    applied = _applied(PeerPolicy("p", name_matching=NameMatching.FOLD), identifier)
    assert matches(applied.match, entry("x")) and applied.text_tests  # the key is blanked
    assert applied.matches_text(entry("Müller^Jörg", charset="ISO_IR 100"))
    assert applied.matches_text(entry("MÜLLER^JÖRG", charset="ISO_IR 192"))
    assert not applied.matches_text(entry("Miller^Jörg", charset="ISO_IR 100"))
    assert applied.text_mismatch(entry("Miller^Jörg", charset="ISO_IR 100")) == "PatientName"
    japanese = _mask(SpecificCharacterSet=["ISO 2022 IR 6", "ISO 2022 IR 87"])
    japanese[0x00100010] = DataElement(0x00100010, "PN", "*山田*".encode("iso2022_jp"))
    applied = _applied(PeerPolicy("p"), japanese)  # exact, but compared as decoded text
    assert applied.matches_text(entry("山田^太郎", charset="ISO_IR 192"))
    assert applied.matches_text(entry("Yamada^Tarou=山田^太郎", charset=["", "ISO 2022 IR 87"]))
    assert not applied.matches_text(entry("Иванов^Иван", charset="ISO_IR 144"))
