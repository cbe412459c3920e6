"""The direct text-dataset encoder writes exactly pydicom's bytes, or says it cannot."""

from __future__ import annotations

import dataclasses
import io

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from tests.support.hl7 import CALLED_AE, Order
from wlmd.dicom.textset import SPECIFIC_CHARACTER_SET, TextDataset, part10
from wlmd.hl7.mapping import Mapping
from wlmd.hl7.message import OrderMessage
from wlmd.worklist.writer import MODALITY_WORKLIST_FIND, encode_entry

MAPPING = dataclasses.replace(Mapping.default(), default_ae=CALLED_AE)
CHARSETS = {"": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 101": "iso8859_2",
            "ISO_IR 144": "iso8859_5", "ISO_IR 192": "utf-8"}


def pydicom_bytes(elements: TextDataset) -> bytes:
    return encode_entry(elements.to_dataset())


def direct_bytes(elements: TextDataset) -> bytes:
    encoded = part10(elements, MODALITY_WORKLIST_FIND, elements.text(0x0020000D) or "1.2.3")
    assert encoded is not None, "the direct encoder should cover this dataset"
    return encoded


@pytest.mark.parametrize("order", [
    Order(),
    Order(kind="OMI^O23", version="2.5.1", study_uid="1.2.3.4.5"),
    Order(kind="OMG^O19", version="2.5.1", code="X^^"),
    Order(charset="8859/1", name="Müller^Jörg^^^Dr."),
    Order(charset="UNICODE UTF-8", name="Ωμέγα^Ελένη", code="CT1^Σπονδυλική στήλη^L"),
    Order(name="O'Brien^Ann Marie", start="2025011510", code=""),
], ids=["orm-ascii", "omi-uid", "omg-empty-code-parts", "latin1", "utf8", "odd-lengths"])
def test_hl7_entries_encode_to_pydicoms_bytes(order: Order) -> None:
    message = OrderMessage.decode(order.message())
    for _group, entry in MAPPING.entries(message):
        assert direct_bytes(entry.elements) == pydicom_bytes(entry.elements)
        assert encode_entry(entry.elements) == pydicom_bytes(entry.elements)


UIDS = st.from_regex(r"[1-9][0-9]{0,5}(\.(0|[1-9][0-9]{0,4})){0,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(charset=st.sampled_from(sorted(CHARSETS)), name=st.text(max_size=64),
       description=st.text(max_size=80), uid=UIDS)
@example(charset="", name="A^=", description="", uid="1")  # an empty trailing group
@example(charset="ISO_IR 192", name="Ω==", description="", uid="1")
def test_any_encodable_text_gives_pydicoms_bytes(charset: str, name: str, description: str,
                                                 uid: str) -> None:
    codec = CHARSETS[charset]
    for text in (name, description):
        try:
            text.encode(codec)
        except UnicodeEncodeError:
            return  # mapping refuses these before encoding
        if "\\" in text:
            return  # several values: left to pydicom (test below)
    elements = TextDataset({SPECIFIC_CHARACTER_SET: ("CS", charset), 0x00100010: ("PN", name),
                            0x0020000D: ("UI", uid), 0x00100020: ("LO", "ID")})
    elements.item(0x00400100).values[0x00400007] = ("LO", description)
    elements.item(0x00400100).sequences[0x00400008] = []
    assert direct_bytes(elements) == pydicom_bytes(elements)


@pytest.mark.parametrize("elements", [
    TextDataset({0x00100010: ("PN", "A\\B")}),  # several values
    TextDataset({0x00280010: ("US", "512")}),  # a binary VR
    TextDataset({SPECIFIC_CHARACTER_SET: ("CS", "ISO 2022 IR 87"), 0x00100010: ("PN", "X")}),
    TextDataset({0x00100040: ("CS", "É")}),  # not ASCII in a VR without a character set
    TextDataset({0x00400280: ("ST", "x" * 0x10000)}),  # over a 16-bit length
], ids=["multi-value", "binary-vr", "iso-2022", "non-ascii-code", "too-long"])
def test_what_the_direct_encoder_does_not_cover_is_left_to_pydicom(
        elements: TextDataset) -> None:
    assert part10(elements, MODALITY_WORKLIST_FIND, "1.2.3") is None


def test_the_fallback_writes_pydicoms_file() -> None:
    elements = TextDataset({0x00100010: ("PN", "Doe^A\\Doe^B"), 0x0020000D: ("UI", "1.2.3.4")})
    written = dcmread(io.BytesIO(encode_entry(elements)))
    assert [str(name) for name in written.PatientName] == ["Doe^A", "Doe^B"]
    assert written.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
