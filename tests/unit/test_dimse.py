"""DIMSE codecs, checked against pynetdicom's P-DATA decoder and pydicom's dataset reader."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom.pdu import P_DATA_TF

from wlmd.dicom import dimse

ALL_SYNTAXES = [
    dimse.IMPLICIT_LITTLE,
    dimse.EXPLICIT_LITTLE,
    dimse.EXPLICIT_BIG,
    dimse.DEFLATED_LITTLE,
]


def split_pdus(stream: bytes) -> list[bytes]:
    """Cut a byte stream of PDUs at their length fields."""
    pdus, pos = [], 0
    while pos < len(stream):
        length = struct.unpack_from(">L", stream, pos + 2)[0]
        pdus.append(stream[pos : pos + 6 + length])
        pos += 6 + length
    return pdus


def sample_identifier() -> Dataset:
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledStationAETitle = "SCANNER1"
    step.ScheduledProcedureStepStartDate = "20240102"
    code = Dataset()
    code.CodeValue = "X1"
    code.CodingSchemeDesignator = "L"
    step.ScheduledProtocolCodeSequence = [code]
    ds = Dataset()
    ds.PatientName = "Doe^John"
    ds.PatientID = "ODD"  # odd length: the encoder pads
    ds.StudyInstanceUID = "1.2.3"
    ds.PregnancyStatus = 4
    ds.ScheduledProcedureStepSequence = [step]
    ds.ReferencedStudySequence = []
    return ds


class TestPData:
    @pytest.mark.parametrize("max_pdu", [0, 16384, 64, 7])
    def test_fragments_decode_with_pynetdicom(self, max_pdu: int) -> None:
        payload = bytes(range(256)) * 3
        stream = dimse.encode_pdata(5, False, payload, max_pdu)
        fragments = []
        for raw in split_pdus(stream):
            if max_pdu:
                assert len(raw) - 6 <= max(max_pdu, 8)
            decoded = P_DATA_TF()
            decoded.decode(raw)
            assert len(decoded.presentation_data_value_items) == 1
            item = decoded.presentation_data_value_items[0]
            assert item.presentation_context_id == 5
            fragments.append(item.presentation_data_value)
        assert all(len(f) % 2 == 1 for f in fragments[:-1])  # header byte + even fragment
        headers = [f[0] for f in fragments]
        assert headers[:-1] == [0] * (len(headers) - 1)
        assert headers[-1] == 2
        assert b"".join(f[1:] for f in fragments) == payload

    def test_command_flag_and_empty_payload(self) -> None:
        (raw,) = split_pdus(dimse.encode_pdata(1, True, b"", 16384))
        assert dimse.parse_pdata(raw[6:]) == [dimse.Pdv(1, True, True, b"")]

    def test_parse_several_items(self) -> None:
        body = (
            struct.pack(">LBB", 5, 3, 3) + b"abc"
            + struct.pack(">LBB", 4, 3, 0) + b"de"
        )
        assert dimse.parse_pdata(body) == [
            dimse.Pdv(3, True, True, b"abc"),
            dimse.Pdv(3, False, False, b"de"),
        ]

    @pytest.mark.parametrize(
        "body",
        [b"\x00\x00\x00", struct.pack(">LBB", 9, 1, 3) + b"ab", struct.pack(">LBB", 1, 1, 3)],
    )
    def test_malformed_items(self, body: bytes) -> None:
        with pytest.raises(dimse.DimseError):
            dimse.parse_pdata(body)


def read_command(data: bytes) -> Dataset:
    return read_dataset(BytesIO(data), True, True)


class TestCommands:
    def test_find_response_reads_back_with_pydicom(self) -> None:
        data = dimse.find_response_command(
            "1.2.840.10008.5.1.4.31", 7, 0xFF00, has_dataset=True
        )
        ds = read_command(data)
        assert [int(e.tag) for e in ds] == [0x0, 0x2, 0x100, 0x120, 0x800, 0x900]
        assert ds[0x00000000].value == len(data) - 12
        assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.31"
        assert b"1.2.840.10008.5.1.4.31\0" in data  # UI padded with NUL to even length
        assert (ds.CommandField, ds.MessageIDBeingRespondedTo) == (0x8020, 7)
        assert (ds.CommandDataSetType, ds.Status) == (0x0001, 0xFF00)

    def test_identifier_mismatch_carries_offending_and_comment(self) -> None:
        data = dimse.find_response_command(
            "1.2.840.10008.5.1.4.31",
            1,
            0xA900,
            has_dataset=False,
            offending=(Tag(0x00400100), Tag(0x00100010)),
            comment="More than 1 item in sequence.",
        )
        ds = read_command(data)
        assert ds.CommandDataSetType == 0x0101
        assert ds.Status == 0xA900
        assert list(ds.OffendingElement) == [0x00400100, 0x00100010]
        assert ds.ErrorComment == "More than 1 item in sequence."

    def test_no_comment_element_unless_given(self) -> None:
        ds = read_command(dimse.find_response_command("1.2", 1, 0xA700, has_dataset=False))
        assert 0x00000902 not in ds
        assert 0x00000901 not in ds

    def test_echo_response(self) -> None:
        ds = read_command(dimse.echo_response_command("1.2.840.10008.1.1", 3))
        assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8030, 3, 0)
        assert ds.AffectedSOPClassUID == "1.2.840.10008.1.1"

    def test_decode_a_pydicom_command(self) -> None:
        ds = Dataset()
        ds.AffectedSOPClassUID = "1.2.840.10008.5.1.4.31"
        ds.CommandField = 0x0020
        ds.MessageID = 42
        ds.Priority = 0
        ds.CommandDataSetType = 0x0001
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)
        command = dimse.decode_command(fp.getvalue())
        assert dimse.command_us(command, dimse.COMMAND_FIELD) == 0x0020
        assert dimse.command_us(command, dimse.MESSAGE_ID) == 42
        assert dimse.command_ui(command, dimse.AFFECTED_SOP_CLASS_UID) == ds.AffectedSOPClassUID
        assert dimse.command_us(command, dimse.STATUS) is None

    @pytest.mark.parametrize(
        "data", [b"\x00\x00\x00\x01", struct.pack("<HHL", 8, 0x10, 0), struct.pack("<HHL", 0, 1, 9)]
    )
    def test_malformed_commands(self, data: bytes) -> None:
        with pytest.raises(dimse.DimseError):
            dimse.decode_command(data)


def reread(data: bytes, ts_uid: str) -> Dataset:
    if ts_uid == dimse.DEFLATED_LITTLE:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    implicit = ts_uid == dimse.IMPLICIT_LITTLE
    return read_dataset(BytesIO(data), implicit, ts_uid != dimse.EXPLICIT_BIG)


class TestDatasets:
    @pytest.mark.parametrize("ts_uid", ALL_SYNTAXES)
    def test_round_trip_through_pydicom(self, ts_uid: str) -> None:
        original = sample_identifier()
        data = dimse.encode_dataset(original, ts_uid)
        back = reread(data, ts_uid)
        assert back.PatientName == "Doe^John"
        assert back.PatientID == "ODD"
        assert back.PregnancyStatus == 4
        assert back.ScheduledProcedureStepSequence[0].Modality == "MR"
        code = back.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0]
        assert code.CodeValue == "X1"
        assert len(back.ReferencedStudySequence) == 0
        decoded = dimse.decode_dataset(data, ts_uid, 1 << 20)
        assert decoded.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "SCANNER1"

    @pytest.mark.parametrize("ts_uid", ALL_SYNTAXES)
    def test_sequences_get_explicit_lengths(self, ts_uid: str) -> None:
        # Read an undefined-length encoding, as a modality may send; the answer must not be one.
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        source = sample_identifier()
        source.ScheduledProcedureStepSequence = Sequence(source.ScheduledProcedureStepSequence)
        source["ScheduledProcedureStepSequence"].is_undefined_length = True
        write_dataset(fp, source)
        assert b"\xff\xff\xff\xff" in fp.getvalue()
        received = dimse.decode_dataset(fp.getvalue(), dimse.EXPLICIT_LITTLE, 1 << 20)
        data = dimse.encode_dataset(received, ts_uid)
        plain = zlib.decompress(data, -15) if ts_uid == dimse.DEFLATED_LITTLE else data
        assert b"\xff\xff\xff\xff" not in plain
        assert b"\xfe\xff\xdd\xe0" not in plain and b"\xff\xfe\xe0\xdd" not in plain
        assert reread(data, ts_uid).ScheduledProcedureStepSequence[0].Modality == "MR"

    def test_explicit_sequence_length_is_exact(self) -> None:
        ds = Dataset()
        item = Dataset()
        item.Modality = "CT"
        ds.ScheduledProcedureStepSequence = [item]
        data = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE)
        # (0040,0100) SQ 00 00 len32 | item tag len32 | (0008,0060) CS len16 "CT"
        assert data == (
            b"\x40\x00\x00\x01SQ\x00\x00" + struct.pack("<L", 18)
            + b"\xfe\xff\x00\xe0" + struct.pack("<L", 10)
            + b"\x08\x00\x60\x00CS\x02\x00CT"
        )

    def test_old_vr_writes_ut_and_un_as_ob(self) -> None:
        ds = Dataset()
        ds.add_new(0x00400400, "UT", "note")
        ds.add_new(0x00091001, "UN", b"\x01\x02")
        new = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE)
        old = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE, new_vr=False)
        assert b"UT" in new and b"UN" in new
        assert b"UT" not in old and b"UN" not in old
        assert old.count(b"OB\x00\x00") == 2
        assert reread(old, dimse.EXPLICIT_LITTLE)[0x00400400].value == b"note"
        assert dimse.encode_dataset(ds, dimse.IMPLICIT_LITTLE, new_vr=False) == (
            dimse.encode_dataset(ds, dimse.IMPLICIT_LITTLE)
        )

    def test_deflate_honours_compression_level(self) -> None:
        ds = sample_identifier()
        ds.PatientComments = "x" * 4000
        fast = dimse.encode_dataset(ds, dimse.DEFLATED_LITTLE, compression_level=0)
        best = dimse.encode_dataset(ds, dimse.DEFLATED_LITTLE, compression_level=9)
        assert len(best) < len(fast)
        assert zlib.decompress(fast, -15) == zlib.decompress(best, -15)
        assert len(fast) % 2 == 0 and len(best) % 2 == 0

    def test_inflate_is_capped(self) -> None:
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = bomb.compress(bytes(1 << 20)) + bomb.flush()
        with pytest.raises(dimse.DimseError):
            dimse.decode_dataset(data, dimse.DEFLATED_LITTLE, 1 << 16)

    @pytest.mark.parametrize(
        "data", [b"\x10\x00\x10\x00PN\xff\x7f", b"\x10\x00\x20\x00LO\x04\x00AB"]
    )
    def test_truncated_identifier(self, data: bytes) -> None:
        with pytest.raises(dimse.DimseError):
            dimse.decode_dataset(data, dimse.EXPLICIT_LITTLE, 1 << 16)

    @pytest.mark.parametrize(("data", "ts_uid"), [
        (b"\x10\x00\x10\x00XX\x00\x00", dimse.EXPLICIT_LITTLE),  # an unknown VR
        (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", dimse.IMPLICIT_LITTLE),  # an item at top level
    ])
    def test_empty_element_without_a_known_vr_is_undecodable(self, data: bytes,
                                                               ts_uid: str) -> None:
        with pytest.raises(dimse.DimseError):
            dimse.decode_dataset(data, ts_uid, 1 << 16)

    def test_empty_keys_of_a_query_decode_as_empty(self) -> None:
        query = Dataset()
        query.PatientName = ""
        query.PatientID = ""
        query.add_new(0x00091010, "LO", "")  # private: implicit VR leaves it UN
        for ts_uid in (dimse.IMPLICIT_LITTLE, dimse.EXPLICIT_LITTLE):
            decoded = dimse.decode_dataset(dimse.encode_dataset(query, ts_uid), ts_uid, 1 << 16)
            assert decoded.PatientName == "" and decoded.PatientID == ""
            assert decoded[0x00091010].value in ("", None, b"")

    @pytest.mark.parametrize("ts_uid", ALL_SYNTAXES)
    def test_a_repeated_identifier_decodes_into_datasets_of_their_own(self, ts_uid: str) -> None:
        """Workers keep the raw elements of a query they saw: each decoding is still new."""
        data = dimse.encode_dataset(sample_identifier(), ts_uid)
        first = dimse.decode_dataset(data, ts_uid, 1 << 20)
        second = dimse.decode_dataset(data, ts_uid, 1 << 20)
        assert first == second and first is not second
        first.PatientName = "Changed^Here"
        first.ScheduledProcedureStepSequence[0].Modality = "CT"
        for again in (second, dimse.decode_dataset(data, ts_uid, 1 << 20)):
            assert again.PatientName == "Doe^John"
            assert again.ScheduledProcedureStepSequence[0].Modality == "MR"
            assert again.original_character_set == first.original_character_set

    @pytest.mark.parametrize(("data", "ts_uid"), [
        (b"\x10\x00\x10\x00XX\x00\x00", dimse.EXPLICIT_LITTLE),
        (b"\x10\x00\x20\x00LO\x04\x00AB", dimse.EXPLICIT_LITTLE),
    ])
    def test_an_undecodable_identifier_stays_undecodable(self, data: bytes,
                                                         ts_uid: str) -> None:
        for _ in range(2):
            with pytest.raises(dimse.DimseError):
                dimse.decode_dataset(data, ts_uid, 1 << 16)

    def test_garbage_deflate(self) -> None:
        with pytest.raises(dimse.DimseError):
            dimse.decode_dataset(b"\xff\xff\xff\xff", dimse.DEFLATED_LITTLE, 1 << 16)

    def test_group_length_is_dropped(self) -> None:
        ds = Dataset()
        ds.add_new(0x00100000, "UL", 12)
        ds.PatientID = "12"
        data = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE)
        assert list(reread(data, dimse.EXPLICIT_LITTLE).keys()) == [0x00100020]


def raw(tag: int, vr: str | None, value: bytes, little: bool = True) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little)


class TestVerbatimValues:
    @pytest.mark.parametrize("ts_uid", ALL_SYNTAXES)
    def test_raw_strings_keep_their_padding(self, ts_uid: str) -> None:
        ds = Dataset()
        ds[0x00100020] = raw(0x00100020, "LO", b" AV35674  ")
        ds[0x00100010] = raw(0x00100010, "PN", b"VIVALDI^ANTONIO ")
        ds[0x0020000D] = raw(0x0020000D, "UI", b"1.2.3\0")
        data = dimse.encode_dataset(ds, ts_uid)
        plain = zlib.decompress(data, -15) if ts_uid == dimse.DEFLATED_LITTLE else data
        assert b" AV35674  " in plain and b"VIVALDI^ANTONIO " in plain
        back = reread(data, ts_uid)
        assert back[0x00100020].VR == "LO"
        assert back.StudyInstanceUID == "1.2.3"

    def test_raw_number_in_other_byte_order_is_converted(self) -> None:
        ds = Dataset()
        ds[0x001021C0] = raw(0x001021C0, "US", b"\x00\x04", little=False)
        data = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE)
        assert data.endswith(b"US\x02\x00\x04\x00")

    def test_raw_without_vr_gets_the_dictionary_vr(self) -> None:
        ds = Dataset()
        ds[0x00100020] = raw(0x00100020, None, b"ID12")
        assert dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE) == b"\x10\x00\x20\x00LO\x04\x00ID12"

    @pytest.mark.parametrize(("charset", "written", "name"), [
        (b"ISO_IR 100  ", b"CS\x0a\x00ISO_IR 100", b"M\xfcller"),
        (b"ISO_IR 192", b"CS\x0a\x00ISO_IR 192", b"M\xc3\xbcller "),
    ])
    def test_raw_charset_is_written_as_pydicom_writes_it_and_encodes_nested_values(
            self, charset: bytes, written: bytes, name: bytes) -> None:
        # Each value is worked out once and reused: every dataset still gets its own set.
        for _ in range(2):
            ds = Dataset()
            ds[0x00080005] = raw(0x00080005, "CS", charset)
            item = Dataset()
            item.PerformingPhysicianName = "Müller"
            ds.ScheduledProcedureStepSequence = Sequence([item])
            data = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE)
            assert data.startswith(b"\x08\x00\x05\x00" + written + b"@\x00\x00\x01SQ")
            assert data.endswith(b"PN" + bytes([len(name), 0]) + name)

    def test_raw_ut_goes_out_as_ob_with_old_vrs(self) -> None:
        ds = Dataset()
        ds[0x00400400] = raw(0x00400400, "UT", b"note")
        old = dimse.encode_dataset(ds, dimse.EXPLICIT_LITTLE, new_vr=False)
        assert old == b"\x40\x00\x00\x04OB\x00\x00\x04\x00\x00\x00note"
