"""MPPS reads and marks worklist entry files on their bytes (wlmd.mpps.entryfile, dicom.rawfile).

pydicom, which wlmd did not write, is the judge: a marked file must read back as the same entry
with only the status changed, whatever the lengths (defined or undefined) of its sequences.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import UID, ImplicitVRLittleEndian

from tests.support.mpps import create_attributes, write_entry
from wlmd.mpps.entryfile import NotRaw, instance_link_values, link_values, with_sps_status
from wlmd.mpps.lifecycle import instance_link_keys, link_keys


def entry_bytes(tmp_path: Path, **changes: object) -> bytes:
    path = write_entry(tmp_path, "ACC1", "1.2.3.4", sps_id="SPS1")
    ds = dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def two_steps(tmp_path: Path, *, undefined: bool) -> bytes:
    """An entry with steps SPS1 and SPS2; sequences and items of undefined length if asked."""
    ds = dcmread(write_entry(tmp_path, "ACC1", "1.2.3.4", sps_id="SPS1"))
    second = Dataset()
    second.update(ds.ScheduledProcedureStepSequence[0])
    second.ScheduledProcedureStepID = "SPS2"
    ds.ScheduledProcedureStepSequence.append(second)
    element = ds["ScheduledProcedureStepSequence"]
    element.is_undefined_length = undefined
    for item in element.value:
        item.is_undefined_length_sequence_item = undefined
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def statuses(data: bytes) -> list[str]:
    ds = dcmread(io.BytesIO(data))
    return [item.get("ScheduledProcedureStepStatus", "") for item in
            ds.ScheduledProcedureStepSequence]


def test_the_link_values_are_read_from_the_bytes(tmp_path: Path) -> None:
    data = two_steps(tmp_path, undefined=True)
    values = link_values(data)
    assert (values.study_uid, values.accession, values.requested_procedure_id) == (
        "1.2.3.4", "ACC1", "RPACC1")
    assert values.sps_ids == ("SPS1", "SPS2")


@pytest.mark.parametrize("undefined", [False, True])
def test_a_mark_changes_only_the_status_of_the_linked_step(tmp_path: Path,
                                                           undefined: bool) -> None:
    data = two_steps(tmp_path, undefined=undefined)
    marked = with_sps_status(data, "STARTED", {"SPS2"})
    assert statuses(marked) == ["SCHEDULED", "STARTED"]
    before, after = dcmread(io.BytesIO(data)), dcmread(io.BytesIO(marked))
    after.ScheduledProcedureStepSequence[1].ScheduledProcedureStepStatus = "SCHEDULED"
    assert after == before
    assert after.file_meta == before.file_meta


def test_without_step_ids_every_step_is_marked_and_lengths_follow_the_value(
        tmp_path: Path) -> None:
    data = two_steps(tmp_path, undefined=False)
    for status in ("DISCONTINUED", "COMPLETED", "STARTED", "SCHEDULED"):
        data = with_sps_status(data, status, set())
        assert statuses(data) == [status, status]


def test_a_missing_status_is_inserted_in_tag_order(tmp_path: Path) -> None:
    ds = dcmread(write_entry(tmp_path, "ACC1", "1.2.3.4"))
    del ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    marked = dcmread(io.BytesIO(with_sps_status(buffer.getvalue(), "STARTED", set())))
    step = marked.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStatus == "STARTED"
    assert list(step.keys()) == sorted(step.keys())


def test_an_entry_without_steps_is_left_as_it_is(tmp_path: Path) -> None:
    data = entry_bytes(tmp_path)
    ds = dcmread(io.BytesIO(data))
    del ds.ScheduledProcedureStepSequence
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert with_sps_status(buffer.getvalue(), "STARTED", set()) == buffer.getvalue()


def test_other_layouts_are_left_to_pydicom(tmp_path: Path) -> None:
    ds = dcmread(write_entry(tmp_path, "ACC1", "1.2.3.4"))
    implicit = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = UID(ImplicitVRLittleEndian)
    ds.save_as(implicit, enforce_file_format=True)
    explicit = entry_bytes(tmp_path)
    first = explicit.index(b"\x08\x00\x05\x00CS")  # (0008,0005), the data set's first element
    group_length = b"\x08\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"  # (0008,0000)
    with_group_length = explicit[:first] + group_length + explicit[first:]
    assert dcmread(io.BytesIO(with_group_length))[0x00080000].VR == "UL"
    latin = entry_bytes(tmp_path, AccessionNumber="Ä1")
    for data in (implicit.getvalue(), with_group_length, b"", b"\0" * 200):
        with pytest.raises(NotRaw):
            with_sps_status(data, "STARTED", set())
    with pytest.raises(NotRaw):
        link_values(latin)


def test_damaged_files_give_not_raw_and_nothing_else(tmp_path: Path) -> None:
    """Cut short or with flipped bytes: the walk answers NotRaw or a value, never another error."""
    data = two_steps(tmp_path, undefined=True)
    rng = random.Random(12)
    cases = [data[:cut] for cut in range(0, len(data), 7)]
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(132, len(data))] = rng.randrange(256)
        cases.append(bytes(damaged))
    for case in cases:
        for look in (link_values, lambda d: with_sps_status(d, "STARTED", set())):
            with contextlib.suppress(NotRaw):
                look(case)


def test_sequences_nested_too_deep_are_left_to_pydicom() -> None:
    undefined_sq = b"\x40\x00\x00\x01SQ\0\0\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    nested = (undefined_sq + item) * 40
    meta = (b"\x02\x00\x10\x00UI\x14\x00" + b"1.2.840.10008.1.2.1\0")
    with pytest.raises(NotRaw):
        link_values(bytes(128) + b"DICM" + meta + nested)


def instance_bytes(accessions: list[str], *, undefined: bool, charset: str = "") -> bytes:
    """An MPPS instance as pydicom saves it, with one scheduled step item per accession."""
    ds = create_attributes(accessions[0], "1.2.826.0.1.3680043.10.1366.7.1")
    first = ds.ScheduledStepAttributesSequence[0]
    for n, accession in enumerate(accessions[1:], start=2):
        item = copy.deepcopy(first)
        item.AccessionNumber = accession
        item.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1366.7.{n}"
        item.ScheduledProcedureStepID = f"SPS{n}"
        ds.ScheduledStepAttributesSequence.append(item)
    ds["ScheduledStepAttributesSequence"].is_undefined_length = undefined
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.3.1.2.3.3", "1.2.3.4.5"
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("undefined", [False, True])
@pytest.mark.parametrize("accessions", [["ACC1"], ["ACC1", "ACC2"], ["A\\B"], [""]])
def test_an_instance_links_as_pydicom_reads_it(accessions: list[str], undefined: bool) -> None:
    data = instance_bytes(accessions, undefined=undefined)
    keys = instance_link_keys(data)
    assert keys == link_keys(dcmread(io.BytesIO(data)))  # pydicom is the judge
    assert [key.sps_id for key in keys] == ["SPS1", *(f"SPS{n}" for n in
                                                      range(2, len(accessions) + 1))]


def test_instance_values_that_are_not_plain_ascii_are_left_to_pydicom() -> None:
    with pytest.raises(NotRaw):
        instance_link_values(instance_bytes(["A\\B"], undefined=False))
    data = instance_bytes(["ÄCC1"], undefined=False, charset="ISO_IR 100")
    with pytest.raises(NotRaw):
        instance_link_values(data)
    assert [key.accession for key in instance_link_keys(data)] == ["ÄCC1"]
