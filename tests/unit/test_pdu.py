"""Upper-layer PDU codecs, checked against pynetdicom's independent encoders and decoders."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

from wlmd.dicom import pdu

MWL = "1.2.840.10008.5.1.4.31"
ILE, ELE, EBE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"


def pynetdicom_rq(
    called: str = "WLMD", calling: str = "SCU", max_pdu: int = 32768, version: str = "V1"
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4.5"
    name = ImplementationVersionNameNotification()
    name.implementation_version_name = version
    primitive.user_information = [max_length, impl, name]
    contexts = []
    for n, (abstract, syntaxes) in enumerate([(MWL, [ILE, EBE]), ("1.2.840.10008.1.1", [ELE])]):
        ctx = build_context(abstract, syntaxes)
        ctx.context_id = 2 * n + 1
        contexts.append(ctx)
    primitive.presentation_context_definition_list = contexts
    encoded = A_ASSOCIATE_RQ()
    encoded.from_primitive(primitive)
    return encoded.encode()


class TestAssociateRequest:
    def test_parses_what_pynetdicom_encodes(self) -> None:
        request = pdu.parse_associate_rq(pynetdicom_rq(max_pdu=32768)[6:])
        assert request.called_ae == "WLMD"
        assert request.calling_ae == "SCU"
        assert request.application_context == "1.2.840.10008.3.1.1.1"
        assert request.max_pdu == 32768
        assert request.implementation_class_uid == "1.2.3.4.5"
        assert request.implementation_version_name == "V1"
        assert request.contexts == [
            pdu.PresentationContextRQ(1, MWL, (ILE, EBE)),
            pdu.PresentationContextRQ(3, "1.2.840.10008.1.1", (ELE,)),
        ]

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"WLMD            ", "WLMD"),
            (b" WLMD           ", " WLMD"),
            (b"WL\0MD           ", "WL"),
            (b"                ", ""),
            (b"ABCDEFGHIJKLMNOPQ", "ABCDEFGHIJKLMNOP"),
        ],
    )
    def test_ae_is_parsed_like_dcmtk(self, raw: bytes, expected: str) -> None:
        assert pdu.parse_ae(raw) == expected

    def test_truncated_item_is_an_error(self) -> None:
        body = pynetdicom_rq()[6:]
        with pytest.raises(pdu.PduError):
            pdu.parse_associate_rq(body[:-3])

    def test_short_fixed_part_is_an_error(self) -> None:
        with pytest.raises(pdu.PduError):
            pdu.parse_associate_rq(bytes(40))

    def test_nul_padded_uids_are_trimmed(self) -> None:
        body = bytearray(pynetdicom_rq()[6:])
        # Rewrite the application context item with a NUL-padded UID of the same item type.
        name = b"1.2.840.10008.3.1.1.1"
        start = body.index(name) - 4
        body[start : start + 4 + len(name)] = b"\x10\x00" + struct.pack(">H", 22) + name + b"\0"
        assert pdu.parse_associate_rq(bytes(body)).application_context == name.decode()


class TestAcceptorPdus:
    def test_ac_decodes_with_pynetdicom(self) -> None:
        request = pdu.parse_associate_rq(pynetdicom_rq()[6:])
        answers = [
            pdu.PresentationContextAC(1, pdu.PC_ACCEPTED, EBE),
            pdu.PresentationContextAC(3, pdu.PC_TRANSFER_SYNTAX_NOT_SUPPORTED, ILE),
        ]
        encoded = pdu.encode_associate_ac(request, answers, 16384)
        ac = A_ASSOCIATE_AC()
        ac.decode(encoded)
        assert ac.application_context_name == "1.2.840.10008.3.1.1.1"
        assert ac._reserved_aet.strip() == "WLMD"
        assert ac._reserved_aec.strip() == "SCU"
        items = ac.presentation_context
        assert [(i.context_id, i.result_reason, i.transfer_syntax) for i in items] == [
            (1, 0, EBE),
            (3, 4, ILE),
        ]
        user = {type(i).__name__: i for i in ac.user_information.user_data}
        assert user["MaximumLengthSubItem"].maximum_length_received == 16384
        assert user["ImplementationClassUIDSubItem"].implementation_class_uid == (
            pdu.IMPLEMENTATION_CLASS_UID
        )
        version = user["ImplementationVersionNameSubItem"].implementation_version_name
        assert version == pdu.IMPLEMENTATION_VERSION_NAME
        assert 1 <= len(pdu.IMPLEMENTATION_VERSION_NAME) <= 16

    def test_rj(self) -> None:
        rj = A_ASSOCIATE_RJ()
        rj.decode(pdu.encode_associate_rj(2, 3, 2))
        assert (rj.result, rj.source, rj.reason_diagnostic) == (2, 3, 2)

    def test_abort_and_release(self) -> None:
        abort = A_ABORT_RQ()
        abort.decode(pdu.encode_abort(2, 1))
        assert (abort.source, abort.reason_diagnostic) == (2, 1)
        rp = A_RELEASE_RP()
        rp.decode(pdu.encode_release_rp())
        assert rp.pdu_type == 0x06


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


class TestPduStream:
    def test_several_pdus_in_one_send(self, pair: tuple[socket.socket, socket.socket]) -> None:
        ours, theirs = pair
        theirs.sendall(pdu.encode_release_rp() + pdu.encode_abort(0, 0))
        stream = pdu.PduStream(ours)
        assert stream.read({}, 1) == (pdu.A_RELEASE_RP, bytes(4))
        assert stream.has_data()
        assert stream.read({}, 1) == (pdu.A_ABORT, bytes(4))
        assert not stream.has_data()

    def test_has_data_sees_the_socket(self, pair: tuple[socket.socket, socket.socket]) -> None:
        ours, theirs = pair
        stream = pdu.PduStream(ours)
        assert not stream.has_data()
        theirs.sendall(b"\x05")
        assert stream.has_data()

    def test_pdu_split_across_sends(self, pair: tuple[socket.socket, socket.socket]) -> None:
        ours, theirs = pair
        data = b"\x04\x00" + struct.pack(">L", 3000) + bytes(range(256)) * 11 + bytes(184)

        def trickle() -> None:
            for i in range(0, len(data), 1000):
                theirs.sendall(data[i : i + 1000])
                time.sleep(0.01)

        thread = threading.Thread(target=trickle)
        thread.start()
        pdu_type, body = pdu.PduStream(ours).read({pdu.P_DATA_TF: 4096}, 5)
        thread.join()
        assert (pdu_type, body) == (pdu.P_DATA_TF, data[6:])

    def test_oversize_is_refused_before_reading(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        ours, theirs = pair
        theirs.sendall(b"\x04\x00" + struct.pack(">L", 5000))
        with pytest.raises(pdu.PduError):
            pdu.PduStream(ours).read({pdu.P_DATA_TF: 4096}, 1)

    def test_unknown_type(self, pair: tuple[socket.socket, socket.socket]) -> None:
        ours, theirs = pair
        theirs.sendall(b"\x09\x00\x00\x00\x00\x00")
        with pytest.raises(pdu.PduError) as info:
            pdu.PduStream(ours).read({}, 1)
        assert info.value.reason == pdu.REASON_UNRECOGNIZED_PDU

    def test_eof_mid_pdu(self, pair: tuple[socket.socket, socket.socket]) -> None:
        ours, theirs = pair
        theirs.sendall(b"\x05\x00\x00\x00\x00\x04\x00")
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(pdu.ConnectionClosed):
            pdu.PduStream(ours).read({}, 1)

    def test_timeout_bounds_the_whole_pdu(self, pair: tuple[socket.socket, socket.socket]) -> None:
        ours, theirs = pair
        stop = threading.Event()

        def trickle() -> None:  # one byte every 50 ms: each recv succeeds, the PDU never ends
            theirs.sendall(b"\x04\x00\x00\x00\x10\x00")
            for _ in range(40):
                if stop.wait(0.05):
                    return
                theirs.sendall(b"\x00")

        thread = threading.Thread(target=trickle)
        thread.start()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            pdu.PduStream(ours).read({pdu.P_DATA_TF: 8192}, 0.3)
        elapsed = time.monotonic() - started
        stop.set()
        thread.join()
        assert 0.25 < elapsed < 1.5
