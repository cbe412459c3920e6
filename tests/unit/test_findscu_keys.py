"""The -k parser: tag spellings, sequence paths, zero-length keys and DCMTK's error texts."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.tag import Tag

from wlmd.findscu.keys import BadKeyPath, apply_key, parse_key


def applied(*keys: str) -> Dataset:
    dataset = Dataset()
    for key in keys:
        apply_key(dataset, parse_key(key))
    return dataset


@pytest.mark.parametrize("key", ["(0010,0010)=DOE*", "0010,0010=DOE*", "PatientName=DOE*"])
def test_three_spellings_of_a_tag(key: str) -> None:
    assert applied(key).PatientName == "DOE*"


def test_missing_value_sends_zero_length() -> None:
    element = applied("PatientID")[Tag(0x00100020)]
    assert element.VR == "LO" and element.value == ""


def test_value_keeps_everything_after_first_equals() -> None:
    assert applied("PatientName=a=b").PatientName == "a=b"


def test_later_key_replaces_earlier() -> None:
    assert applied("PatientName=A", "(0010,0010)=B").PatientName == "B"


def test_sequence_path_creates_items_in_order() -> None:
    ds = applied("(0040,0100)[1].Modality=MR", "(0040,0100)[0].Modality=CT")
    assert [item.Modality for item in ds.ScheduledProcedureStepSequence] == ["CT", "MR"]


def test_nested_path() -> None:
    ds = applied("(0040,0100)[0].(0008,1110)[0].ReferencedSOPClassUID")
    nested = ds.ScheduledProcedureStepSequence[0].ReferencedStudySequence[0]
    assert nested[Tag(0x00081150)].value == ""


def test_sequence_with_item_but_no_attribute_gives_empty_item() -> None:
    ds = applied("(0040,0100)[0]")
    assert len(ds.ScheduledProcedureStepSequence) == 1
    assert len(ds.ScheduledProcedureStepSequence[0]) == 0


def test_numbers_for_binary_vrs() -> None:
    assert applied("Columns=5").Columns == 5


def test_multiple_values() -> None:
    assert list(applied("(0040,0100)[0].Modality=CT\\MR").ScheduledProcedureStepSequence[0]
                .Modality) == ["CT", "MR"]


def test_private_creator_is_lo() -> None:
    assert applied("(0011,0010)=X")[Tag(0x00110010)].VR == "LO"


@pytest.mark.parametrize(("key", "reason"), [
    ("Foo=1", "Unable to parse tag/dictionary name at beginning of path: Foo"),
    ("(0010,0010", "Unable to parse tag at beginning of path: (0010,0010"),
    ("(0040,0100)[x].Modality", "Unable to parse item number at beginning of path: "
                                "[x].Modality"),
    ("(0040,0100).Modality", "Unable to parse item number at beginning of path: .Modality"),
    ("PatientName[0]", "Invalid Path: Non-sequence tag found with rest path following"),
])
def test_dcmtk_error_texts(key: str, reason: str) -> None:
    with pytest.raises(BadKeyPath) as info:
        parse_key(key)
    assert str(info.value) == reason
