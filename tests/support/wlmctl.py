"""Running ``wlmctl`` and querying worklist servers, for the lifecycle tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

PENDING = (0xFF00, 0xFF01)


def wlmctl(root: Path, *args: str, env: dict[str, str] | None = None,
           input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m wlmd.wlmctl -dfp ROOT ARGS`` (never /etc/wlmd/wlmd.conf: ``--config``
    points at an empty file unless ARGS give one)."""
    command = [sys.executable, "-m", "wlmd.wlmctl", "-dfp", str(root)]
    if "--config" not in args:
        empty = root.parent / "empty-wlmd.conf"
        empty.touch()
        command += ["--config", str(empty)]
    return subprocess.run([*command, *args], capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})},
                          input=input.decode() if input is not None else None, text=True,
                          check=False)


def entry_keys(accession: str, *, name: str = "DOE^JOHN", patient_id: str = "P1",
               modality: str = "CT", station: str = "CT01", date: str = "20240305",
               time: str = "080000", description: str = "CHEST") -> list[str]:
    """KEY=VALUE arguments for ``wlmctl add``: a complete entry."""
    sps = "ScheduledProcedureStepSequence[0]."
    return [f"PatientName={name}", f"PatientID={patient_id}", f"AccessionNumber={accession}",
            f"RequestedProcedureDescription={description}", f"{sps}Modality={modality}",
            f"{sps}ScheduledStationAETitle={station}",
            f"{sps}ScheduledProcedureStepStartDate={date}",
            f"{sps}ScheduledProcedureStepStartTime={time}",
            f"{sps}ScheduledProcedureStepDescription={description}"]


def find(port: int, called_ae: str, keys: Sequence[tuple[str, str]] = (),
         timeout: float = 30) -> list[Dataset]:
    """The identifiers of a C-FIND (pynetdicom SCU) asking for accession, name and the SPS."""
    ae = AE(ae_title="LIFECYCLE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(ModalityWorklistInformationFind)
    query = Dataset()
    query.AccessionNumber = ""
    query.PatientName = ""
    query.PatientID = ""
    step = Dataset()
    step.Modality = ""
    step.ScheduledProcedureStepStartDate = ""
    step.ScheduledProcedureStepStatus = ""
    query.ScheduledProcedureStepSequence = [step]
    for keyword, value in keys:
        setattr(step if hasattr(step, keyword) else query, keyword, value)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established, f"no association with {called_ae} on port {port}"
    try:
        found = []
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            assert status is not None and "Status" in status, "C-FIND got no status"
            if status.Status in PENDING:
                assert identifier is not None, "a pending response without an identifier"
                found.append(identifier)
            else:
                assert status.Status == 0x0000, f"C-FIND failed: 0x{status.Status:04X}"
        return found
    finally:
        assoc.release()
