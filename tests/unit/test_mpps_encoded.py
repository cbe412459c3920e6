"""MPPS steps checked, merged and stored on their received bytes (wlmd.mpps.encoded, rules).

pydicom and DCMTK's dcmdump, which wlmd did not write, are the judges: an instance stored from
the bytes must read as the one stored through pydicom, and every Annex F check must answer on
the raw elements what it answers on the Dataset, or leave the step to the Dataset (NotRaw).
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from tests.support.mpps import create_attributes, final_modifications
from wlmd.dicom.dimse import EXPLICIT_LITTLE, decode_dataset
from wlmd.mpps.encoded import NotRaw, encoded_level
from wlmd.mpps.rules import Refusal, check_create, check_set, merge
from wlmd.mpps.storage import encode_instance, instance_level

UID = "1.2.826.0.1.3680043.10.1366.99.1"


def encoded(ds: Dataset) -> bytes:
    """The data set as an SCU sends it in explicit VR little endian (pydicom's writer)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def both(ds: Dataset) -> tuple[Dataset, bytes]:
    data = encoded(ds)
    return decode_dataset(data, EXPLICIT_LITTLE, 1 << 20), data


def read(data: bytes) -> Dataset:
    ds = dcmread(io.BytesIO(data))
    ds.file_meta = FileMetaDataset()  # the meta header is compared separately
    return ds


def test_an_instance_stored_from_the_bytes_reads_as_the_one_stored_through_pydicom(
        tmp_path: Path) -> None:
    decoded, data = both(create_attributes("ACC1", "1.2.3.4"))
    raw_file = encode_instance(encoded_level(data), UID)
    dataset_file = encode_instance(decoded, UID)
    assert read(raw_file) == read(dataset_file)
    assert dcmread(io.BytesIO(raw_file)).file_meta == dcmread(io.BytesIO(dataset_file)).file_meta
    path = tmp_path / f"{UID}.dcm"
    path.write_bytes(raw_file)
    dump = subprocess.run(["dcmdump", "+E", str(path)], capture_output=True, text=True,
                          check=True)
    assert "IN PROGRESS" in dump.stdout and UID in dump.stdout
    assert "W:" not in dump.stderr and "E:" not in dump.stderr


@pytest.mark.parametrize("status", ["COMPLETED", "DISCONTINUED"])
def test_an_n_set_merged_on_the_bytes_reads_as_the_pydicom_merge(status: str) -> None:
    stored = encode_instance(encoded_level(encoded(create_attributes("ACC1", "1.2.3.4"))), UID)
    changes, changes_data = both(final_modifications(status))
    raw_file = encode_instance(merge(instance_level(stored), encoded_level(changes_data)), UID)
    dataset_file = encode_instance(merge(dcmread(io.BytesIO(stored)), changes), UID)
    assert read(raw_file) == read(dataset_file)
    assert read(raw_file).PerformedProcedureStepStatus == status
    assert read(raw_file).PatientID == "PACC1"  # the N-CREATE's values stay


def _without(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def _set(keyword: str, value: object) -> Callable[[Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


def _step(change: Callable[[Dataset], None]) -> Callable[[Dataset], None]:
    return lambda ds: change(ds.ScheduledStepAttributesSequence[0])


def _series(ds: Dataset) -> None:
    ds.PerformedSeriesSequence = final_modifications().PerformedSeriesSequence
    del ds.PerformedSeriesSequence[0].ProtocolName


CREATE_CHANGES = {
    "complete": lambda ds: None,
    "no patient name": _without("PatientName"),
    "no step sequence": _without("ScheduledStepAttributesSequence"),
    "empty modality": _set("Modality", ""),
    "status COMPLETED": _set("PerformedProcedureStepStatus", "COMPLETED"),
    "padded status": _set("PerformedProcedureStepStatus", " IN PROGRESS "),
    "empty step sequence": _set("ScheduledStepAttributesSequence", []),
    "step without study": _step(_without("StudyInstanceUID")),
    "step with a bad study": _step(_set("StudyInstanceUID", "1.02.3")),
    "step without accession": _step(_without("AccessionNumber")),
    "series without protocol": _series,
}


@pytest.mark.parametrize("name", CREATE_CHANGES)
def test_n_create_checks_answer_on_the_bytes_as_on_the_dataset(name: str) -> None:
    ds = create_attributes("ACC1", "1.2.3.4")
    CREATE_CHANGES[name](ds)
    decoded, data = both(ds)
    assert check_create(encoded_level(data)) == check_create(decoded)
    assert (check_create(decoded) is None) == (name in ("complete", "padded status"))
    if name == "empty step sequence":  # type 1: a sequence needs an item (PS3.4 F.7.2-1)
        assert check_create(decoded) == Refusal(0x0121, (Tag(0x00400270),), "missing value")


SET_CHANGES: dict[str, Callable[[Dataset], None]] = {
    "completed": lambda ds: None,
    "a fixed attribute": _set("PatientID", "OTHER"),
    "status FINISHED": _set("PerformedProcedureStepStatus", "FINISHED"),
    "no end time": _without("PerformedProcedureStepEndTime"),
    "empty end date": _set("PerformedProcedureStepEndDate", ""),
    "no series": _without("PerformedSeriesSequence"),
    "still in progress": _set("PerformedProcedureStepStatus", "IN PROGRESS"),
}


@pytest.mark.parametrize("name", SET_CHANGES)
def test_n_set_checks_answer_on_the_bytes_as_on_the_dataset(name: str) -> None:
    stored = encode_instance(encoded_level(encoded(create_attributes("ACC1", "1.2.3.4"))), UID)
    ds = final_modifications()
    SET_CHANGES[name](ds)
    decoded, data = both(ds)
    raw: Refusal | None = check_set(instance_level(stored), encoded_level(data))
    assert raw == check_set(dcmread(io.BytesIO(stored)), decoded)
    assert (raw is None) == (name in ("completed", "still in progress"))


@pytest.mark.parametrize("value", ["IN PROGRESS\\COMPLETED", "IN PRÖGRESS"])
def test_values_pydicom_may_read_otherwise_are_left_to_it(value: str) -> None:
    ds = create_attributes("ACC1", "1.2.3.4")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PerformedProcedureStepStatus = value
    decoded, data = both(ds)
    with pytest.raises(NotRaw):
        check_create(encoded_level(data))
    assert check_create(decoded) is not None


def test_what_pydicom_would_store_otherwise_is_not_read_raw() -> None:
    data = encoded(create_attributes("ACC1", "1.2.3.4"))
    odd = data.replace(b"PPS1", b"PPS")  # Performed Procedure Step ID of odd length
    odd = odd.replace(b"\x53\x48\x04\x00PPS", b"\x53\x48\x03\x00PPS")
    with pytest.raises(NotRaw):
        encoded_level(odd)
    patient_name = b"\x10\x00\x10\x00PN"
    group_length = b"\x10\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"  # (0010,0000)
    with pytest.raises(NotRaw):
        encoded_level(data.replace(patient_name, group_length + patient_name))
