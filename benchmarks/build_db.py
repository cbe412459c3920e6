"""Benchmark worklist databases (10, 10,000, 100,000 entries) and the queries that go with them.

Parsing and encoding 100,000 datasets with pydicom would take minutes, so pydicom encodes one
template dataset whose varying values are placeholder tokens; each entry is then that template
with its own values spliced in (sequences and items use undefined length, so no enclosing length
changes). Entries are deterministic: entry ``i`` has the same values in every build.

Variety: 7 stations (CT, MR, US, CR, DX) and 14 consecutive days, so one station on one day -- the
"selective" query -- matches about 1 % (1/98) of the entries.

    python -m benchmarks.build_db 100000        # prints the database root (built once, cached)
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import re
import shutil
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, Sequence, config
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

CACHE = Path(__file__).resolve().parent / ".cache"
CALLED_AE = "WORKLIST"
FORMAT_VERSION = 1  # bump when entries change, so cached databases are rebuilt
SEED = 20240304
BASE_DATE = dt.date(2024, 3, 4)
DAYS = 14
MWL_FIND = "1.2.840.10008.5.1.4.31"

# station AE -> (modality, station name, [(code, meaning, protocol)])
STATIONS: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "CT01": ("CT", "CT_ROOM_1", [("CTHEAD", "CT HEAD WITHOUT CONTRAST", "HEAD ROUTINE"),
                                 ("CTCHEST", "CT CHEST WITH CONTRAST", "CHEST CE")]),
    "CT02": ("CT", "CT_ROOM_2", [("CTABD", "CT ABDOMEN AND PELVIS", "ABD PELVIS PORTAL"),
                                 ("CTSPINE", "CT SPINE", "SPINE BONE")]),
    "MR01": ("MR", "MR_ROOM_1", [("MRBRAIN", "MR BRAIN", "BRAIN STANDARD"),
                                 ("MRLSP", "MR LUMBAR SPINE", "LSPINE T1 T2")]),
    "MR02": ("MR", "MR_ROOM_2", [("MRKNEE", "MR KNEE", "KNEE PD FS")]),
    "US01": ("US", "US_ROOM_1", [("USABD", "US ABDOMEN COMPLETE", "ABDOMEN"),
                                 ("USTHY", "US THYROID", "NECK SMALL PARTS")]),
    "CR01": ("CR", "XRAY_1", [("CRCHEST", "XR CHEST 2 VIEWS", "CHEST PA LAT")]),
    "DX01": ("DX", "XRAY_2", [("DXHAND", "XR HAND", "HAND 3 VIEWS")]),
}
FAMILY = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "MULLER",
          "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER", "MARTIN",
          "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "ROSSI", "RUSSO", "FERRARI",
          "ESPOSITO", "BIANCHI", "NGUYEN", "TRAN", "LE", "KOWALSKI", "NOWAK", "WISNIEWSKI",
          "JOHANSSON", "ANDERSSON", "KARLSSON", "NIELSEN", "HANSEN", "JENSEN", "OBRIEN",
          "MURPHY", "KELLY", "WALSH", "AHMED", "KHAN", "ALI", "SILVA", "SANTOS", "FERREIRA",
          "PEREIRA", "YAMADA", "SATO", "SUZUKI", "TANAKA", "WANG", "LI", "ZHANG", "CHEN",
          "KIM", "PARK"]
GIVEN_F = ["MARY", "ANNA", "EMMA", "SOPHIA", "OLIVIA", "MIA", "LAURA", "JULIA", "SARA", "MARIA",
           "ELENA", "CHLOE", "INES", "LENA", "HANNA", "NORA", "ALICE", "CLARA", "EVA", "IDA"]
GIVEN_M = ["JOHN", "JAMES", "DAVID", "PETER", "PAUL", "MARK", "LUKAS", "JONAS", "LUCA", "MARCO",
           "PIOTR", "ERIK", "LARS", "OMAR", "HIRO", "WEI", "JOSE", "LUIS", "IVAN", "TOMAS"]
PHYSICIANS = ["HOUSE^GREGORY", "GREY^MEREDITH", "WATSON^JOHN^H", "KILDARE^JAMES",
              "QUINN^MICHAELA", "ROSS^DOUG", "CARTER^JOHN", "BAILEY^MIRANDA"]
SERVICES = ["INTERNAL MED", "SURGERY", "ORTHOPEDICS", "NEUROLOGY", "ONCOLOGY", "EMERGENCY"]
PRIORITIES = ["ROUTINE", "ROUTINE", "ROUTINE", "HIGH", "STAT", "LOW"]

# The "selective" query: one station on one day (about 1 % of the entries).
SELECTIVE_STATION = "CT01"
SELECTIVE_DATE = BASE_DATE + dt.timedelta(days=3)


def fixed_uid(index: int, kind: int) -> str:
    """A 44-character 2.25 UID (39 digits), so UIDs never change the meta group length."""
    digits = uuid.uuid5(uuid.NAMESPACE_OID, f"wlmd-bench:{kind}:{index}").int
    return f"2.25.{10**38 + digits % (9 * 10**38)}"


@dataclass(frozen=True)
class Entry:
    """The values that vary between entries."""

    index: int
    station: str
    date: dt.date
    values: dict[str, str]


def entry(index: int, patient_name: str | None = None) -> Entry:
    """Entry ``index``: the same values in every build (``patient_name`` overrides the name)."""
    rng = random.Random(SEED * 1_000_003 + index)
    patient = rng.randrange(max(1, index // 2 + 1))  # most patients have about two procedures
    prng = random.Random(patient)
    female = prng.random() < 0.5
    given = prng.choice(GIVEN_F if female else GIVEN_M)
    name = f"{prng.choice(FAMILY)}^{given}"
    station = rng.choice(list(STATIONS))
    modality, station_name, procedures = STATIONS[station]
    code, meaning, protocol = rng.choice(procedures)
    day = BASE_DATE + dt.timedelta(days=rng.randrange(DAYS))
    minutes = 7 * 60 + 15 * rng.randrange(48)
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=prng.randrange(365 * 90))
    physician = rng.choice(PHYSICIANS)
    values = {
        "meta_uid": fixed_uid(index, 1),
        "study_uid": fixed_uid(index, 2),
        "accession": f"A{index:09d}",
        "patient_name": patient_name or name,
        "patient_id": f"PID{patient:08d}",
        "birth_date": birth.strftime("%Y%m%d"),
        "sex": "F" if female else "M",
        "referring": rng.choice(PHYSICIANS),
        "requesting": physician,
        "service": rng.choice(SERVICES),
        "admission": f"ADM{index:08d}",
        "rp_description": meaning,
        "rp_code": code,
        "rp_meaning": meaning,
        "rp_id": f"RP{index:08d}",
        "priority": rng.choice(PRIORITIES),
        "modality": modality,
        "station": station,
        "sps_date": day.strftime("%Y%m%d"),
        "sps_time": f"{minutes // 60:02d}{minutes % 60:02d}00",
        "performing": physician,
        "sps_description": protocol,
        "protocol_code": protocol.replace(" ", "")[:16],
        "protocol_meaning": protocol,
        "sps_id": f"SPS{index:08d}",
        "station_name": station_name,
        "location": f"{modality} SUITE",
    }
    return Entry(index, station, day, values)


SLOTS = tuple(entry(0).values)
UID_SLOTS = {"meta_uid", "study_uid"}


def _token(slot: str) -> str:
    """The placeholder for ``slot`` in the template (UIDs keep their real 44-character width)."""
    n = SLOTS.index(slot)
    return f"2.25.{n:039d}" if slot in UID_SLOTS else f"@SLOT{n:02d}@"


def _code_item(value: str, meaning: str) -> Dataset:
    """A code sequence item with placeholder values."""
    item = Dataset()
    item.is_undefined_length_sequence_item = True
    item.CodeValue = value
    item.CodingSchemeDesignator = "99WLMD"
    item.CodeMeaning = meaning
    return item


def _sequence(ds: Dataset, keyword: str, items: list[Dataset]) -> None:
    """Add a sequence with undefined length, so splicing values never changes a length field."""
    setattr(ds, keyword, Sequence(items))
    ds[keyword].is_undefined_length = True
    for item in items:
        item.is_undefined_length_sequence_item = True


def template_dataset() -> Dataset:
    """A complete worklist entry (passes wlmscpfs's file-reject rules) with placeholder values."""
    t = _token
    ds = Dataset()
    ds.AccessionNumber = t("accession")
    ds.InstitutionName = "WLMD BENCHMARK HOSPITAL"
    ds.ReferringPhysicianName = t("referring")
    _sequence(ds, "ReferencedStudySequence", [])
    _sequence(ds, "ReferencedPatientSequence", [])
    ds.PatientName = t("patient_name")
    ds.PatientID = t("patient_id")
    ds.IssuerOfPatientID = "HOSP_A"
    ds.PatientBirthDate = t("birth_date")
    ds.PatientSex = t("sex")
    ds.PregnancyStatus = 4
    ds.StudyInstanceUID = t("study_uid")
    ds.RequestingPhysician = t("requesting")
    ds.RequestingService = t("service")
    ds.RequestedProcedureDescription = t("rp_description")
    _sequence(ds, "RequestedProcedureCodeSequence", [_code_item(t("rp_code"), t("rp_meaning"))])
    ds.AdmissionID = t("admission")
    sps = Dataset()
    sps.Modality = t("modality")
    sps.ScheduledStationAETitle = t("station")
    sps.ScheduledProcedureStepStartDate = t("sps_date")
    sps.ScheduledProcedureStepStartTime = t("sps_time")
    sps.ScheduledPerformingPhysicianName = t("performing")
    sps.ScheduledProcedureStepDescription = t("sps_description")
    _sequence(sps, "ScheduledProtocolCodeSequence",
              [_code_item(t("protocol_code"), t("protocol_meaning"))])
    sps.ScheduledProcedureStepID = t("sps_id")
    sps.ScheduledStationName = t("station_name")
    sps.ScheduledProcedureStepLocation = t("location")
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    _sequence(ds, "ScheduledProcedureStepSequence", [sps])
    ds.RequestedProcedureID = t("rp_id")
    ds.RequestedProcedurePriority = t("priority")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_FIND
    meta.MediaStorageSOPInstanceUID = t("meta_uid")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = fixed_uid(0, 0)
    meta.ImplementationVersionName = "WLMD_BENCH"
    ds.file_meta = meta
    return ds


class Template:
    """The encoded template split at its placeholders: chunks[i], value i, chunks[i+1], ..."""

    def __init__(self) -> None:
        buffer = io.BytesIO()
        with config.disable_value_validation():
            dcmwrite(buffer, template_dataset(), enforce_file_format=True)
        data = buffer.getvalue()
        found: list[tuple[int, str]] = []
        for slot in SLOTS:
            hits = [m.start() for m in re.finditer(re.escape(_token(slot).encode()), data)]
            if len(hits) != 1:
                raise RuntimeError(f"placeholder of {slot} occurs {len(hits)} times")
            found.append((hits[0], slot))
        found.sort()
        self.order = [slot for _, slot in found]
        self.chunks: list[bytes] = []
        cursor = 0
        for start, slot in found:
            self.chunks.append(data[cursor:start - 2])  # up to the 16-bit length of the element
            cursor = start + len(_token(slot))
        self.chunks.append(data[cursor:])

    def render(self, values: dict[str, str]) -> bytes:
        """One entry's file: the template with each value (padded to even length) spliced in."""
        parts: list[bytes] = []
        for chunk, slot in zip(self.chunks, self.order, strict=False):
            raw = values[slot].encode("ascii")
            if len(raw) % 2:
                raw += b"\0" if slot in UID_SLOTS else b" "
            parts += (chunk, struct.pack("<H", len(raw)), raw)
        parts.append(self.chunks[-1])
        return b"".join(parts)


def file_name(index: int) -> str:
    """The file of entry ``index``."""
    return f"A{index:09d}.wl"


def build(size: int, *, cache: Path = CACHE, log: bool = True) -> Path:
    """The root (-dfp) of a database of ``size`` entries under ``CALLED_AE``; built once, cached."""
    root = cache / f"db-{size}-v{FORMAT_VERSION}"
    if (root / "complete").exists():
        return root
    started = time.monotonic()
    staging = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    ae_dir = staging / CALLED_AE
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    template = Template()
    for index in range(size):
        (ae_dir / file_name(index)).write_bytes(template.render(entry(index).values))
    (staging / "complete").write_text(f"{size}\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    if log:
        print(f"built {size} entries in {time.monotonic() - started:.1f}s: {root}", file=sys.stderr)
    return root


def database_size(root: Path) -> int:
    """How many entries the database at ``root`` was built with."""
    return int((root / "complete").read_text())


def selective_index(size: int) -> int:
    """The first entry that the selective query matches (the one the change scenario rewrites)."""
    for index in range(size):
        e = entry(index)
        if e.station == SELECTIVE_STATION and e.date == SELECTIVE_DATE:
            return index
    raise ValueError(f"no entry of a {size}-entry database matches the selective query")


def rewrite_entry(root: Path, index: int, patient_name: str | None) -> Path:
    """Replace entry ``index`` (new file, then rename) with a new (or its own) patient name."""
    target = root / CALLED_AE / file_name(index)
    staging = target.with_name(f".{target.name}.new")
    staging.write_bytes(Template().render(entry(index, patient_name).values))
    os.replace(staging, target)
    return target


def _query(sps_station: str, sps_date: str) -> Dataset:
    """A typical modality query: common return keys plus station AE and date in the SPS item."""
    ds = Dataset()
    for keyword in ("AccessionNumber", "PatientName", "PatientID", "PatientBirthDate",
                    "PatientSex", "StudyInstanceUID", "RequestedProcedureDescription",
                    "RequestedProcedureID"):
        setattr(ds, keyword, "")
    sps = Dataset()
    sps.Modality = ""
    sps.ScheduledStationAETitle = sps_station
    sps.ScheduledProcedureStepStartDate = sps_date
    for keyword in ("ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
                    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
                    "ScheduledStationName"):
        setattr(sps, keyword, "")
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def selective_query() -> Dataset:
    """One station on one day: about 1 % of the entries."""
    return _query(SELECTIVE_STATION, SELECTIVE_DATE.strftime("%Y%m%d"))


def all_entries_query() -> Dataset:
    """Every entry, with the same return keys (the small scenarios' query)."""
    return _query("", "")


# One matching key alone (no station, modality or date narrows it): keyword and value.
KEY_QUERIES: dict[str, tuple[str, str]] = {
    "name": ("PatientName", "SMITH^*"),  # a prefix wildcard: about 1/60 of the entries
    "accession": ("AccessionNumber", "A000012345"),
    "rpid": ("RequestedProcedureID", "RP00012345"),
    "birthdate": ("PatientBirthDate", entry(12345).values["birth_date"]),
    "admission": ("AdmissionID", "ADM00012345"),
}


def key_query(key: str) -> Dataset:
    """The common return keys with one top-level matching key of ``KEY_QUERIES`` set."""
    ds = all_entries_query()
    keyword, value = KEY_QUERIES[key]
    setattr(ds, keyword, value)
    return ds


def main(argv: list[str] | None = None) -> int:
    """Build (or find cached) databases and print their roots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    for size in parser.parse_args(argv).sizes:
        print(build(size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
