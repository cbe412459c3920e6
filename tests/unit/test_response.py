"""build_response(): projection, verbatim values, sequences, fix-ups, charset.

Rules: docs/compat.md §5 and the departure §12.3.
"""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from tests.support.datasets import dataset, raw
from tests.support.datasets import sequence as seq
from wlmd.config.settings import CharsetMode
from wlmd.worklist.query import prepare_query, value_of
from wlmd.worklist.response import build_response

SPS = Tag("ScheduledProcedureStepSequence")





def respond(query_elements, record_elements, charset=CharsetMode.NONE, expand=True) -> Dataset:
    query = prepare_query(dataset(*query_elements), no_fail=False, expand_sequences=expand)
    return build_response(query, dataset(*record_elements), charset)


def value(ds: Dataset, keyword: str) -> tuple[str, bytes] | None:
    return value_of(ds, Tag(keyword))


def test_only_the_requested_keys_come_back():
    """§5.1: only the keys of the query come back."""
    response = respond([raw("PatientID", "LO", b"")],
                       [raw("PatientID", "LO", b"P1"), raw("PatientName", "PN", b"X")])
    assert list(response.keys()) == [Tag("PatientID")]


def test_values_are_copied_with_padding_and_every_value():
    """§5.2: the file's raw value, padding and all values included."""
    response = respond([raw("PatientID", "LO", b"")], [raw("PatientID", "LO", b" AA32\\AA33  ")])
    assert value(response, "PatientID") == ("LO", b" AA32\\AA33  ")


def test_odd_values_are_padded_like_dcmtk():
    """§5.2: odd lengths are padded on encoding: space, NUL for UI; a UI's NUL ends the string."""
    response = respond([raw("PatientID", "LO", b""), raw("StudyInstanceUID", "UI", b"")],
                       [raw("PatientID", "LO", b"P12"), raw("StudyInstanceUID", "UI", b"1.2\0")])
    assert value(response, "PatientID") == ("LO", b"P12 ")
    assert value(response, "StudyInstanceUID") == ("UI", b"1.2\0")


def test_non_ascii_bytes_are_copied_untouched():
    """§5.2: ISO_IR 100 / ISO_IR 192 bytes are copied, never decoded."""
    response = respond([raw("PatientName", "PN", b"")],
                       [raw("SpecificCharacterSet", "CS", b"ISO_IR 192"),
                        raw("PatientName", "PN", b"M\xc3\x9cLLER")])
    assert value(response, "PatientName") == ("PN", b"M\xc3\x9cLLER ")


def test_decoded_record_values_are_encoded_back():
    """Records pydicom has decoded give back the file's bytes via their character set."""
    record = Dataset()
    record.SpecificCharacterSet = "ISO_IR 100"
    record.PatientName = "Müller"
    query = prepare_query(dataset(raw("PatientName", "PN", b"")), no_fail=False,
                          expand_sequences=True)
    response = build_response(query, record, CharsetMode.NONE)
    assert value(response, "PatientName") == ("PN", b"M\xfcller")


def test_absent_attribute_is_sent_empty():
    """§5.2: attributes the file lacks are sent zero-length."""
    response = respond([raw("PatientWeight", "DS", b"")], [])
    assert value(response, "PatientWeight") == ("DS", b"")


def test_vr_comes_from_the_request():
    """§5.1: the response element has the request's VR."""
    response = respond([raw("AccessionNumber", "LO", b"")], [raw("AccessionNumber", "SH", b"A1")])
    assert value(response, "AccessionNumber") == ("LO", b"A1")


def test_value_sent_in_a_return_key_is_replaced():
    """§4.10: a value sent in a return key is replaced by the file's."""
    response = respond([raw("StudyInstanceUID", "UI", b"1.2.3\0")],
                       [raw("StudyInstanceUID", "UI", b"9.8\0")])
    assert value(response, "StudyInstanceUID") == ("UI", b"9.8\0")


@pytest.mark.parametrize(("record", "expected"), [([], 4), ([DataElement(0x001021C0, "US", 2)], 2)])
def test_pregnancy_status_defaults_to_4(record, expected):
    """§5.2: PregnancyStatus is the file's US value, or 4 if absent."""
    query = [DataElement(0x001021C0, "US", None)]
    assert respond(query, record)[Tag("PregnancyStatus")].value == expected


def test_pregnancy_status_is_read_in_the_files_byte_order():
    """PregnancyStatus from a raw element is read in the file's byte order."""
    record = RawDataElement(Tag(0x001021C0), "US", 2, b"\x00\x03", 0, False, False)
    assert respond([DataElement(0x001021C0, "US", None)], [record])[0x001021C0].value == 3


def _record_sps(*modalities: bytes) -> DataElement:
    items = [dataset(raw("Modality", "CS", m), raw("ScheduledProcedureStepID", "SH", b"S1"))
             for m in modalities]
    return seq("ScheduledProcedureStepSequence", *items)


def test_every_sequence_item_of_the_entry_comes_back():
    """§5.3: one filled clone of the query item per file item, matching or not."""
    query = [seq("ScheduledProcedureStepSequence", dataset(raw("Modality", "CS", b"CT")))]
    response = respond(query, [_record_sps(b"MR", b"CT")])
    assert [value(item, "Modality") for item in response[SPS].value] == [
        ("CS", b"MR"), ("CS", b"CT")
    ]


def test_entry_without_the_sequence_gets_the_query_item_back():
    """§5.3: a file without the sequence gets the query item back, values leaking."""
    item = dataset(raw("ScheduledStationName", "SH", b"Q"))
    query = [seq("ScheduledProcedureStepSequence", item)]
    response = respond(query, [])
    assert [value(item, "ScheduledStationName") for item in response[SPS].value] == [("SH", b"Q")]


def test_expanded_step_has_dictionary_vrs():
    """§5.1: expanded elements use dictionary VRs, e.g. (0040,0400) LT."""
    response = respond([seq("ScheduledProcedureStepSequence")], [_record_sps(b"MR")])
    item = response[SPS].value[0]
    assert value(item, "CommentsOnTheScheduledProcedureStep") == ("LT", b"")
    assert value(item, "Modality") == ("CS", b"MR")


@pytest.mark.parametrize(
    ("code_items", "description", "kept"),
    [
        pytest.param([], b"", {"ScheduledProcedureStepDescription"}, id="s4_zero_code_items"),
        pytest.param([(b"", b"")], b"D", {"ScheduledProcedureStepDescription"},
                     id="s4_empty_code_item_dropped"),
        pytest.param([(b"C", b"S")], b"", {"ScheduledProtocolCodeSequence"},
                     id="s4_empty_description_dropped"),
        pytest.param([(b"C", b"S")], b"D",
                     {"ScheduledProtocolCodeSequence", "ScheduledProcedureStepDescription"},
                     id="s4_both_kept"),
    ],
)
def test_sps_description_code_fixup(code_items, description, kept):
    """§5.5: on SPS item 0: (0040,0008) or an empty (0040,0007) is removed."""
    codes = [dataset(raw("CodeValue", "SH", v), raw("CodingSchemeDesignator", "SH", s))
             for v, s in code_items]
    record_item = dataset(raw("ScheduledProcedureStepDescription", "LO", description),
                          seq("ScheduledProtocolCodeSequence", *codes))
    query_item = dataset(raw("ScheduledProcedureStepDescription", "LO", b""),
                         seq("ScheduledProtocolCodeSequence"))
    response = respond([seq("ScheduledProcedureStepSequence", query_item)],
                       [seq("ScheduledProcedureStepSequence", record_item)])
    assert {element.keyword for element in response[SPS].value[0]} == kept


def test_top_level_description_code_fixup():
    """§5.5: the same rule for (0032,1064)/(0032,1060) at top level."""
    response = respond([raw("RequestedProcedureDescription", "LO", b""),
                        seq("RequestedProcedureCodeSequence")],
                       [raw("RequestedProcedureDescription", "LO", b"EXAM")])
    assert list(response.keys()) == [Tag("RequestedProcedureDescription")]


def test_empty_reference_item_is_removed():
    """§5.5: a lone (0008,1110) item with both UIDs empty is removed."""
    response = respond([seq("ReferencedStudySequence")], [])
    assert len(response[Tag("ReferencedStudySequence")].value) == 0


def test_nse_with_a_step_sequence_without_items_returns_it_empty():
    """§12.3 departure: -nse with a zero-item SPS returns an empty SPS instead of crashing."""
    response = respond([seq("ScheduledProcedureStepSequence")], [_record_sps(b"MR")],
                       expand=False)
    assert len(response[SPS].value) == 0


def test_nse_empty_item_yields_one_empty_item_per_entry_item():
    """§5.4 -nse: one empty query item gives N empty items."""
    response = respond([seq("ScheduledProcedureStepSequence", Dataset())],
                       [_record_sps(b"MR", b"CT")], expand=False)
    assert [len(item) for item in response[SPS].value] == [0, 0]


@pytest.mark.parametrize(
    ("mode", "query", "record", "expected"),
    [
        pytest.param(CharsetMode.NONE, "PatientName", b"ISO_IR 192", None, id="s4_cs0_never"),
        pytest.param(CharsetMode.ISO_IR_100, "PatientName", b"ISO_IR 192", b"ISO_IR 100",
                     id="s4_cs1_with_pn"),
        pytest.param(CharsetMode.ISO_IR_100, "StudyInstanceUID", b"", None,
                     id="s4_cs1_not_affected"),
        pytest.param(CharsetMode.KEEP, "PatientName", b"ISO_IR 192", b"ISO_IR 192",
                     id="s4_csk_file_value"),
        pytest.param(CharsetMode.KEEP, "PatientName", None, None, id="s4_csk_file_has_none"),
    ],
)
def test_specific_character_set(mode, query, record, expected):
    """§5.6: -cs0/-cs1/-csk, only when a PN/LO/SH/ST/LT/UT/UC element is present."""
    vr = "PN" if query == "PatientName" else "UI"
    record_elements = [] if record is None else [raw("SpecificCharacterSet", "CS", record)]
    response = respond([raw(query, vr, b""), raw("SpecificCharacterSet", "CS", b"ISO_IR 6")],
                       record_elements, charset=mode)
    found = value(response, "SpecificCharacterSet")
    assert (found[1] if found else None) == expected


def test_cs1_counts_elements_inside_sequences():
    """§5.6: isAffectedBySpecificCharacterSet looks inside sequences too."""
    response = respond([seq("ScheduledProcedureStepSequence",
                            dataset(raw("ScheduledPerformingPhysicianName", "PN", b"")))],
                       [], charset=CharsetMode.ISO_IR_100)
    assert value(response, "SpecificCharacterSet") == ("CS", b"ISO_IR 100")


def test_response_encodes_with_pydicom():
    """pydicom can encode the response: bytes kept (it re-pads, so trailing spaces collapse)."""
    response = respond([raw("PatientName", "PN", b""), seq("ScheduledProcedureStepSequence"),
                        DataElement(0x001021C0, "US", None)],
                       [raw("PatientName", "PN", b"M\xfcller^A "), _record_sps(b"MR")])
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, response)
    encoded = buffer.getvalue()
    assert b"PN\x08\x00M\xfcller^A" in encoded
    assert b"US\x02\x00\x04\x00" in encoded
