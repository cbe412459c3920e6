"""``python -m wlmd.mpps``: an MPPS SCU for administrators and tests, and offline listings.

``start`` sends N-CREATE (IN PROGRESS) for a worklist entry (its keys given, or read from a
``.wl`` file), ``complete``/``discontinue`` send the final N-SET, ``list`` shows the stored
instances and ``queue`` the forwarding queue. Built on pynetdicom.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from wlmd.mpps.forward import ForwardQueue
from wlmd.mpps.lifecycle import link_keys
from wlmd.mpps.rules import COMPLETED, DISCONTINUED, IN_PROGRESS, STATUS_TAG, text
from wlmd.mpps.storage import MPPS_SOP_CLASS, MppsStorage

EXIT_OK, EXIT_REFUSED, EXIT_NO_ASSOCIATION = 0, 1, 2


def _now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def in_progress_attributes(entry: Dataset, station_ae: str, modality: str = "") -> Dataset:
    """The N-CREATE attribute list for a worklist entry (PS3.4 Table F.7.2-1)."""
    sps_items = entry.get("ScheduledProcedureStepSequence") or [Dataset()]
    sps = sps_items[0]
    step = Dataset()
    step.StudyInstanceUID = entry.get("StudyInstanceUID", "")
    step.ReferencedStudySequence = []
    step.AccessionNumber = entry.get("AccessionNumber", "")
    step.RequestedProcedureID = entry.get("RequestedProcedureID", "")
    step.RequestedProcedureDescription = entry.get("RequestedProcedureDescription", "")
    step.ScheduledProcedureStepID = sps.get("ScheduledProcedureStepID", "")
    step.ScheduledProcedureStepDescription = sps.get("ScheduledProcedureStepDescription", "")
    step.ScheduledProtocolCodeSequence = []
    ds = Dataset()
    if "SpecificCharacterSet" in entry:
        ds.SpecificCharacterSet = entry.SpecificCharacterSet
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName = entry.get("PatientName", "")
    ds.PatientID = entry.get("PatientID", "")
    ds.PatientBirthDate = entry.get("PatientBirthDate", "")
    ds.PatientSex = entry.get("PatientSex", "")
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = generate_uid(prefix=None)[-16:]
    ds.PerformedStationAETitle = station_ae
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = _now()
    ds.PerformedProcedureStepStatus = IN_PROGRESS
    ds.PerformedProcedureStepDescription = ""
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = modality or sps.get("Modality", "") or "OT"
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def final_modifications(status: str, series_uid: str = "", protocol: str = "") -> Dataset:
    """The N-SET modification list that ends a step (end date/time, one performed series)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = _now()
    if status == COMPLETED or series_uid:
        series = Dataset()
        series.PerformingPhysicianName = ""
        series.ProtocolName = protocol or "unspecified"
        series.OperatorsName = ""
        series.SeriesInstanceUID = series_uid or generate_uid()
        series.SeriesDescription = ""
        series.RetrieveAETitle = ""
        series.ReferencedImageSequence = []
        series.ReferencedNonImageCompositeSOPInstanceSequence = []
        ds.PerformedSeriesSequence = [series]
    return ds


def _entry_from_args(args: argparse.Namespace) -> Dataset:
    if args.worklist_file:
        return dcmread(args.worklist_file, force=True)
    entry = Dataset()
    entry.StudyInstanceUID = args.study_uid or ""
    entry.AccessionNumber = args.accession or ""
    entry.RequestedProcedureID = args.requested_procedure_id or ""
    sps = Dataset()
    sps.ScheduledProcedureStepID = args.sps_id or ""
    entry.ScheduledProcedureStepSequence = [sps]
    return entry


def _send(args: argparse.Namespace, op: str, uid: str, dataset: Dataset) -> int:
    from pynetdicom import AE

    ae = AE(ae_title=args.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
    ae.add_requested_context(MPPS_SOP_CLASS)
    assoc = ae.associate(args.host, args.port, ae_title=args.aec)
    if not assoc.is_established:
        print(f"error: no association with {args.aec}@{args.host}:{args.port}", file=sys.stderr)
        return EXIT_NO_ASSOCIATION
    try:
        if op == "create":
            status, _ = assoc.send_n_create(dataset, MPPS_SOP_CLASS, uid)
        else:
            status, _ = assoc.send_n_set(dataset, MPPS_SOP_CLASS, uid)
    finally:
        assoc.release()
    code = int(status.get("Status", 0xFFFF))
    if code != 0:
        comment = status.get("ErrorComment", "")
        print(f"error: {op} refused with status 0x{code:04X} {comment}".rstrip(),
              file=sys.stderr)
        return EXIT_REFUSED
    print(uid)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    for instance in MppsStorage(args.mpps_path).instances(args.ae):
        ds = instance.dataset
        links = ",".join(k.accession or k.study_uid for k in link_keys(ds)) or "-"
        print(f"{instance.called_ae}\t{instance.sop_instance_uid}\t{text(ds, STATUS_TAG)}\t"
              f"{text(ds, 0x00400244)}{text(ds, 0x00400245)[:6]}\t{links}")
    return EXIT_OK


def _queue(args: argparse.Namespace) -> int:
    for message in ForwardQueue(args.mpps_path).listing():
        queued = datetime.datetime.fromtimestamp(message.queued_at).isoformat(timespec="seconds")
        print(f"{message.destination_key}\t{message.op}\t{message.sop_instance_uid}\t{queued}")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser], *,
                 mpps_path_required: bool = True) -> None:
    """The subcommands (start, complete, discontinue, list, queue), for this module's own
    parser and for ``wlmctl mpps``."""

    def network(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--aet", default="MPPSSCU", help="calling AE title")
        sub.add_argument("--aec", required=True, help="called AE title (the worklist AE)")
        sub.add_argument("--timeout", type=float, default=30.0)

    start = commands.add_parser("start", help="N-CREATE an IN PROGRESS step")
    network(start)
    start.add_argument("--worklist-file", type=Path, help="take the keys from this .wl file")
    start.add_argument("--study-uid")
    start.add_argument("--accession")
    start.add_argument("--requested-procedure-id")
    start.add_argument("--sps-id")
    start.add_argument("--modality", default="")
    start.add_argument("--uid", help="SOP Instance UID (default: a new one)")
    for name, status in (("complete", COMPLETED), ("discontinue", DISCONTINUED)):
        sub = commands.add_parser(name, help=f"N-SET the step to {status}")
        network(sub)
        sub.add_argument("uid", help="SOP Instance UID of the step")
        sub.add_argument("--series-uid", default="")
        sub.add_argument("--protocol", default="")
        sub.set_defaults(status=status)
    for name, what in (("list", "stored MPPS instances"), ("queue", "the forwarding queue")):
        sub = commands.add_parser(name, help=f"show {what}")
        sub.add_argument("--mpps-path", type=Path, required=mpps_path_required,
                         help="default: mpps_path of wlmd.conf" if not mpps_path_required
                         else None)
        if name == "list":
            sub.add_argument("--ae", help="only this called AE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wlmd-mpps", description=__doc__.splitlines()[0])
    add_commands(parser.add_subparsers(dest="mpps_command", required=True))
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out parsed arguments of ``add_commands``; the exit status."""
    if args.mpps_command == "start":
        attributes = in_progress_attributes(_entry_from_args(args), args.aet, args.modality)
        return _send(args, "create", args.uid or generate_uid(), attributes)
    if args.mpps_command in ("complete", "discontinue"):
        return _send(args, "set", args.uid,
                     final_modifications(args.status, args.series_uid, args.protocol))
    return _list(args) if args.mpps_command == "list" else _queue(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
