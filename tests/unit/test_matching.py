"""matches(): universal values, wildcards, DA/TM, combined date+time, SPS (docs/compat.md §4)."""

from __future__ import annotations

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from tests.support.datasets import dataset, raw
from wlmd.worklist.matching import matches, parse_time
from wlmd.worklist.query import prepare_query


def sps(*items: Dataset) -> DataElement:
    return DataElement(Tag("ScheduledProcedureStepSequence"), "SQ", Sequence(list(items)))


def match(query_elements, record_elements, *, no_fail=False) -> bool:
    query = prepare_query(dataset(*query_elements), no_fail=no_fail, expand_sequences=True)
    return matches(query, dataset(*record_elements))


PN, LO, SH, CS, DA, TM, AE = "PN", "LO", "SH", "CS", "DA", "TM", "AE"

# (rule, query (keyword, VR, value), record value or None for absent, expected)
SINGLE_KEY_CASES = [
    ("s3_absent_key_in_query_matches", None, b"X", True),
    ("s3_universal_empty", ("PatientName", PN, b""), None, True),
    ("s3_universal_pn_caret", ("PatientName", PN, b"^"), b"VIVALDI", True),
    ("s3_universal_pn_equals_space", ("PatientName", PN, b" ^= "), None, True),
    ("s3_universal_star_without_wildcards", ("PatientID", LO, b"*"), b"AV35674", True),
    ("s3_universal_star_needs_no_record_value", ("PatientID", LO, b"**"), None, True),
    ("s3_nonuniversal_needs_record_attribute", ("PatientName", PN, b"VIV*"), None, False),
    ("s3_empty_record_value_never_matches", ("PatientName", PN, b"*A*"), b"", False),
    ("s3_exact_match", ("PatientID", LO, b"AV35674"), b"AV35674", True),
    ("s3_multi_value_or_record", ("PatientID", LO, b"AA33"), b"AA32\\AA33", True),
    ("s3_multi_value_or_query", ("PatientID", LO, b"AV35674\\HF"), b"HF", True),
    ("s3_lo_strips_both_sides", ("PatientID", LO, b" AV35674 "), b"AV35674 ", True),
    ("s3_lo_strips_record_leading", ("PatientID", LO, b"AV35674"), b" AV35674", True),
    ("s3_pn_keeps_leading_space", ("PatientName", PN, b" VIV*"), b"VIVALDI", False),
    ("s3_pn_trailing_space_ignored", ("PatientName", PN, b"VIVALDI "), b"VIVALDI  ", True),
    ("s3_case_sensitive", ("PatientName", PN, b"viv*"), b"VIVALDI", False),
    ("s3_no_pn_component_logic", ("PatientName", PN, b"VIVALDI"), b"VIVALDI^ANTONIO", False),
    ("s3_wildcard_star", ("PatientName", PN, b"VIV*NIO"), b"VIVALDI^ANTONIO", True),
    ("s3_wildcard_question", ("PatientName", PN, b"?IVALDI"), b"VIVALDI", True),
    ("s3_wildcard_question_one_byte", ("PatientName", PN, b"?VALDI"), b"VIVALDI", False),
    ("s3_wildcard_regex_chars_literal", ("AccessionNumber", SH, b"A.C*"), b"ABC1", False),
    ("s3_no_wildcards_patient_id", ("PatientID", LO, b"AV*"), b"AV35674", False),
    ("s3_no_wildcards_literal_star", ("PatientID", LO, b"AV*"), b"AV*", True),
    ("s3_cs_wildcards", ("PatientSex", CS, b"?"), b"M", True),
    ("s3_da_parsed_equality", ("PatientBirthDate", DA, b"16780304"), b"16780304 ", True),
    ("s3_da_range_inclusive", ("PatientBirthDate", DA, b"16780301-16780304"), b"16780304", True),
    ("s3_da_range_open_end", ("PatientBirthDate", DA, b"16780305-"), b"16780304", False),
    ("s3_da_range_open_start", ("PatientBirthDate", DA, b"-16780304"), b"16780304", True),
    ("s3_da_old_format_record", ("PatientBirthDate", DA, b"16780304"), b"1678.03.04", True),
    ("s3_da_unparseable_record", ("PatientBirthDate", DA, b"-20000101"), b"1678", False),
    ("s3_da_only_backslash_universal", ("PatientBirthDate", DA, b"\\"), None, True),
    ("s3_da_space_requires_value", ("PatientBirthDate", DA, b" "), None, False),
    ("s3_tm_minutes_equal_seconds", ("StudyTime", TM, b"1607"), b"160700", True),
    ("s3_tm_hour_is_not_a_prefix", ("StudyTime", TM, b"16"), b"160700", False),
    ("s3_tm_hour_equality", ("StudyTime", TM, b"16"), b"160000.000", True),
    ("s3_tm_range", ("StudyTime", TM, b"1600-1630"), b"161500", True),
]


@pytest.mark.parametrize(
    ("query", "record", "expected"),
    [case[1:] for case in SINGLE_KEY_CASES],
    ids=[case[0] for case in SINGLE_KEY_CASES],
)
def test_single_key(query, record, expected):
    """§4.2–§4.5, §4.7: algorithm, universal values, comparison, strings, DA/TM; a rule a case."""
    keyword, vr = (query[0], query[1]) if query else ("PatientID", LO)
    query_elements = [raw(*query)] if query else [raw("PatientID", LO, b"")]
    record_elements = [] if record is None else [raw(keyword, vr, record)]
    assert match(query_elements, record_elements) is expected


def test_query_and_entry_must_have_the_same_vr():
    """§4.4: query and record element must have the same VR."""
    assert not match([raw("PatientID", LO, b"X")], [raw("PatientID", SH, b"X")])


def test_every_non_universal_key_must_match():
    """§4.2: every non-universal key must match."""
    record = [raw("PatientID", LO, b"P1"), raw("PatientSex", CS, b"F")]
    assert match([raw("PatientID", LO, b"P1"), raw("PatientSex", CS, b"F")], record)
    assert not match([raw("PatientID", LO, b"P1"), raw("PatientSex", CS, b"M")], record)


def test_return_keys_are_not_matched():
    """§4.10: a value in a return-only key is ignored."""
    assert match([raw("StudyInstanceUID", "UI", b"1.2.3")], [raw("StudyInstanceUID", "UI", b"9")])


DATETIME_CASES = [
    ("s3_datetime_one_interval", b"19960103-19960406", b"1600-1630", b"19960405", b"0800", True),
    ("s3_datetime_end_bound", b"19960103-19960406", b"1600-1630", b"19960406", b"1631", False),
    ("s3_datetime_start_bound", b"19960103-19960406", b"1600-1630", b"19960103", b"1559", False),
    ("s3_datetime_single_pair", b"19960103", b"1600", b"19960103", b"160000", True),
    ("s3_datetime_shapes_differ", b"19960103-19960406", b"1600", b"19960405", b"1600", True),
    ("s3_datetime_shapes_differ_no", b"19960103-19960406", b"1600", b"19960405", b"0800", False),
    ("s3_datetime_date_only", b"19960103", b"", b"19960103", b"2359", True),
    ("s3_datetime_time_only", b"", b"0800-0900", b"20200101", b"0830", True),
    ("s3_datetime_record_missing_time", b"19960103", b"1600", b"19960103", None, False),
]


@pytest.mark.parametrize(
    ("date_q", "time_q", "date_r", "time_r", "expected"),
    [case[1:] for case in DATETIME_CASES],
    ids=[case[0] for case in DATETIME_CASES],
)
def test_combined_date_time(date_q, time_q, date_r, time_r, expected):
    """§4.8: StudyDate/StudyTime as one interval when shapes agree."""
    query = [raw("StudyDate", DA, date_q), raw("StudyTime", TM, time_q)]
    record = [raw("StudyDate", DA, date_r)]
    if time_r is not None:
        record.append(raw("StudyTime", TM, time_r))
    assert match(query, record) is expected


def test_step_start_date_and_time_are_combined():
    """§4.8: the SPS start date/time pair is combined too."""
    query = [sps(dataset(raw("ScheduledProcedureStepStartDate", DA, b"19960406-19960407"),
                         raw("ScheduledProcedureStepStartTime", TM, b"1630-0900")))]
    inside = sps(dataset(raw("ScheduledProcedureStepStartDate", DA, b"19960407"),
                         raw("ScheduledProcedureStepStartTime", TM, b"0800")))
    outside = sps(dataset(raw("ScheduledProcedureStepStartDate", DA, b"19960406"),
                          raw("ScheduledProcedureStepStartTime", TM, b"1620")))
    assert match(query, [inside])
    assert not match(query, [outside])


def _station(ae: bytes, modality: bytes = b"MR") -> Dataset:
    return dataset(raw("ScheduledStationAETitle", AE, ae), raw("Modality", CS, modality))


@pytest.mark.parametrize(
    ("query_item", "record", "expected"),
    [
        pytest.param(dataset(raw("ScheduledStationAETitle", AE, b"*")), [], False,
                     id="s3_sps_ae_star_needs_an_item"),
        pytest.param(dataset(raw("ScheduledStationAETitle", AE, b"*")), [sps(_station(b"X"))],
                     True, id="s3_sps_ae_star_any_item"),
        pytest.param(dataset(raw("ScheduledPerformingPhysicianName", PN, b"*")), [], True,
                     id="s3_sps_physician_star_universal"),
        pytest.param(Dataset(), [], True, id="s3_sps_empty_item_universal"),
        pytest.param(dataset(raw("Modality", CS, b"CT")),
                     [sps(_station(b"A", b"MR"), _station(b"B", b"CT"))], True,
                     id="s3_sps_any_record_item"),
        pytest.param(dataset(raw("Modality", CS, b"CT"), raw("ScheduledStationAETitle", AE, b"A")),
                     [sps(_station(b"A", b"MR"), _station(b"B", b"CT"))], False,
                     id="s3_sps_keys_within_one_item"),
        pytest.param(dataset(raw("Modality", CS, b"M*")), [sps(_station(b"A", b"MR"))], False,
                     id="s3_sps_modality_literal"),
        pytest.param(dataset(raw("Modality", CS, b"MR")),
                     [raw("ScheduledProcedureStepSequence", "LO", b"MR")], False,
                     id="s3_sps_record_not_a_sequence"),
    ],
)
def test_sps(query_item, record, expected):
    """§4.9: universality with per-key flags, any-item matching."""
    assert match([sps(query_item)], record) is expected


def test_zero_item_step_sequence_is_universal():
    """§4.9: a zero-item SPS is universal (here with -nse, so it stays empty)."""
    query = prepare_query(dataset(sps()), no_fail=False, expand_sequences=False)
    assert matches(query, Dataset())


def test_no_fail_invalid_value_matches_nothing():
    """§6.2 --no-fail: an invalid value simply does not match."""
    assert not match([raw("PatientSex", CS, b"m")], [raw("PatientSex", CS, b"M")], no_fail=True)


def test_records_read_from_file_match():
    """Records as the store loads them (raw, implicit VR, padded) match byte-exactly."""
    source = Dataset()
    source.PatientName = "VIVALDI^ANTONIO"  # odd length: written with a trailing space
    source.PatientID = "AA32\\AA33"
    source.ScheduledProcedureStepSequence = [Dataset()]
    source.ScheduledProcedureStepSequence[0].Modality = "MR"
    buffer = DicomBytesIO()
    source.save_as(buffer, implicit_vr=True, little_endian=True)
    record = dcmread(DicomBytesIO(buffer.getvalue()), force=True)
    query = prepare_query(dataset(raw("PatientName", PN, b"VIV*O"), raw("PatientID", LO, b"AA33"),
                                  sps(dataset(raw("Modality", CS, b"MR")))),
                          no_fail=False, expand_sequences=True)
    assert matches(query, record)
    assert isinstance(record.get_item(Tag("PatientID")), RawDataElement)  # not decoded


def test_query_compiled_once():
    """The compiled matcher is cached on the query and reused for every record."""
    query = prepare_query(dataset(raw("PatientID", LO, b"X")), no_fail=False,
                          expand_sequences=True)
    matches(query, Dataset())
    compiled = query.compiled
    matches(query, Dataset())
    assert compiled is not None and query.compiled is compiled


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(b"16", 16 * 3600), (b"1607", 16 * 3600 + 7 * 60), (b"160700.5", 16 * 3600 + 420.5),
     (b"16:07", 16 * 3600 + 7 * 60), (b"2400", None), (b"123", None),
     (b"160760", 16 * 3600 + 8 * 60)],
)
def test_time_parsing_follows_dcmtk(text, seconds):
    """§4.7: DcmTime parsing (HH[MM[SS[.F]]], old HH:MM, leap second allowed)."""
    assert parse_time(text) == seconds
