"""-P, -S and -O against DCMTK's dcmqrscp with a small database built by the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support.processes import free_port, require_dcmtk, stop_process, wait_for_port

pytestmark = pytest.mark.interop
HOST = "127.0.0.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PATIENTS = [("DOE^JANE", "P1", "20240101"), ("ROE^RICHARD", "P2", "20240202")]


def _image(path: Path, name: str, patient_id: str, study_date: str) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_date, "120000", "1", ""
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "OT", 1, 1
    ds.ConversionType = "WSD"
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.PixelData = 7, 0, b"\0" * 4
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def qrscp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """dcmqrscp on loopback holding two patients, stored with DCMTK's storescu."""
    require_dcmtk("dcmqrscp", "storescu", "wlmscpfs")
    root = tmp_path_factory.mktemp("qr")
    (root / "db").mkdir()
    port = free_port()
    (root / "dcmqrscp.cfg").write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQRSCP {root / 'db'} RW (10, 10mb) ANY\nAETable END\n")
    proc = subprocess.Popen(["dcmqrscp", "-c", str(root / "dcmqrscp.cfg"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc=proc)
        storescu = str(Path(shutil.which("wlmscpfs") or "").with_name("storescu"))
        for number, patient in enumerate(PATIENTS):
            image = root / f"img{number}.dcm"
            _image(image, *patient)
            subprocess.run([storescu, "-aec", "QRSCP", HOST, str(port), str(image)],
                           check=True, timeout=30, capture_output=True)
        yield str(port)
    finally:
        stop_process(proc)


def _run(command: list[str], port: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*command, "-aec", "QRSCP", HOST, port, *args], capture_output=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("model", "level", "keys"), [
    ("-P", "PATIENT", ["-k", "PatientName", "-k", "PatientID"]),
    ("-S", "STUDY", ["-k", "PatientName=DOE*", "-k", "StudyDate", "-k", "StudyInstanceUID"]),
    ("-O", "PATIENT", ["-k", "PatientID=P2", "-k", "PatientName"]),
])
def test_query_retrieve_models_match_dcmtk(qrscp: str, model: str, level: str,
                                           keys: list[str]) -> None:
    args = [model, "-k", f"QueryRetrieveLevel={level}", *keys]
    reference = str(Path(shutil.which("wlmscpfs") or "").with_name("findscu"))
    mine = _run([sys.executable, "-m", "wlmd.findscu"], qrscp, *args)
    theirs = _run([reference], qrscp, *args)
    assert theirs.returncode == 0 and theirs.stderr.count(b"Find Response:") >= 1
    assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)


def test_worklist_model_is_refused_by_a_qr_scp(qrscp: str) -> None:
    reference = str(Path(shutil.which("wlmscpfs") or "").with_name("findscu"))
    mine = _run([sys.executable, "-m", "wlmd.findscu"], qrscp, "-W", "-k", "PatientName")
    theirs = _run([reference], qrscp, "-W", "-k", "PatientName")
    assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
