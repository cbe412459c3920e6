"""Dump text read as DCMTK writes and reads it: dump2dcm input, dcmdump output, -rfp files."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tests.support.processes import DCMTK_EXAMPLES, dcmtk_tool, dump2dcm
from wlmd.dicom.dump import dump_request
from wlmd.dicom.dump_text import DumpSyntaxError, parse_dump
from wlmd.worklist.writer import encode_entry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "worklists"


def written(dataset: Dataset) -> Dataset:
    """The dataset as a ``.wl`` file holds it."""
    return dcmread(io.BytesIO(encode_entry(dataset)))


def test_dcmtk_example_dumps_read_as_dump2dcm_reads_them(tmp_path: Path) -> None:
    dumps = sorted((DCMTK_EXAMPLES / "wlistdb" / "OFFIS").glob("*.dump"))
    if not dumps:
        pytest.skip("DCMTK's examples are not installed")
    for dump in dumps:
        expected = dcmread(dump2dcm(dump, tmp_path / f"{dump.stem}.wl"))
        assert written(parse_dump(dump.read_bytes())) == expected, dump.name


def test_dcmdump_output_reads_back_to_the_same_entry() -> None:
    dcmdump = dcmtk_tool("dcmdump")
    for path in sorted(EXAMPLES.glob("*/*.wl"))[:12]:
        text = subprocess.run([dcmdump, "-q", str(path)], capture_output=True, check=True,
                              timeout=60).stdout
        assert written(parse_dump(text)) == dcmread(path), path.name


def test_request_files_read_back_to_the_identifier() -> None:
    identifier = Dataset()
    identifier.SpecificCharacterSet = "ISO_IR 192"
    identifier.PatientName = "MÜLLER^*"
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledProcedureStepStartDate = "20240305-"
    identifier.ScheduledProcedureStepSequence = [step]
    received = written(identifier)  # raw bytes, as an identifier off the wire
    text = dump_request(received, ExplicitVRLittleEndian).encode()  # as wlmd writes it
    assert written(parse_dump(text)) == received


def test_numbers_uids_by_name_and_empty_values() -> None:
    parsed = written(parse_dump(
        b"(0028,0010) US 512\n(0008,0016) UI =ModalityWorklistInformationModelFind\n"
        b"(0010,0030) DA (no value available)\n# a comment\n\n(0010,0020) LO [P 1]  # 4, 1 x\n"))
    assert parsed.Rows == 512
    assert parsed.SOPClassUID == "1.2.840.10008.5.1.4.31"
    assert parsed.PatientBirthDate == ""
    assert parsed.PatientID == "P 1"


@pytest.mark.parametrize(("text", "message"), [
    (b"(0010,0010 PN [X]\n", "line 1: not a dump element line"),
    (b"(0010,0010) PN [X]\n(fffe,e000) na\n", "line 2: item outside a sequence"),
    (b"(fffe,e0dd) na\n", "line 1: delimiter without an open item/sequence"),
    (b"(0028,0010) US many\n", "line 1:"),
])
def test_malformed_lines_are_refused_with_their_number(text: bytes, message: str) -> None:
    with pytest.raises(DumpSyntaxError, match=message.replace("(", r"\(")):
        parse_dump(text)
