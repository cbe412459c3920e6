"""serve_association on loopback sockets, driven by pynetdicom, DCMTK and raw-socket clients."""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from tests.support import wire
from tests.support.processes import (
    DCMTK_EXAMPLES,
    dcmtk_tool,
    dump2dcm,
    free_port,
    require_dcmtk,
    start_wlmscpfs,
)
from tests.support.processes import stop_process as stop_wlmscpfs
from wlmd.config.settings import Settings, TransferSyntaxPreference
from wlmd.dicom import pdu
from wlmd.dicom.association import limit_refusal, serve_association
from wlmd.dicom.types import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_PENDING,
    STATUS_SUCCESS,
    Admission,
    AssociationInfo,
    AssociationReport,
    FindResponse,
)

MWL = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"
ILE, ELE, EBE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"
DEFLATE = "1.2.840.10008.1.2.1.99"
ALL_TS = [ILE, ELE, EBE, DEFLATE]


def canned_records(count: int = 2) -> list[Dataset]:
    records = []
    for n in range(count):
        step = Dataset()
        step.Modality = "CT"
        step.ScheduledStationAETitle = "CT1"
        ds = Dataset()
        ds.PatientName = f"Test^Patient{n}"
        ds.PatientID = f"ID{n}"
        ds.ScheduledProcedureStepSequence = [step]
        records.append(ds)
    return records


class FakeApp:
    """A WorklistApplication with canned answers that records what it was asked."""

    def __init__(
        self,
        records: list[Dataset] | None = None,
        final: FindResponse | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.records = canned_records() if records is None else records
        self.final = final or FindResponse(STATUS_SUCCESS)
        self.gate = gate  # if set, the second result waits for it
        self.queries: list[tuple[AssociationInfo, Dataset, str]] = []
        self.yielded = 0
        self.closed_early = False

    def knows_called_ae(self, called_ae: str) -> bool:
        return called_ae == "WLMD"

    def procedure_steps(self) -> None:
        return None

    def admit(self, called_ae: str, calling_ae: str) -> Admission:
        allowed = calling_ae != "BANNED"
        return Admission(allowed, "" if allowed else "allow-list")

    def find(
        self, assoc: AssociationInfo, identifier: Dataset, ts_uid: str, encoded: bytes = b""
    ) -> Iterator[FindResponse]:
        self.queries.append((assoc, identifier, ts_uid))
        try:
            for n, record in enumerate(self.records):
                if n == 1 and self.gate is not None:
                    self.gate.wait(5)
                self.yielded += 1
                yield FindResponse(STATUS_PENDING, record)
            yield self.final
        except GeneratorExit:
            self.closed_early = True
            raise


class Engine:
    """Accepts connections on a loopback port and serves each with serve_association."""

    def __init__(self, settings: Settings, app: FakeApp) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.settings = dataclasses.replace(settings, port=self.port)
        self.app = app
        self.reports: list[AssociationReport] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            while not self.done.is_set():
                conn, peer = self.listener.accept()
                if self.done.is_set():
                    conn.close()
                    return
                report = serve_association(conn, peer, self.settings, self.app)
                self.reports.append(report)
        except TimeoutError:
            pass
        except BaseException as exc:  # surfaced by the fixture: serve_association must not raise
            self.errors.append(exc)

    def report(self, index: int = 0, timeout: float = 10) -> AssociationReport:
        """The report of the ``index``-th association, waiting for it to end."""
        deadline = time.monotonic() + timeout
        while len(self.reports) <= index and time.monotonic() < deadline and not self.errors:
            time.sleep(0.01)
        assert not self.errors, self.errors
        return self.reports[index]

    def stop(self) -> None:
        self.done.set()
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            pass
        self.thread.join(15)
        self.listener.close()
        assert not self.errors, self.errors


@pytest.fixture
def engine_factory() -> Iterator:
    engines: list[Engine] = []

    def start(app: FakeApp | None = None, **settings: object) -> Engine:
        engine = Engine(Settings(port=0, **settings), app or FakeApp())
        engine.thread.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


# --- raw client helpers ---------------------------------------------------------------------


def encode_rq(
    called: str = "WLMD",
    contexts: list[tuple[str, list[str]]] | None = None,
    *,
    max_pdu: int = 16384,
    implementation_uid: str | None = "1.2.3.4",
    app_context: str = "1.2.840.10008.3.1.1.1",
    calling: str = "RAWSCU",
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom (independent of the engine's codec)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = app_context
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    items: list[object] = [max_length]
    if implementation_uid:
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = implementation_uid
        items.append(impl)
    primitive.user_information = items
    built = []
    for n, (abstract, syntaxes) in enumerate(contexts if contexts is not None else [(MWL, ALL_TS)]):
        ctx = build_context(abstract, syntaxes)
        ctx.context_id = 2 * n + 1
        built.append(ctx)
    primitive.presentation_context_definition_list = built
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return rq.encode()


def recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_pdu(sock: socket.socket) -> bytes:
    """One whole PDU, or b'' when the server closed the connection."""
    header = recv_exact(sock, 6)
    if len(header) < 6:
        return b""
    return header + recv_exact(sock, struct.unpack(">L", header[2:])[0])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(port: int, rq: bytes) -> bytes:
    with connect(port) as sock:
        sock.sendall(rq)
        return recv_pdu(sock)


def decode_ac(raw: bytes) -> A_ASSOCIATE_AC:
    assert raw[0] == 0x02, raw[:10].hex()
    ac = A_ASSOCIATE_AC()
    ac.decode(raw)
    return ac


def command_bytes(field: int, *, message_id: int = 1, responded_to: int | None = None,
                  has_dataset: bool = False, sop_class: str = MWL) -> bytes:
    """A command set written by pydicom."""
    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = field
    if responded_to is None:
        ds.MessageID = message_id
        ds.Priority = 0
    else:
        ds.MessageIDBeingRespondedTo = responded_to
    ds.CommandDataSetType = 0x0001 if has_dataset else 0x0101
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    body = fp.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def pdata(context_id: int, is_command: bool, payload: bytes, last: bool = True) -> bytes:
    """A P-DATA-TF holding one PDV."""
    return wire.p_data(wire.pdv(context_id, is_command, last, payload))


def identifier_bytes(little: bool = True) -> bytes:
    ds = Dataset()
    ds.PatientName = "*"
    ds.ScheduledProcedureStepSequence = [Dataset()]
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, False
    write_dataset(fp, ds)
    return fp.getvalue()


def read_message(sock: socket.socket) -> tuple[Dataset, bytes, list[int]]:
    """One DIMSE message: (command set, data set bytes, body sizes of the P-DATA PDUs)."""
    command, dataset, sizes = b"", b"", []
    expect_dataset = None
    while True:
        raw = recv_pdu(sock)
        assert raw and raw[0] == 0x04, raw[:10].hex()
        sizes.append(len(raw) - 6)
        decoded = P_DATA_TF()
        decoded.decode(raw)
        for item in decoded.presentation_data_value_items:
            header, value = item.presentation_data_value[0], item.presentation_data_value[1:]
            if header & 1:
                command += value
                if header & 2:
                    cmd = read_dataset(BytesIO(command), True, True)
                    expect_dataset = cmd.CommandDataSetType != 0x0101
                    if not expect_dataset:
                        return cmd, b"", sizes
            else:
                dataset += value
                if header & 2:
                    return cmd, dataset, sizes
        assert expect_dataset is not False


def associated(port: int, contexts: list[tuple[str, list[str]]] | None = None,
               max_pdu: int = 16384) -> socket.socket:
    sock = connect(port)
    sock.sendall(encode_rq(contexts=contexts or [(MWL, [ELE])], max_pdu=max_pdu))
    decode_ac(recv_pdu(sock))
    return sock


def send_find(
    sock: socket.socket, message_id: int = 1, context_id: int = 1, little: bool = True
) -> None:
    """A C-FIND-RQ with an explicit VR identifier in the given byte order."""
    sock.sendall(
        pdata(context_id, True, command_bytes(0x0020, message_id=message_id, has_dataset=True))
        + pdata(context_id, False, identifier_bytes(little))
    )


# --- (a) pynetdicom as SCU ------------------------------------------------------------------


def pynetdicom_ae(max_pdu: int = 16382) -> AE:
    ae = AE("PYSCU")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def mwl_query() -> Dataset:
    query = Dataset()
    query.PatientName = "*"
    query.PatientID = ""
    query.ScheduledProcedureStepSequence = [Dataset()]
    return query


class TestWithPynetdicom:
    def test_echo_and_release(self, engine_factory) -> None:
        engine = engine_factory()
        assoc = pynetdicom_ae().associate("127.0.0.1", engine.port, ae_title="WLMD")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        report = engine.report()
        assert report.outcome == "released"
        assert (report.calling_ae, report.called_ae) == ("PYSCU", "WLMD")

    def test_find_returns_the_application_answers(self, engine_factory) -> None:
        app = FakeApp()
        engine = engine_factory(app)
        assoc = pynetdicom_ae().associate("127.0.0.1", engine.port, ae_title="WLMD")
        results = list(assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind))
        assoc.release()
        assert [status.Status for status, _ in results] == [0xFF00, 0xFF00, 0x0000]
        names = [str(ds.PatientName) for _, ds in results[:2]]
        assert names == ["Test^Patient0", "Test^Patient1"]
        assert results[0][1].ScheduledProcedureStepSequence[0].Modality == "CT"
        assert results[2][1] is None
        info, identifier, ts_uid = app.queries[0]
        assert (info.calling_ae, info.called_ae) == ("PYSCU", "WLMD")
        assert info.peer_address == "127.0.0.1"
        assert identifier.PatientName == "*"
        assert ts_uid == ELE  # pynetdicom proposes ILE first; the server prefers ELE
        report = engine.report()
        assert (report.queries, report.matches, report.outcome) == (1, 2, "released")

    def test_identifier_mismatch_status(self, engine_factory) -> None:
        final = FindResponse(
            STATUS_IDENTIFIER_MISMATCH,
            offending_elements=(Tag(0x00400100),),
            error_comment="More than 1 item in sequence.",
        )
        engine = engine_factory(FakeApp(records=[], final=final))
        assoc = pynetdicom_ae().associate("127.0.0.1", engine.port, ae_title="WLMD")
        ((status, identifier),) = list(
            assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind)
        )
        assoc.release()
        assert status.Status == 0xA900
        assert status.OffendingElement == 0x00400100
        assert status.ErrorComment == "More than 1 item in sequence."
        assert identifier is None

    def test_cancel_stops_the_find(self, engine_factory) -> None:
        gate = threading.Event()
        app = FakeApp(records=canned_records(20), gate=gate)
        engine = engine_factory(app)
        assoc = pynetdicom_ae().associate("127.0.0.1", engine.port, ae_title="WLMD")
        responses = assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind, msg_id=9)
        statuses = [next(responses)[0].Status]
        assoc.send_c_cancel(9, assoc.accepted_contexts[0].context_id)
        time.sleep(0.2)  # pynetdicom's DUL thread sends the cancel asynchronously
        gate.set()
        statuses += [status.Status for status, _ in responses]
        assoc.release()
        assert statuses[-1] == 0xFE00
        assert 1 <= statuses.count(0xFF00) <= 3
        assert app.closed_early and app.yielded < 20
        assert engine.report().matches == statuses.count(0xFF00)

    def test_small_peer_max_pdu(self, engine_factory) -> None:
        records = canned_records(1)
        records[0].PatientComments = "x" * 3000
        engine = engine_factory(FakeApp(records=records))
        assoc = pynetdicom_ae(max_pdu=512).associate("127.0.0.1", engine.port, ae_title="WLMD")
        results = list(assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind))
        assoc.release()
        assert results[0][1].PatientComments == "x" * 3000


# --- (b) DCMTK clients ----------------------------------------------------------------------


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [dcmtk_tool(name), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.interop
class TestWithDcmtk:
    def test_echoscu(self, engine_factory) -> None:
        require_dcmtk("echoscu")
        engine = engine_factory()
        done = run_tool("echoscu", "-aec", "WLMD", "127.0.0.1", str(engine.port))
        assert done.returncode == 0, done.stderr
        assert engine.report().outcome == "released"

    @pytest.mark.parametrize(
        ("client_option", "preference", "expected_ts"),
        [
            ("-xi", TransferSyntaxPreference.UNCOMPRESSED, ILE),
            ("-xb", TransferSyntaxPreference.UNCOMPRESSED, ELE),
            ("-xe", TransferSyntaxPreference.BIG, EBE),
            ("-xd", TransferSyntaxPreference.DEFLATED, DEFLATE),
        ],
    )
    def test_findscu(
        self, engine_factory, tmp_path: Path, client_option: str,
        preference: TransferSyntaxPreference, expected_ts: str
    ) -> None:
        require_dcmtk("findscu")
        app = FakeApp()
        engine = engine_factory(app, transfer_syntax=preference)
        done = run_tool(
            "findscu", "-v", "-W", client_option, "-aec", "WLMD", "-od", str(tmp_path), "-X",
            "-k", "PatientName=*", "-k", "ScheduledProcedureStepSequence[0].Modality",
            "127.0.0.1", str(engine.port),
        )
        assert done.returncode == 0, done.stderr
        assert app.queries[0][2] == expected_ts
        assert app.queries[0][1].PatientName == "*"
        written = sorted(tmp_path.iterdir())
        assert len(written) == 2
        dumped = run_tool("dcmdump", *map(str, written)).stdout
        assert "Test^Patient0" in dumped and "Test^Patient1" in dumped
        assert engine.report().outcome == "released"


@pytest.fixture(scope="module")
def wlmscpfs_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real wlmscpfs serving a copy of DCMTK's example worklist database."""
    require_dcmtk()
    root = tmp_path_factory.mktemp("wlistdb")
    offis = root / "OFFIS"
    offis.mkdir()
    (offis / "lockfile").touch()
    for dump in sorted((DCMTK_EXAMPLES / "wlistdb" / "OFFIS").glob("*.dump"))[:2]:
        dump2dcm(dump, offis / (dump.stem + ".wl"))
    port = free_port()
    proc = start_wlmscpfs(["-dfp", str(root)], port)
    yield port
    stop_wlmscpfs(proc)


def ac_contexts(raw: bytes) -> list[tuple[int, int, str]]:
    return [
        (i.context_id, i.result_reason, i.transfer_syntax)
        for i in decode_ac(raw).presentation_context
    ]


@pytest.mark.interop
class TestAgainstWlmscpfs:
    """The same raw requests to wlmscpfs and to the engine get the same answers."""

    CONTEXTS = [  # noqa: RUF012 - a constant table
        (MWL, [ILE, EBE, ELE, DEFLATE]),
        (VERIFICATION, [ILE]),
        ("1.2.840.10008.5.1.4.1.2.2.1", [ILE]),
        (MWL, ["1.2.840.10008.1.2.4.50"]),
        (VERIFICATION, [EBE, ILE]),
    ]

    def test_presentation_context_answers(self, engine_factory, wlmscpfs_port: int) -> None:
        engine = engine_factory()
        rq = encode_rq("OFFIS", self.CONTEXTS)
        theirs = ac_contexts(exchange(wlmscpfs_port, rq))
        ours = ac_contexts(exchange(engine.port, encode_rq("WLMD", self.CONTEXTS)))
        assert ours == theirs

    @pytest.mark.parametrize(
        "rq_args",
        [
            {"called": "NOSUCHAE"},
            {"called": "OFFIS", "app_context": "1.2.3"},
            {"called": "OFFIS", "contexts": [("1.2.3.4", [ILE])]},
        ],
    )
    def test_reject_codes(self, engine_factory, wlmscpfs_port: int, rq_args: dict) -> None:
        engine = engine_factory()
        theirs = exchange(wlmscpfs_port, encode_rq(**rq_args))
        ours_args = dict(rq_args, called="WLMD" if rq_args["called"] == "OFFIS" else "NOSUCHAE")
        ours = exchange(engine.port, encode_rq(**ours_args))
        assert theirs[0] == 0x03
        assert ours == theirs

    def test_find_response_command_set(self, engine_factory, wlmscpfs_port: int) -> None:
        engine = engine_factory()
        commands = []
        for port in (wlmscpfs_port, engine.port):
            with associated(port) if port == engine.port else _offis(port) as sock:
                send_find(sock)
                cmd, _, _ = read_message(sock)
                commands.append([(int(e.tag), e.VR) for e in cmd])
        assert commands[0] == commands[1]


def _offis(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(encode_rq("OFFIS", [(MWL, [ELE])]))
    decode_ac(recv_pdu(sock))
    return sock


# --- (c) raw-socket clients -----------------------------------------------------------------


def rj_pdu(values: tuple[int, int, int]) -> bytes:
    return b"\x03\x00" + struct.pack(">L", 4) + bytes((0, *values))


def test_departure_server_socket_has_tcp_nodelay() -> None:
    """docs/compat.md §12.5: no Nagle stall; the engine sets TCP_NODELAY on every association."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = connect(listener.getsockname()[1])
        conn, peer = listener.accept()
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # Linux default
        same_socket = socket.socket(fileno=os.dup(conn.fileno()))
        thread = threading.Thread(
            target=serve_association, args=(conn, peer, Settings(port=0), FakeApp()))
        thread.start()
        try:
            client.sendall(encode_rq())
            assert recv_pdu(client)[:1] == b"\x02"  # A-ASSOCIATE-AC: the association is up
            assert same_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            client.close()
            thread.join(10)
            same_socket.close()


class TestNegotiation:
    @pytest.mark.parametrize(
        ("settings", "rq_args", "expected"),
        [
            ({"refuse": True}, {}, (1, 1, 1)),
            ({"refuse": True}, {"app_context": "1.2.3", "called": "X"}, (1, 1, 1)),
            ({}, {"app_context": "1.2.3"}, (2, 1, 2)),
            ({"reject": True}, {"implementation_uid": None}, (1, 1, 1)),
            ({}, {"called": "X"}, (1, 1, 7)),
            ({}, {"called": "wlmd"}, (1, 1, 7)),
            ({}, {"contexts": [("1.2.3", [ILE]), (MWL, ["1.2.9"])]}, (1, 1, 1)),
            ({}, {"calling": "BANNED"}, (1, 1, 3)),  # the application's allow-list
            ({}, {"calling": "BANNED", "called": "X"}, (1, 1, 7)),  # called AE first
            ({}, {"calling": "BANNED", "contexts": []}, (1, 1, 3)),  # before the contexts
        ],
    )
    def test_reject_order(
        self, engine_factory, settings: dict, rq_args: dict, expected: tuple[int, int, int]
    ) -> None:
        engine = engine_factory(**settings)
        with connect(engine.port) as sock:
            sock.sendall(encode_rq(**rq_args))
            answer = recv_pdu(sock)
            assert recv_pdu(sock) == b""  # and then the server closes
        assert answer == rj_pdu(expected)
        assert engine.report().outcome == "rejected"

    @pytest.mark.parametrize(
        ("settings", "rq_args", "expected"),
        [
            ({}, {"app_context": "1.2.3", "called": "X"}, (2, 1, 2)),
            ({"reject": True}, {"implementation_uid": None, "called": "X"}, (1, 1, 1)),
            ({"refuse": True}, {}, (1, 1, 1)),
            ({}, {}, (2, 3, 2)),
            ({}, {"called": "X"}, (2, 3, 2)),  # the limit comes before the called AE (step 4)
        ],
    )
    def test_reject_order_at_the_limit(
        self, settings: dict, rq_args: dict, expected: tuple[int, int, int]
    ) -> None:
        rq = encode_rq(**rq_args)
        reply, outcome, _ = limit_refusal(rq[0], rq[6:], Settings(port=0, **settings))
        assert reply == rj_pdu(expected)
        assert outcome == ("refused-limit" if expected == (2, 3, 2) else "rejected")

    def test_limit_refusal_aborts_what_is_not_a_request(self) -> None:
        reply, outcome, _ = limit_refusal(0x05, b"\0" * 4, Settings(port=0))
        assert (reply[0], outcome) == (0x07, "aborted")

    def test_reject_option_refuses_only_a_request_without_implementation_uid(
        self, engine_factory
    ) -> None:
        engine = engine_factory(reject=True)
        assert exchange(engine.port, encode_rq(implementation_uid=None)) == rj_pdu((1, 1, 1))
        accepted = exchange(engine.port, encode_rq(implementation_uid="1.2.3.4"))
        assert decode_ac(accepted).called_ae_title == "WLMD"

    def test_no_contexts_closes_without_rj(self, engine_factory) -> None:
        engine = engine_factory()
        assert exchange(engine.port, encode_rq(contexts=[])) == b""
        assert engine.report().outcome == "closed"

    def test_called_ae_trailing_spaces_and_nul(self, engine_factory) -> None:
        engine = engine_factory()
        rq = bytearray(encode_rq("WLMD"))
        rq[10:26] = b"WLMD\0XYZ        "
        decode_ac(exchange(engine.port, bytes(rq)))
        rq[10:26] = b" WLMD           "
        assert exchange(engine.port, bytes(rq))[:1] == b"\x03"

    @pytest.mark.parametrize(
        ("preference", "expected"),
        [
            (TransferSyntaxPreference.UNCOMPRESSED, [ELE, ELE, EBE, ILE]),
            (TransferSyntaxPreference.LITTLE, [ELE, ELE, EBE, ILE]),
            (TransferSyntaxPreference.BIG, [EBE, ELE, EBE, ILE]),
            (TransferSyntaxPreference.DEFLATED, [DEFLATE, ELE, EBE, ILE]),
            (TransferSyntaxPreference.IMPLICIT, [ILE, ILE, ILE, ILE]),
        ],
    )
    def test_server_preference_chooses(self, engine_factory, preference, expected) -> None:
        engine = engine_factory(transfer_syntax=preference)
        contexts = [
            (MWL, [ILE, EBE, DEFLATE, ELE]),
            (MWL, [ILE, ELE]),
            (MWL, [ILE, EBE]),
            (VERIFICATION, [ILE]),
        ]
        got = ac_contexts(exchange(engine.port, encode_rq(contexts=contexts)))
        assert [ts for _, _, ts in got] == expected
        assert [result for _, result, _ in got] == [0, 0, 0, 0]

    def test_refused_contexts_carry_implicit_little_endian(self, engine_factory) -> None:
        engine = engine_factory(transfer_syntax=TransferSyntaxPreference.IMPLICIT)
        contexts = [(MWL, [ILE]), ("1.2.3", [ELE]), (MWL, [ELE, EBE]), (VERIFICATION, [DEFLATE])]
        got = ac_contexts(exchange(engine.port, encode_rq(contexts=contexts)))
        assert got == [(1, 0, ILE), (3, 3, ILE), (5, 4, ILE), (7, 4, ILE)]

    @pytest.mark.parametrize("max_pdu", [4096, 16384, 131072])
    def test_ac_identity_and_max_pdu(self, engine_factory, max_pdu: int) -> None:
        engine = engine_factory(max_pdu=max_pdu)
        ac = decode_ac(exchange(engine.port, encode_rq()))
        user = {type(i).__name__: i for i in ac.user_information.user_data}
        assert user["MaximumLengthSubItem"].maximum_length_received == max_pdu
        uid = user["ImplementationClassUIDSubItem"].implementation_class_uid
        assert uid == pdu.IMPLEMENTATION_CLASS_UID
        name = user["ImplementationVersionNameSubItem"].implementation_version_name
        assert name.startswith("WLMD_")
        assert ac._reserved_aet.strip() == "WLMD" and ac._reserved_aec.strip() == "RAWSCU"


class TestTimeouts:
    def test_acse_timeout_closes_silently(self, engine_factory) -> None:
        engine = engine_factory(acse_timeout=0.3)
        with connect(engine.port) as sock:
            started = time.monotonic()
            assert recv_pdu(sock) == b""
            assert 0.2 < time.monotonic() - started < 3
        assert engine.report().outcome == "timeout"

    def test_acse_timeout_covers_a_partial_rq(self, engine_factory) -> None:
        engine = engine_factory(acse_timeout=0.3)
        with connect(engine.port) as sock:
            sock.sendall(encode_rq()[:20])
            assert recv_pdu(sock) == b""
        assert engine.report().outcome == "timeout"

    def test_acse_timeout_is_for_the_first_pdu_only(self, engine_factory) -> None:
        engine = engine_factory(acse_timeout=0.2)
        with associated(engine.port) as sock:
            time.sleep(0.5)
            sock.sendall(pdata(1, True, command_bytes(0x0030, sop_class=MWL)))
            cmd, _, _ = read_message(sock)
            assert (cmd.CommandField, cmd.Status) == (0x8030, 0)

    def test_dimse_timeout_waiting_for_identifier_aborts(self, engine_factory) -> None:
        engine = engine_factory(dimse_timeout=0.3)
        with associated(engine.port) as sock:
            sock.sendall(pdata(1, True, command_bytes(0x0020, has_dataset=True)))
            assert recv_pdu(sock) == bytes.fromhex("07000000000400000000")
        assert engine.report().outcome == "timeout"

    def test_idle_timeout(self, engine_factory) -> None:
        engine = engine_factory(idle_timeout=0.3, dimse_timeout=0.1)
        with associated(engine.port) as sock:
            assert recv_pdu(sock)[:1] == b"\x07"
        assert engine.report().outcome == "timeout"


class TestDimse:
    def test_sleep_during_and_after(self, engine_factory) -> None:
        engine = engine_factory(FakeApp(records=[]), sleep_during=1, sleep_after=1)
        with associated(engine.port) as sock:
            started = time.monotonic()
            send_find(sock)
            assert read_message(sock)[0].Status == 0
            answered = time.monotonic()
            sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            assert recv_pdu(sock)[:1] == b"\x06"
            released = time.monotonic()
        assert answered - started >= 0.95  # --sleep-during before the (only) response
        assert released - answered >= 0.9  # --sleep-after before the next command is read

    def test_undecodable_identifier_aborts(self, engine_factory) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(
                pdata(1, True, command_bytes(0x0020, has_dataset=True))
                + pdata(1, False, b"\x10\x00\x10\x00PN\xff\x7f")
            )
            assert recv_pdu(sock)[:1] == b"\x07"
        assert engine.report().outcome == "aborted"

    def test_fragmented_request_and_response(self, engine_factory) -> None:
        records = canned_records(1)
        records[0].PatientComments = "y" * 1000
        engine = engine_factory(FakeApp(records=records))
        with associated(engine.port, max_pdu=128) as sock:
            command = command_bytes(0x0020, message_id=3, has_dataset=True)
            identifier = identifier_bytes()
            pieces = [pdata(1, True, command[:10], last=False), pdata(1, True, command[10:])]
            pieces += [pdata(1, False, identifier[i : i + 7], last=i + 7 >= len(identifier))
                       for i in range(0, len(identifier), 7)]
            sock.sendall(b"".join(pieces))
            cmd, data, sizes = read_message(sock)
            assert (cmd.Status, cmd.MessageIDBeingRespondedTo) == (0xFF00, 3)
            assert max(sizes) <= 128 and len(sizes) > 8
            assert read_dataset(BytesIO(data), False, True).PatientComments == "y" * 1000
            cmd, data, _ = read_message(sock)
            assert (cmd.Status, data) == (0, b"")

    def test_response_encoding_follows_the_context(self, engine_factory) -> None:
        engine = engine_factory()
        contexts = [(MWL, [EBE])]
        with associated(engine.port, contexts=contexts) as sock:
            send_find(sock, little=False)
            _, data, _ = read_message(sock)
        assert read_dataset(BytesIO(data), False, False).PatientName == "Test^Patient0"

    def test_cancel_without_find_is_ignored(self, engine_factory) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(pdata(1, True, command_bytes(0x0FFF, responded_to=5)))
            sock.sendall(pdata(1, True, command_bytes(0x0030, message_id=6)))
            cmd, _, _ = read_message(sock)
            assert (cmd.CommandField, cmd.MessageIDBeingRespondedTo) == (0x8030, 6)

    def test_cancel_with_wrong_id_aborts(self, engine_factory) -> None:
        gate = threading.Event()
        engine = engine_factory(FakeApp(gate=gate))
        with associated(engine.port) as sock:
            send_find(sock, message_id=4)
            assert read_message(sock)[0].Status == 0xFF00
            sock.sendall(pdata(1, True, command_bytes(0x0FFF, responded_to=5)))
            time.sleep(0.1)
            gate.set()
            answers = []
            while raw := recv_pdu(sock):
                answers.append(raw[0])
            assert answers[-1] == 0x07
        assert engine.report().outcome == "aborted"

    @pytest.mark.parametrize(
        "message",
        [
            pdata(1, True, command_bytes(0x0001, has_dataset=False)),  # C-STORE
            pdata(1, True, command_bytes(0x0020, has_dataset=False)),  # C-FIND without data
            pdata(1, True, b"\x01\x02\x03"),  # garbage command set
            pdata(3, True, command_bytes(0x0030)),  # context never accepted
            pdata(1, False, b"\x08\x00\x50\x00"),  # data set without command
        ],
    )
    def test_bad_messages_abort(self, engine_factory, message: bytes) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(message)
            answer = recv_pdu(sock)
        assert answer[:1] == b"\x07"
        assert engine.report().outcome == "aborted"

    def test_release(self, engine_factory) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            assert recv_pdu(sock) == b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
            assert recv_pdu(sock) == b""
        assert engine.report().outcome == "released"

    def test_peer_abort(self, engine_factory) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            assert recv_pdu(sock) == b""
        assert engine.report().outcome == "aborted"

    def test_application_failure_aborts(self, engine_factory) -> None:
        class Broken(FakeApp):
            def find(self, assoc, identifier, ts_uid, encoded=b""):  # type: ignore[override]
                raise RuntimeError("store exploded")

        engine = engine_factory(Broken())
        with associated(engine.port) as sock:
            send_find(sock)
            assert recv_pdu(sock)[:1] == b"\x07"
        report = engine.report()
        assert report.outcome == "error" and "store exploded" in report.detail


class TestGarbage:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"\x09\x00\x00\x00\x00\x02ab", b"\x07" + bytes(5)[:1]),  # unknown PDU type
            (b"\x04\x00\x00\x00\x00\x04abcd", b"\x07"),  # P-DATA before association
            (b"\x01\x00\x00\x00\x00\x10" + bytes(16), b"\x07"),  # RQ too short
            (b"\x01\x00\x00\x02\x00\x00", b"\x07"),  # RQ of 128 KiB announced
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x07"),
        ],
    )
    def test_before_association(self, engine_factory, data: bytes, expected: bytes) -> None:
        engine = engine_factory()
        with connect(engine.port) as sock:
            sock.sendall(data)
            answer = recv_pdu(sock)
        assert answer[:1] == expected[:1]
        assert engine.report().outcome == "aborted"

    def test_oversize_pdata_aborts(self, engine_factory) -> None:
        engine = engine_factory(max_pdu=4096)
        with associated(engine.port) as sock:
            sock.sendall(b"\x04\x00" + struct.pack(">L", 4097))
            assert recv_pdu(sock) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"
        assert engine.report().outcome == "aborted"

    def test_second_rq_aborts(self, engine_factory) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(encode_rq())
            assert recv_pdu(sock) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x02"

    def test_truncated_then_closed(self, engine_factory) -> None:
        engine = engine_factory()
        with associated(engine.port) as sock:
            sock.sendall(pdata(1, True, command_bytes(0x0030))[:-4])
        assert engine.report().outcome == "closed"

    def test_reset_mid_association(self, engine_factory) -> None:
        engine = engine_factory()
        sock = associated(engine.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert engine.report().outcome == "closed"
