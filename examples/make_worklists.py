#!/usr/bin/env python3
"""Generate the example worklist database and example queries shipped with wlmd.

The output is deterministic: the same seed and base date always give the same files, so the
generated tree is committed (``examples/worklists/``, ``examples/queries/``) and a test checks
that this script still reproduces it. Dates are laid around a fixed base date (Monday
2024-03-04) rather than today so that the committed files never change; ``--today`` moves the
base date to the current day for a demo (``make run``) and is not meant for committed output.

Layout written under ``--out`` (one directory per called AE title, as wlmscpfs expects)::

    CT01/ MR01/ US01/    entries for one scanner each (ScheduledStationAETitle = the AE)
    WORKLIST/            catch-all: every entry of every modality, plus CR and DX entries
    */lockfile           empty; wlmscpfs and wlmd take a shared fcntl lock on it

Names include Latin-1 text under ``ISO_IR 100`` and Greek, Cyrillic and Japanese text under
``ISO_IR 192`` (UTF-8). Every entry passes wlmscpfs's file-reject rules (docs/compat.md §3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, Sequence
from pydicom.dataelem import DataElement
from pydicom.uid import ExplicitVRLittleEndian

HERE = Path(__file__).resolve().parent
BASE_DATE = dt.date(2024, 3, 4)
SEED = 20240304
MWL_FIND = "1.2.840.10008.5.1.4.31"


LATIN1 = "ISO_IR 100"
UTF8 = "ISO_IR 192"
# (family^given, charset); None means plain ASCII with no (0008,0005) in the file.
PATIENTS: list[tuple[str, str | None]] = [
    ("DOE^JOHN", None),
    ("SMITH^MARY^ANN", None),
    ("MÜLLER^JÜRGEN", LATIN1),
    ("NUÑEZ^JOSÉ", LATIN1),
    ("BJØRNSTAD^ÅSE", LATIN1),
    ("LEFÈVRE^FRANÇOISE", LATIN1),
    ("O'BRIEN^SEÁN", LATIN1),
    ("ΠΑΠΑΔΟΠΟΥΛΟΣ^ΝΙΚΟΣ", UTF8),
    ("ИВАНОВ^ИВАН", UTF8),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", UTF8),
    ("WANG^XIAOMING=王^小明", UTF8),
    ("GARCIA^LUIS", None),
    ("NGUYEN^THI^MAI", None),
    ("KOWALSKI^PIOTR", None),
    ("SCHNEIDER^ANNA", None),
    ("ROSSI^GIULIA", None),
    ("AHMED^OMAR", None),
    ("JOHANSSON^ERIK", None),
]
PHYSICIANS = ["HOUSE^GREGORY", "GREY^MEREDITH", "WATSON^JOHN^H", "KILDARE^JAMES", "QUINN^MICHAELA"]

# modality -> (station AE titles, station names, [(procedure code, meaning, protocol)])
MODALITIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], list[tuple[str, str, str]]]] = {
    "CT": (("CT01",), ("CT_ROOM_1",), [
        ("CTHEAD", "CT HEAD WITHOUT CONTRAST", "HEAD ROUTINE"),
        ("CTCHEST", "CT CHEST WITH CONTRAST", "CHEST CE"),
        ("CTABD", "CT ABDOMEN AND PELVIS", "ABD PELVIS PORTAL"),
    ]),
    "MR": (("MR01",), ("MR_ROOM_1",), [
        ("MRBRAIN", "MR BRAIN", "BRAIN STANDARD"),
        ("MRKNEE", "MR KNEE LEFT", "KNEE PD FS"),
        ("MRLSP", "MR LUMBAR SPINE", "LSPINE T1 T2"),
    ]),
    "US": (("US01",), ("US_ROOM_1",), [
        ("USABD", "US ABDOMEN COMPLETE", "ABDOMEN"),
        ("USTHY", "US THYROID", "NECK SMALL PARTS"),
    ]),
    "CR": (("CR01", "CR02"), ("XRAY_1", "XRAY_2"), [
        ("CRCHEST", "XR CHEST 2 VIEWS", "CHEST PA LAT"),
    ]),
    "DX": (("DX01",), ("XRAY_3",), [
        ("DXHAND", "XR HAND RIGHT", "HAND 3 VIEWS"),
    ]),
}
# How many entries each modality gets; CT, MR and US also get their own AE directory.
COUNTS = {"CT": 10, "MR": 8, "US": 7, "CR": 5, "DX": 3}
OWN_DIRECTORY = ("CT", "MR", "US")
CATCH_ALL = "WORKLIST"


@dataclass(frozen=True)
class Entry:
    """One generated worklist entry and the AE directories it belongs in."""

    name: str
    dataset: Dataset
    directories: tuple[str, ...]


def uid(*parts: object) -> str:
    """A reproducible UID: 2.25 + a name-based UUID, so no organisation root is needed."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'wlmd-examples:' + repr(parts)).int}"


IMPLEMENTATION_UID = uid("implementation")


def code_item(value: str, meaning: str) -> Dataset:
    """A code sequence item with a local coding scheme."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99WLMD"
    item.CodeMeaning = meaning
    return item


def sps_item(modality: str, rng: random.Random, when: dt.datetime, step_id: str,
             protocol: str) -> Dataset:
    """The one Scheduled Procedure Step item of an entry."""
    stations, names, _ = MODALITIES[modality]
    station = rng.randrange(len(stations))
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = stations[station]
    sps.ScheduledProcedureStepStartDate = when.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = when.strftime("%H%M%S")
    sps.ScheduledPerformingPhysicianName = rng.choice(PHYSICIANS)
    sps.ScheduledProcedureStepDescription = protocol
    protocol_code = code_item(protocol.replace(" ", "")[:16], protocol)
    sps.ScheduledProtocolCodeSequence = Sequence([protocol_code])
    sps.ScheduledProcedureStepID = step_id
    sps.ScheduledStationName = names[station]
    sps.ScheduledProcedureStepLocation = f"{modality} SUITE"
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    if modality in ("CT", "MR") and rng.random() < 0.4:
        sps.RequestedContrastAgent = "IODINE" if modality == "CT" else "GADOLINIUM"
    return sps


def patient_module(ds: Dataset, index: int, rng: random.Random, base: dt.date) -> None:
    """Fill patient identification and demographics; entries share patients cyclically."""
    patient = index % len(PATIENTS)
    name, charset = PATIENTS[patient]
    # Per-patient values come from their own generator so a returning patient is the same.
    person = random.Random(patient)
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = f"PID{100000 + patient * 7919:06d}"
    ds.IssuerOfPatientID = "HOSP_A" if patient % 3 else "HOSP_B"
    birth = base - dt.timedelta(days=person.randrange(2 * 365, 90 * 365))
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = "O" if patient == 17 else "MF"[patient % 2]
    ds.PatientWeight = str(person.randrange(45, 110))
    ds.PatientSize = f"{person.randrange(150, 195) / 100:.2f}"
    if ds.PatientSex == "F":
        ds.PregnancyStatus = rng.choice([1, 2, 4])
    if person.random() < 0.25:
        ds.MedicalAlerts = "DIABETES"
        ds.Allergies = "IODINE CONTRAST"


def make_entry(seq_no: int, modality: str, rng: random.Random, base: dt.date) -> Entry:
    """Build entry number ``seq_no`` (global across modalities) for ``modality``."""
    code, meaning, protocol = rng.choice(MODALITIES[modality][2])
    day = base + dt.timedelta(days=rng.choice([-1, 0, 0, 0, 1, 2]))
    minutes = 7 * 60 + 30 + 15 * rng.randrange(0, 40)
    when = dt.datetime.combine(day, dt.time(minutes // 60, minutes % 60))
    accession = f"A{day:%y%m%d}{seq_no:04d}"
    ds = Dataset()
    patient_module(ds, seq_no, rng, base)
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = rng.choice(PHYSICIANS)
    ds.RequestingPhysician = rng.choice(PHYSICIANS)
    ds.RequestingService = rng.choice(["EMERGENCY", "ONCOLOGY", "ORTHOPAEDICS", "INTERNAL MED"])
    ds.InstitutionName = "WLMD GENERAL HOSPITAL"
    ds.AdmissionID = f"ADM{seq_no:05d}"
    ds.StudyInstanceUID = uid("study", seq_no, base.isoformat())
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPatientSequence = Sequence()
    ds.RequestedProcedureID = f"RP{seq_no:05d}"
    ds.RequestedProcedureDescription = meaning
    ds.RequestedProcedureCodeSequence = Sequence([code_item(code, meaning)])
    ds.RequestedProcedurePriority = rng.choice(["ROUTINE", "ROUTINE", "HIGH", "STAT", "LOW"])
    ds.ScheduledProcedureStepSequence = Sequence(
        [sps_item(modality, rng, when, f"SPS{seq_no:05d}", protocol)])
    own = (modality + "01",) if modality in OWN_DIRECTORY else ()
    return Entry(f"{modality.lower()}_{accession}", ds, (*own, CATCH_ALL))


def entries(base: dt.date, seed: int) -> Iterator[Entry]:
    """Every entry, in a fixed order."""
    rng = random.Random(seed)
    seq_no = 0
    for modality, count in COUNTS.items():
        for _ in range(count):
            seq_no += 1
            yield make_entry(seq_no, modality, rng, base)


def with_file_meta(ds: Dataset, instance_uid: str) -> Dataset:
    """Attach a Part 10 meta header (explicit VR little endian)."""
    ds.ensure_file_meta()
    ds.file_meta.MediaStorageSOPClassUID = MWL_FIND
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "WLMD_EXAMPLES"
    return ds


def write_worklists(out: Path, base: dt.date, seed: int) -> list[Path]:
    """Write every entry into its AE directories, plus a lockfile per directory."""
    written = []
    for entry in entries(base, seed):
        for ae in entry.directories:
            directory = out / ae
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "lockfile").touch()
            path = directory / f"{entry.name}.wl"
            ds = with_file_meta(entry.dataset, uid("file", entry.name))
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written


# --- example queries ---------------------------------------------------------------------

def query(*bases: dict[str, object], **keys: object) -> Dataset:
    """A query dataset from keyword=value pairs (later ones win); a dict value is an item."""
    ds = Dataset()
    for keyword, value in {k: v for base in (*bases, keys) for k, v in base.items()}.items():
        if isinstance(value, dict):
            setattr(ds, keyword, Sequence([query(value)]))
        else:
            setattr(ds, keyword, value)
    return ds


SPS_RETURN = dict(
    Modality="", ScheduledStationAETitle="", ScheduledProcedureStepStartDate="",
    ScheduledProcedureStepStartTime="", ScheduledPerformingPhysicianName="",
    ScheduledProcedureStepDescription="", ScheduledProcedureStepID="", ScheduledStationName="",
)
PATIENT_RETURN = dict(
    PatientName="", PatientID="", PatientBirthDate="", PatientSex="", AccessionNumber="",
    StudyInstanceUID="", RequestedProcedureID="", RequestedProcedureDescription="",
)


def example_queries(base: dt.date) -> dict[str, Dataset]:
    """The example queries: what a modality typically asks for."""
    today = base.strftime("%Y%m%d")
    week = f"{today}-{(base + dt.timedelta(days=6)):%Y%m%d}"
    sps = dict(SPS_RETURN)
    return {
        "all_entries": query(PATIENT_RETURN, ScheduledProcedureStepSequence={}),
        "todays_ct": query(PATIENT_RETURN, ScheduledProcedureStepSequence={
            **sps, "Modality": "CT", "ScheduledProcedureStepStartDate": today}),
        "station_mr01_this_week": query(PATIENT_RETURN, ScheduledProcedureStepSequence={
            **sps, "ScheduledStationAETitle": "MR01", "ScheduledProcedureStepStartDate": week}),
        "morning_slots": query(PATIENT_RETURN, ScheduledProcedureStepSequence={
            **sps, "ScheduledProcedureStepStartDate": today,
            "ScheduledProcedureStepStartTime": "0700-1200"}),
        "patient_name_wildcard": query(PATIENT_RETURN, PatientName="M*",
                                       ScheduledProcedureStepSequence=sps),
        "patient_id": query(PATIENT_RETURN, PatientID="PID107919"),
        "accession": query(PATIENT_RETURN, AccessionNumber=f"A{base:%y%m%d}*"),
        "latin1_name": query(PATIENT_RETURN, SpecificCharacterSet=LATIN1,
                             PatientName="MÜLLER*"),
        "utf8_name": query(PATIENT_RETURN, SpecificCharacterSet=UTF8, PatientName="ИВАНОВ*"),
        "stat_priority": query(PATIENT_RETURN, RequestedProcedurePriority="STAT",
                               RequestedProcedureCodeSequence={}),
    }


def dump_value(elem: DataElement) -> str:
    """The value part of a dump line: ``[text]`` for strings, bare numbers otherwise."""
    if elem.VR in ("US", "UL", "SS", "SL"):
        return str(elem.value)
    return f"[{'' if elem.value is None else elem.value}]"


def dump_lines(ds: Dataset, indent: str = "") -> Iterator[str]:
    """dcmdump-style lines (as read by dump2dcm) for ``ds``."""
    for elem in ds:
        tag = f"({elem.tag.group:04x},{elem.tag.element:04x})"
        if elem.VR == "SQ":
            yield f"{indent}{tag} SQ{' ' * 36}# {elem.keyword}"
            for item in elem.value:
                yield f"{indent}  (fffe,e000) na"
                yield from dump_lines(item, indent + "    ")
                yield f"{indent}  (fffe,e00d) na"
            yield f"{indent}(fffe,e0dd) na"
        else:
            yield f"{indent}{tag} {elem.VR} {dump_value(elem):<35}# {elem.keyword}"


def write_queries(out: Path, base: dt.date) -> list[Path]:
    """Write each example query as dump text (for dump2dcm and reading) and as DICOM."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ds in example_queries(base).items():
        charset = ds.get("SpecificCharacterSet")
        dcm = out / f"{name}.dcm"
        with_file_meta(ds, uid("query", name)).save_as(dcm, enforce_file_format=True)
        text = "\n".join(["# wlmd example query, generated by examples/make_worklists.py",
                          *dump_lines(ds)]) + "\n"
        dump = out / f"{name}.dump"
        dump.write_bytes(text.encode("utf-8" if charset == UTF8 else "latin-1"))
        written += [dcm, dump]
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: where to write and which base date to use."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "worklists",
                        help="worklist root to write (default: examples/worklists)")
    parser.add_argument("--queries", type=Path, default=HERE / "queries",
                        help="query directory to write (default: examples/queries)")
    parser.add_argument("--seed", type=int, default=SEED)
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--base-date", type=dt.date.fromisoformat, default=BASE_DATE,
                      help=f"the 'today' of the generated schedule (default: {BASE_DATE})")
    when.add_argument("--today", action="store_const", dest="base_date", const=dt.date.today(),
                      help="use today's date (for demos; not for committed output)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate the worklists and the queries."""
    args = parse_args(argv)
    files = write_worklists(args.out, args.base_date, args.seed)
    queries = write_queries(args.queries, args.base_date)
    print(f"wrote {len(files)} worklist files under {args.out} and "
          f"{len(queries)} query files under {args.queries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
