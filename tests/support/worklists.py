"""Worklist entries for tests: a complete entry shaped like DCMTK's example, one file per
completeness rule (the case table), writers, and a query of the real wlmscpfs over such files."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support.processes import dcmtk_tool, free_port, start_wlmscpfs, stop_process
from wlmd.worklist.store import WorklistStore

AE = "OFFIS"  # the called AE title of the unit tests' ``root`` fixture
Mutation = Callable[[Dataset], None]
MWL_FIND = "1.2.840.10008.5.1.4.31"


def code_item(value: str = "C1", scheme: str = "99X") -> Dataset:
    """One code sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    return item


def ref_item(class_uid: str = "1.2.840.10008.3.1.2.3.1", uid: str = "1.2.3.4") -> Dataset:
    """One ReferencedStudy/PatientSequence item."""
    item = Dataset()
    item.ReferencedSOPClassUID = class_uid
    item.ReferencedSOPInstanceUID = uid
    return item


def worklist_dataset(accession: str = "00000") -> Dataset:
    """A complete worklist entry, the shape of DCMTK's example wklist1 (no reference sequences)."""
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledStationAETitle = ["AA32", "AA33"]
    step.ScheduledProcedureStepStartDate = "19951015"
    step.ScheduledProcedureStepStartTime = "085607"
    step.ScheduledPerformingPhysicianName = "JOHNSON"
    step.ScheduledProcedureStepDescription = "EXAM74"
    step.ScheduledProcedureStepID = "SPD3445"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.AccessionNumber = accession
    ds.PatientName = "VIVALDI^ANTONIO"
    ds.PatientID = "AV35674"
    ds.StudyInstanceUID = "1.2.276.0.7230010.3.2.101"
    ds.RequestedProcedureDescription = "EXAM6"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.RequestedProcedureID = "RP454G234"
    return ds


def write_worklist(path: Path, ds: Dataset, *, blank: bytes = b"") -> Path:
    """Write ``ds`` as a raw explicit-VR dataset; ``blank`` is a value to overwrite with spaces."""
    dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    if blank:
        data = path.read_bytes()
        assert data.count(blank) == 1
        path.write_bytes(data.replace(blank, b" " * len(blank)))
    return path


def write_ae_directory(ae_dir: Path, accessions: list[str]) -> None:
    """A called AE directory with its lockfile and one entry per accession number, written
    as ``0.wl``, ``1.wl``…"""
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    for number, accession in enumerate(accessions):
        write_worklist(ae_dir / f"{number}.wl", worklist_dataset(accession))


def _step(ds: Dataset) -> Dataset:
    return ds.ScheduledProcedureStepSequence[0]


def _delete(keyword: str, *, in_step: bool = False) -> Mutation:
    return lambda ds: delattr(_step(ds) if in_step else ds, keyword)


def _empty(keyword: str, *, in_step: bool = False) -> Mutation:
    return lambda ds: setattr(_step(ds) if in_step else ds, keyword, "")


def _set(keyword: str, value: object, *, in_step: bool = False) -> Mutation:
    return lambda ds: setattr(_step(ds) if in_step else ds, keyword, value)


def _both(first: Mutation, second: Mutation) -> Mutation:
    def apply(ds: Dataset) -> None:
        first(ds)
        second(ds)
    return apply


SPS_TEXT = "ScheduledProcedureStepSequence (0040,0100) is missing or does not have exactly one item"

# name -> (mutation, value to blank out with spaces, served?, DEBUG reasons in order)
COMPLETENESS_CASES: dict[str, tuple[Mutation | None, bytes, bool, list[str]]] = {
    "complete": (None, b"", True, [
        "- ReferencedStudySequence (0008,1110) is missing",
        "- ReferencedPatientSequence (0008,1120) is missing"]),
    "no_sps": (_delete("ScheduledProcedureStepSequence"), b"", False, ["- " + SPS_TEXT]),
    "sps_two_items": (lambda ds: ds.ScheduledProcedureStepSequence.append(
        _step(worklist_dataset())), b"", False, ["- " + SPS_TEXT]),
    "sps_no_items": (_set("ScheduledProcedureStepSequence", Sequence()), b"", False,
                     ["- " + SPS_TEXT]),
    "no_station_ae": (_delete("ScheduledStationAETitle", in_step=True), b"", False,
                      ["- ScheduledStationAETitle (0040,0001) is missing or empty"]),
    "empty_start_date": (_empty("ScheduledProcedureStepStartDate", in_step=True), b"", False,
                         ["- ScheduledProcedureStepStartDate (0040,0002) is missing or empty"]),
    "spaces_start_time": (None, b"085607", True, [
        "- ReferencedStudySequence (0008,1110) is missing",
        "- ReferencedPatientSequence (0008,1120) is missing"]),
    "no_modality": (_delete("Modality", in_step=True), b"", False,
                    ["- Modality (0008,0060) is missing or empty"]),
    "no_step_id": (_delete("ScheduledProcedureStepID", in_step=True), b"", False,
                   ["- ScheduledProcedureStepID (0040,0009) is missing or empty"]),
    "no_rp_id": (_delete("RequestedProcedureID"), b"", False,
                 ["- RequestedProcedureID (0040,1001) is missing or empty"]),
    "empty_study_uid": (_empty("StudyInstanceUID"), b"", False,
                        ["- StudyInstanceUID (0020,000d) is missing or empty"]),
    "no_patient_name": (_delete("PatientName"), b"", False,
                        ["- PatientName (0010,0010) is missing or empty"]),
    "no_patient_id": (_delete("PatientID"), b"", False,
                      ["- PatientID (0010,0020) is missing or empty"]),
    "spaces_patient_id": (None, b"AV35674 ", True, [
        "- ReferencedStudySequence (0008,1110) is missing",
        "- ReferencedPatientSequence (0008,1120) is missing"]),
    "no_step_description": (_delete("ScheduledProcedureStepDescription", in_step=True), b"",
                            False, ["- ScheduledProtocolCodeSequence (0040,0008) and "
                                    "(0040,0007) (0040,0007) are both not set"]),
    "spaces_step_description": (None, b"EXAM74", False,
                                ["- ScheduledProcedureStepDescription (0040,0007) is empty"]),
    "empty_step_description": (_both(_empty("ScheduledProcedureStepDescription", in_step=True),
                                     _set("ScheduledProtocolCodeSequence",
                                          Sequence([code_item()]), in_step=True)),
                               b"", False,
                               ["- ScheduledProcedureStepDescription (0040,0007) is empty"]),
    "empty_protocol_codes": (_set("ScheduledProtocolCodeSequence", Sequence(), in_step=True),
                             b"", False, ["- ScheduledProtocolCodeSequence (0040,0008) is empty"]),
    "code_without_scheme": (_set("ScheduledProtocolCodeSequence",
                                 Sequence([code_item(scheme="")]), in_step=True), b"", False,
                            ["- CodingSchemeDesignator (0008,0102) is missing or empty",
                             "- ScheduledProtocolCodeSequence (0040,0008) has incomplete or "
                             "empty code entries"]),
    "codes_instead_of_description": (
        _both(_delete("ScheduledProcedureStepDescription", in_step=True),
              _set("ScheduledProtocolCodeSequence", Sequence([code_item()]), in_step=True)),
        b"", True, ["- ReferencedStudySequence (0008,1110) is missing",
                    "- ReferencedPatientSequence (0008,1120) is missing"]),
    "no_rp_description": (_delete("RequestedProcedureDescription"), b"", False,
                          ["- RequestedProcedureCodeSequence (0032,1064) and (0032,1060) "
                           "(0032,1060) are both not set"]),
    "spaces_rp_description": (None, b"EXAM6 ", False,
                              ["- RequestedProcedureDescription (0032,1060) is empty"]),
    "study_ref_without_instance": (_set("ReferencedStudySequence",
                                        Sequence([ref_item(uid="")])), b"", False,
                                   ["- ReferencedSOPInstanceUID (0008,1155) is missing or empty",
                                    "- ReferencedStudySequence (0008,1110) is incomplete"]),
    "empty_study_refs": (_set("ReferencedStudySequence", Sequence()), b"", True,
                         ["- ReferencedPatientSequence (0008,1120) is missing"]),
    "complete_refs": (_both(_set("ReferencedStudySequence", Sequence([ref_item()])),
                            _set("ReferencedPatientSequence", Sequence([ref_item()]))),
                      b"", True, []),
    "patient_ref_without_class": (_set("ReferencedPatientSequence",
                                       Sequence([ref_item(class_uid="")])), b"", False,
                                  ["- ReferencedStudySequence (0008,1110) is missing",
                                   "- ReferencedSOPClassUID (0008,1150) is missing or empty",
                                   "- ReferencedPatientSequence (0008,1120) is incomplete"]),
}


def make_case(directory: Path, name: str, accession: str = "00000") -> Path:
    """Write the file of one case of COMPLETENESS_CASES into ``directory``."""
    mutation, blank, _, _ = COMPLETENESS_CASES[name]
    ds = worklist_dataset(accession)
    if mutation is not None:
        mutation(ds)
    return write_worklist(directory / f"{name}.wl", ds, blank=blank)


def add(root: Path, name: str, accession: str = "00000", date: str = "19951015",
        time_: str = "085607") -> Path:
    """Write a complete worklist file ``name`` into ``root``'s AE directory."""
    ds = worklist_dataset(accession)
    ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = date
    ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime = time_
    return write_worklist(root / AE / name, ds)


def accessions(store: WorklistStore, ae: str = AE) -> list[str]:
    """AccessionNumber of every served record, in the store's order."""
    return [str(r.dataset.AccessionNumber) for r in store.query(ae, None)]


def query_wlmscpfs(tmp_path: Path, ae: str, options: list[str]) -> tuple[set[str], str]:
    """One AccessionNumber C-FIND to wlmscpfs on ``tmp_path/db``: (numbers served, its log)."""
    query = Dataset()
    query.AccessionNumber = ""
    query.file_meta = FileMetaDataset()
    query.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    query.file_meta.MediaStorageSOPClassUID = MWL_FIND
    query.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    query_file = tmp_path / "query.dcm"
    dcmwrite(query_file, query, enforce_file_format=True)  # DCMTK cannot sniff 8 raw bytes
    out = tmp_path / "responses"
    out.mkdir(exist_ok=True)
    log_path = tmp_path / "wlmscpfs.log"
    port = free_port()
    with log_path.open("wb") as log:
        server = start_wlmscpfs(["--single-process", "-dfp", str(tmp_path / "db"), *options],
                                port, stdout=log, stderr=subprocess.STDOUT)
        try:
            subprocess.run([dcmtk_tool("findscu"), "-aec", ae, "-W", "-X", "-od", str(out),
                            "127.0.0.1", str(port), str(query_file)],
                           check=True, capture_output=True, timeout=30)
        finally:
            stop_process(server)
    served = {str(dcmread(f).AccessionNumber) for f in out.glob("rsp*.dcm")}
    return served, log_path.read_text(errors="replace")
