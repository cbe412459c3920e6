"""Complete worklist entries in any character set, written where a test's wlmd serves them."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MWL_SOP_CLASS = "1.2.840.10008.5.1.4.31"


def entry(patient_name: str, *, charset: str | list[str] = "", station: str = "CT1",
          modality: str = "CT", date: str = "20260101", patient_id: str = "P1",
          description: str = "Step", **top: str) -> Dataset:
    """A dataset every file-reject rule of wlmscpfs accepts; text encoded in ``charset``."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = "A" + patient_id
    ds.RequestedProcedureID = "RP" + patient_id
    ds.RequestedProcedureDescription = "Procedure"
    ds.StudyInstanceUID = generate_uid()
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = "080000"
    step.Modality = modality
    step.ScheduledProcedureStepID = "S" + patient_id
    step.ScheduledProcedureStepDescription = description
    step.ScheduledPerformingPhysicianName = "Doe^Jane"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPatientSequence = Sequence()
    return ds


def write_entry(directory: Path, name: str, ds: Dataset) -> Path:
    """``directory/name`` as a DICOM file (the directory and its lockfile made as needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lockfile").touch()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = directory / name
    ds.save_as(path, enforce_file_format=True)
    return path
