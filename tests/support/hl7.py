"""HL7 test harness: order messages, a wlmd with HL7 intake, python-hl7's MLLP clients, C-FIND.

Messages go out through clients this project did not write: the ``mllp_send`` command and
``hl7.client.MLLPClient`` of python-hl7. The worklist is read back with pynetdicom's C-FIND.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.processes import free_port, start_wlmd, stop_process, wait_for_port, wait_until

HOST = "127.0.0.1"
CALLED_AE = "RIS_WL"
MAPPING = f"""default_ae = "{CALLED_AE}"

[[route]]
modality = "MR"
ae = "MR_WL"
station_ae = "MR01"
"""
VT, FS, CR = b"\x0b", b"\x1c", b"\r"
MLLP_SEND = os.path.join(os.path.dirname(sys.executable), "mllp_send")


@dataclass
class Order:
    """The values of one test order; ``message()`` renders it as ORM^O01, OMI^O23 or OMG^O19."""

    control: str = "NW"
    control_id: str = "MSG0001"
    kind: str = "ORM^O01"
    version: str = "2.3"
    charset: str = ""
    name: str = "Doe^John"
    patient_id: str = "PAT1"
    placer: str = "PL1001"
    filler: str = "FI1001"
    accession: str = "ACC1001"
    procedure: str = "RP1001"
    step: str = "SPS1001"
    modality: str = "CT"
    start: str = "202501151030"
    code: str = "CTHEAD^CT head^L"
    status: str = "SC"
    study_uid: str = ""
    sender: str = "RIS^HOSPITAL"
    ack_modes: tuple[str, str] = ("", "")
    extra: dict[str, str] = field(default_factory=dict)

    def message(self) -> bytes:
        accept, application = self.ack_modes
        msh = ["MSH", "^~\\&", *self.sender.split("^", 1), "WLMD", "RADIOLOGY",
               "20250115093000", "", self.kind, self.control_id, "P", self.version, "", "",
               accept, application, "", self.charset]
        pid = ["PID", "1", "", f"{self.patient_id}^^^HOSP", "", self.name, "", "19700101",
               "F"]
        pv1 = ["PV1", "1", "O", "RAD^101^1", "", "", "", "", "D123^Welby^Marcus"]
        orc = ["ORC", self.control, self.placer, self.filler, "", self.status, "",
               f"^^^{self.start}" if self.kind == "ORM^O01" else ""]
        obr = ["OBR", "1", self.placer, self.filler, self.code] + [""] * 13 + [
            self.accession, self.procedure, self.step, "", "", "", self.modality]
        segments = [msh, pid, pv1, orc]
        if self.kind != "ORM^O01":
            segments.append(["TQ1", "1", "", "", "", "", "", self.start])
        segments.append(obr)
        if self.kind == "OMI^O23":
            segments.append(["IPC", self.accession, self.procedure, self.study_uid, self.step,
                             self.modality])
        elif self.study_uid:
            segments.append(["ZDS", f"{self.study_uid}^RIS^Application^DICOM"])
        text = "\r".join("|".join(s).rstrip("|") if s[0] != "MSH" else
                         "|".join(s) for s in segments) + "\r"
        for key, value in self.extra.items():
            text = text.replace(key, value)
        codec = {"8859/1": "latin-1", "UNICODE UTF-8": "utf-8"}.get(self.charset, "ascii")
        return text.encode(codec)


class Hl7Server:
    """``python -m wlmd`` with ``--hl7-listen`` on loopback, a worklist root and a log."""

    def __init__(self, tmp_path: Path, *extra: str, mapping: str = MAPPING,
                 verbose: bool = True) -> None:
        self.root = tmp_path / "worklists"
        for ae in (CALLED_AE, "MR_WL"):
            (self.root / ae).mkdir(parents=True, exist_ok=True)
        self.journal = tmp_path / "journal"
        self.mapping_path = tmp_path / "mapping.toml"
        self.mapping_path.write_text(mapping)
        self.port, self.hl7_port = free_port(), free_port()
        self.log_path = tmp_path / "wlmd.log"
        self._log = self.log_path.open("wb")
        self.proc = start_wlmd(
            [*(["-v"] if verbose else []), "-csk", "-dfp", str(self.root),
             "--hl7-listen", f"{HOST}:{self.hl7_port}", "--hl7-mapping", str(self.mapping_path),
             "--hl7-journal", str(self.journal),
             *extra], self.port, HOST, stderr=self._log)
        wait_for_port(self.hl7_port, HOST, proc=self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def hl7_child(self) -> psutil.Process:
        """The child listening on the HL7 port (workers close that socket)."""
        def listening(process: psutil.Process) -> bool:
            try:
                return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.hl7_port
                           for c in process.net_connections(kind="tcp"))
            except psutil.NoSuchProcess:
                return False

        def find() -> list[psutil.Process]:
            return [p for p in psutil.Process(self.proc.pid).children() if listening(p)]

        wait_until(find, what="HL7 child")
        return find()[0]

    def journal_records(self) -> list[str]:
        return (self.journal / "journal.log").read_text().splitlines()

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)


def mllp_send(port: int, *messages: bytes) -> list[bytes]:
    """Send with python-hl7's ``mllp_send`` command; the ACKs it printed, one per message.

    The messages go through a file (``-f``): its standard-input path mixes text and bytes.
    """
    with tempfile.NamedTemporaryFile(suffix=".hl7") as batch:
        batch.write(b"".join(VT + m + FS + CR for m in messages))
        batch.flush()
        out = subprocess.run([MLLP_SEND, "-p", str(port), "-f", batch.name, HOST],
                             capture_output=True, timeout=60, check=True).stdout
    return [line.strip(VT + FS + CR) for line in out.split(b"\n") if line.strip()]


def ack_segments(ack: bytes, codec: str = "latin-1") -> dict[str, list[str]]:
    """{segment id: fields} of an ACK (the first of each kind)."""
    text = ack.strip(VT + FS + CR).decode(codec)
    separator = text[3:4] or "|"  # the ACK answers in the delimiters of the message
    segments: dict[str, list[str]] = {}
    for line in text.split("\r"):
        if line:
            segments.setdefault(line[:3], line.split(separator))
    return segments


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are and read until the server closes or answers one block."""
    received = b""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            while FS + CR not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass  # a refused sender is closed without reading what it sent
    return received


def raw_blocks(port: int, data: bytes, count: int, timeout: float = 10.0) -> list[bytes]:
    """Send bytes as they are and read ``count`` MLLP blocks, then a moment more for any extra.

    The extra wait makes a test see a block the server should not have sent.
    """
    received = b""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        while received.count(FS + CR) < count:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sock.settimeout(0.3)
        with contextlib.suppress(TimeoutError):
            received += sock.recv(65536)
    return [block + FS + CR for block in received.split(FS + CR) if block]


def worklist(port: int, ae: str = CALLED_AE, tls: ssl.SSLContext | None = None,
             **keys: str) -> list[Dataset]:
    """Every entry of ``ae`` as C-FIND (pynetdicom) returns it, with the keys tests look at."""
    query = Dataset()
    query.SpecificCharacterSet = ""
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
                    "RequestedProcedureID", "RequestedProcedureDescription",
                    "PlacerOrderNumberImagingServiceRequest",
                    "FillerOrderNumberImagingServiceRequest"):
        setattr(query, keyword, "")
    step = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID",
                    "ScheduledProcedureStepStatus", "ScheduledProcedureStepDescription"):
        setattr(step, keyword, "")
    query.ScheduledProcedureStepSequence = [step]
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    client = AE(ae_title="HL7TEST")
    client.add_requested_context(ModalityWorklistInformationFind)
    assoc = client.associate(HOST, port, ae_title=ae,
                             tls_args=(tls, HOST) if tls is not None else None)
    assert assoc.is_established, "C-FIND association refused"
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
    return found
