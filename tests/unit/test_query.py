"""prepare_query: cleaning, validation (0xA900), stripping (0xFF01), expansion.

Rules: docs/compat.md §4 to §6 and the departures §12.4, §12.10.
"""

from __future__ import annotations

import logging

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from tests.support.datasets import dataset, sequence
from tests.support.datasets import raw as element
from wlmd.worklist.query import InvalidQuery, PreparedQuery, prepare_query, value_of

SPS = Tag("ScheduledProcedureStepSequence")





def prepare(*elements, no_fail=False, expand=True) -> PreparedQuery:
    return prepare_query(dataset(*elements), no_fail=no_fail, expand_sequences=expand)


def invalid(*elements) -> InvalidQuery:
    with pytest.raises(InvalidQuery) as caught:
        prepare(*elements)
    return caught.value


@pytest.mark.parametrize(
    ("vr", "keyword", "value", "comment"),
    [
        ("CS", "PatientSex", b"m", "Invalid Character Repertoire for datatype CS"),
        ("CS", "PatientSex", b"M\\F", "Invalid Character Repertoire for datatype CS"),
        ("AE", "ScheduledStationAETitle", b"A\x01", None),  # checked inside the SPS below
        ("PN", "PatientName", b"M\xfcller", "Invalid Character Repertoire for datatype PN"),
        ("PN", "PatientName", b"A~B", "Invalid Character Repertoire for datatype PN"),
        ("LO", "PatientID", b"P\x1b", "Invalid Character Repertoire for datatype LO"),
        ("SH", "AccessionNumber", b"A\tB", "Invalid Character Repertoire for datatype SH"),
        ("DA", "PatientBirthDate", b"1678*", "Invalid value for an attribute with VR=DA"),
        ("DA", "PatientBirthDate", b"*", "Invalid value for an attribute with VR=DA"),
        ("DA", "PatientBirthDate", b"19701301", "Invalid value for an attribute with VR=DA"),
        ("TM", "StudyTime", b"2400", "Invalid value for an attribute with VR=TM"),
        ("TM", "StudyTime", b"12:00:00", "Invalid value for an attribute with VR=TM"),
    ],
)
def test_invalid_values_give_a900(vr, keyword, value, comment):
    """§4.6: CheckMatchingKey repertoires and DA/TM syntax give 0xA900."""
    if comment is None:
        item = dataset(element(keyword, vr, value))
        error = invalid(sequence("ScheduledProcedureStepSequence", item))
        assert error.comment == "Invalid Character Repertoire for datatype AE"
        assert error.offending == (Tag(keyword),)
        return
    error = invalid(element(keyword, vr, value))
    assert error.offending == (Tag(keyword),)
    assert error.comment == comment


@pytest.mark.parametrize(
    ("vr", "keyword", "value"),
    [
        ("CS", "PatientSex", b"M *?_ 0"),
        ("AE", "ScheduledStationAETitle", b"a~b\\c"),
        ("PN", "PatientName", b"VIV*^A?\\B="),
        ("DA", "PatientBirthDate", b" 19700101-19700102 "),
        ("DA", "PatientBirthDate", b"-19700102"),
        ("DA", "PatientBirthDate", b"19700101\\19700102"),
        ("DA", "PatientBirthDate", b"01000101"),  # any 4-digit year ("dubious" in DCMTK)
        ("TM", "StudyTime", b"1200-"),
        ("TM", "StudyTime", b"235959.123456"),
        ("DA", "PatientBirthDate", b"   "),
    ],
)
def test_valid_values_reach_the_mask_as_sent(vr, keyword, value):
    """§4.6: values inside the repertoire or range syntax pass, into the mask as sent."""
    if keyword == "ScheduledStationAETitle":  # a matching key inside the SPS only
        query = prepare(sequence("ScheduledProcedureStepSequence",
                                 dataset(element(keyword, vr, value))))
        mask = query.mask[SPS].value[0]
    else:
        query = prepare(element(keyword, vr, value))
        mask = query.mask
    assert value_of(mask, Tag(keyword)) == (vr, value)
    assert not query.unsupported_removed


def test_pn_lo_sh_repertoire_is_unchecked_with_a_character_set():
    """§4.6: PN/LO/SH repertoire is checked only without (0008,0005) in the query."""
    query = prepare(element("SpecificCharacterSet", "CS", b"ISO_IR 100"),
                    element("PatientName", "PN", b"M\xfcller"))
    assert value_of(query.mask, Tag("PatientName")) == ("PN", b"M\xfcller")


def test_two_errors_give_the_generic_comment():
    """§6.1 0xA900: ≥2 errors → 'Syntax error in 1 or more matching keys', tags in order found."""
    error = invalid(element("PatientSex", "CS", b"m"), element("PatientBirthDate", "DA", b"x"))
    assert error.comment == "Syntax error in 1 or more matching keys"
    assert error.offending == (Tag("PatientBirthDate"), Tag("PatientSex"))


def test_more_than_one_step_item_is_invalid():
    """§4.6: >1 query item → (0040,0100), 'More than 1 item in sequence.'."""
    items = [dataset(element("Modality", "CS", b"MR")), dataset(element("Modality", "CS", b"CT"))]
    error = invalid(sequence("ScheduledProcedureStepSequence", *items))
    assert error.offending == (SPS,)
    assert error.comment == "More than 1 item in sequence."


def test_no_fail_removes_every_extra_step_item():
    """§12.4 departure: with --no-fail, items 2 and 3 are both removed (not only item 2)."""
    items = [dataset(element("Modality", "CS", value)) for value in (b"MR", b"CT", b"US")]
    query = prepare(sequence("ScheduledProcedureStepSequence", *items), no_fail=True)
    remaining = query.mask[SPS].value
    assert [value_of(item, Tag("Modality"))[1] for item in remaining] == [b"MR"]


def test_no_fail_keeps_invalid_values():
    """§6.2 --no-fail: validation errors are ignored and the value stays in the mask."""
    query = prepare(element("PatientSex", "CS", b"m"), no_fail=True)
    assert value_of(query.mask, Tag("PatientSex")) == ("CS", b"m")


@pytest.mark.parametrize(
    "unsupported",
    [
        element("QueryRetrieveLevel", "CS", b"WORKLIST"),
        element("PatientAge", "AS", b""),
        RawDataElement(Tag(0x0009, 0x0010), "LO", 4, b"PRIV", 0, False, True),
    ],
)
def test_unsupported_keys_are_removed_and_flagged(unsupported, caplog):
    """§4.10: unsupported keys are stripped (INFO) and set the 0xFF01 flag."""
    with caplog.at_level(logging.INFO, logger="wlmd.worklist.query"):
        query = prepare(element("PatientID", "LO"), unsupported)
    assert unsupported.tag not in query.mask
    assert query.unsupported_removed
    assert "will not be existent in any result dataset" in caplog.text


def test_unsupported_key_inside_the_step_is_removed():
    """§4.10: an SPS item keeps only the SPS return keys."""
    item = dataset(element("Modality", "CS", b"MR"), element("PatientName", "PN", b""))
    query = prepare(sequence("ScheduledProcedureStepSequence", item))
    assert list(query.mask[SPS].value[0].keys()) == [Tag("Modality")]
    assert query.unsupported_removed


def test_specific_character_set_is_removed_without_flag(caplog):
    """§4.10: (0008,0005) is removed with a WARN only, never 0xFF01."""
    with caplog.at_level(logging.INFO, logger="wlmd.worklist.query"):
        query = prepare(element("SpecificCharacterSet", "CS", b"ISO_IR 192"),
                        element("PatientID", "LO"))
    assert Tag("SpecificCharacterSet") not in query.mask
    assert not query.unsupported_removed
    assert [r.levelname for r in caplog.records if "SpecificCharacterSet" in r.message] == [
        "WARNING"
    ]


def test_institutional_department_name_is_kept_without_ff01():
    """§12.10 departure: (0008,1040) is a return key, so no 0xFF01."""
    query = prepare(element("InstitutionalDepartmentName", "LO"))
    assert Tag("InstitutionalDepartmentName") in query.mask
    assert not query.unsupported_removed


def test_group_length_and_padding_are_dropped_from_the_mask():
    """Pipeline step 1: group lengths and dataset trailing padding are removed, no 0xFF01."""
    query = prepare(
        RawDataElement(Tag(0x0010, 0x0000), "UL", 4, b"\x08\0\0\0", 0, False, True),
        element("PatientID", "LO"),
        RawDataElement(Tag(0xFFFC, 0xFFFC), "OB", 2, b"\0\0", 0, False, True),
    )
    assert list(query.mask.keys()) == [Tag("PatientID")]
    assert not query.unsupported_removed


def test_step_sequence_without_items_expands_with_a_warning(caplog):
    """§5.4: a zero-item SPS gets one item with the 16 attributes, and a WARN."""
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist.query"):
        query = prepare(sequence("ScheduledProcedureStepSequence"))
    item = query.mask[SPS].value[0]
    assert len(item) == 16
    assert value_of(item, Tag("CommentsOnTheScheduledProcedureStep")) == ("LT", b"")
    assert len(item[Tag("ScheduledProtocolCodeSequence")].value[0]) == 4
    assert "Empty sequence (ScheduledProcedureStepSequence)" in caplog.text


def test_one_empty_step_item_expands_silently(caplog):
    """§5.4: one empty item expands too, without the zero-item warning."""
    with caplog.at_level(logging.WARNING, logger="wlmd.worklist.query"):
        query = prepare(sequence("ReferencedStudySequence", Dataset()))
    item = query.mask[Tag("ReferencedStudySequence")].value[0]
    assert list(item.keys()) == [Tag("ReferencedSOPClassUID"), Tag("ReferencedSOPInstanceUID")]
    assert caplog.text == ""


@pytest.mark.parametrize("items", [(), (Dataset(),)])
def test_nse_leaves_empty_sequences_alone(items):
    """§5.4 -nse: no expansion; zero items stay zero, an empty item stays empty."""
    query = prepare(sequence("ScheduledProcedureStepSequence", *items), expand=False)
    assert [len(item) for item in query.mask[SPS].value] == [0] * len(items)


def test_mask_keeps_the_bytes_received():
    """§4.5: the mask keeps the wire bytes (padding, multiple values) for byte-exact matching."""
    query = prepare(element("PatientName", "PN", b"VIV* \\X "))
    assert value_of(query.mask, Tag("PatientName")) == ("PN", b"VIV* \\X ")


def test_decoded_identifier_gives_the_same_mask():
    """Identifiers pydicom has already decoded give the same mask as raw ones."""
    decoded = Dataset()
    decoded.PatientName = "VIV*"
    decoded.PatientID = ""
    query = prepare_query(decoded, no_fail=False, expand_sequences=True)
    assert value_of(query.mask, Tag("PatientName")) == ("PN", b"VIV*")
    assert value_of(query.mask, Tag("PatientID")) == ("LO", b"")


def test_the_callers_identifier_is_not_modified():
    """prepare_query works on a copy: the caller's identifier keeps its elements."""
    identifier = dataset(element("PatientAge", "AS"), sequence("ScheduledProcedureStepSequence"))
    prepare_query(identifier, no_fail=False, expand_sequences=True)
    assert Tag("PatientAge") in identifier
    assert len(identifier[SPS].value) == 0
