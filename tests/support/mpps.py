"""MPPS test support: worklist entries, N-CREATE/N-SET data sets and pynetdicom peers.

The data sets are built here from PS3.4 Table F.7.2-1, independently of wlmd's own client, so
the tests do not grade wlmd with its own code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)

MPPS = ModalityPerformedProcedureStep


def write_entry(directory: Path, accession: str, study_uid: str, sps_id: str = "SPS1") -> Path:
    """A complete worklist entry file ``<accession>.wl`` with status SCHEDULED."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = f"P{accession}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = study_uid
    ds.RequestedProcedureID = f"RP{accession}"
    ds.RequestedProcedureDescription = "CT head"
    ds.ReferringPhysicianName = ""
    ds.ReferencedStudySequence = []
    ds.ReferencedPatientSequence = []
    sps = Dataset()
    sps.Modality = "CT"
    sps.ScheduledStationAETitle = "CT01"
    sps.ScheduledProcedureStepStartDate = "20260101"
    sps.ScheduledProcedureStepStartTime = "0800"
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = "head"
    sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [sps]
    ds.ensure_file_meta()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.31")
    ds.file_meta.MediaStorageSOPInstanceUID = UID(study_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = directory / f"{accession}.wl"
    ds.save_as(path, enforce_file_format=True)
    return path


def create_attributes(accession: str, study_uid: str, sps_id: str = "SPS1") -> Dataset:
    """An N-CREATE attribute list with every type 1 and 2 attribute, status IN PROGRESS."""
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.ReferencedStudySequence = []
    step.AccessionNumber = accession
    step.RequestedProcedureID = f"RP{accession}"
    step.RequestedProcedureDescription = "CT head"
    step.ScheduledProcedureStepID = sps_id
    step.ScheduledProcedureStepDescription = "head"
    step.ScheduledProtocolCodeSequence = []
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName = "Doe^Jane"
    ds.PatientID = f"P{accession}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20260101"
    ds.PerformedProcedureStepStartTime = "081500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ""
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def final_modifications(status: str = "COMPLETED") -> Dataset:
    """An N-SET that ends the step: end date and time, one performed series."""
    series = Dataset()
    series.PerformingPhysicianName = ""
    series.ProtocolName = "head"
    series.OperatorsName = ""
    series.SeriesInstanceUID = generate_uid()
    series.SeriesDescription = ""
    series.RetrieveAETitle = ""
    series.ReferencedImageSequence = []
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20260101"
    ds.PerformedProcedureStepEndTime = "090000"
    ds.PerformedSeriesSequence = [series]
    return ds


def n_create(port: int, called_ae: str, uid: str, attributes: Dataset) -> Dataset:
    """One N-CREATE in its own association; the response status data set."""
    assoc = _associate(port, called_ae)
    try:
        status, _ = assoc.send_n_create(attributes, MPPS, uid)
        return status
    finally:
        assoc.release()


def n_set(port: int, called_ae: str, uid: str, modifications: Dataset) -> Dataset:
    """One N-SET in its own association; the response status data set."""
    assoc = _associate(port, called_ae)
    try:
        status, _ = assoc.send_n_set(modifications, MPPS, uid)
        return status
    finally:
        assoc.release()


def _associate(port: int, called_ae: str):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established, "no association with wlmd"
    return assoc


def worklist_status(port: int, called_ae: str, accession: str) -> list[str]:
    """The Scheduled Procedure Step Status of each C-FIND match for ``accession``."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established
    query = Dataset()
    query.AccessionNumber = accession
    sps = Dataset()
    sps.ScheduledProcedureStepStatus = ""
    query.ScheduledProcedureStepSequence = [sps]
    found = []
    final = None
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(str(identifier.ScheduledProcedureStepSequence[0]
                                 .ScheduledProcedureStepStatus))
            elif status:
                final = status.Status
    finally:
        assoc.release()
    assert final == 0x0000, f"C-FIND ended with {final}"
    return found


@dataclass
class MppsPeer:
    """A pynetdicom MPPS SCP on loopback that records what it receives, in order."""

    port: int
    received: list[tuple[str, str, str]] = field(default_factory=list)  # (op, uid, status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self):  # type: ignore[no-untyped-def]
        ae = AE(ae_title="RIS")
        ae.add_supported_context(MPPS)
        handlers = [(evt.EVT_N_CREATE, self._created), (evt.EVT_N_SET, self._set)]
        return ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _created(self, event):  # type: ignore[no-untyped-def]
        ds = event.attribute_list
        with self.lock:
            self.received.append(("create", event.request.AffectedSOPInstanceUID,
                                  str(ds.PerformedProcedureStepStatus)))
        return 0x0000, ds

    def _set(self, event):  # type: ignore[no-untyped-def]
        ds = event.attribute_list
        with self.lock:
            self.received.append(("set", event.request.RequestedSOPInstanceUID,
                                  str(ds.get("PerformedProcedureStepStatus", ""))))
        return 0x0000, ds
