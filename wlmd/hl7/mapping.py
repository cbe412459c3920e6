"""HL7 order fields to Modality Worklist attributes: IHE defaults, TOML overrides, routing.

The defaults follow the IHE Radiology Technical Framework mapping of ORM/OMI/OMG fields to the
MWL attributes (RAD TF-2, "HL7 order mapping to DICOM MWL"): PID for the patient, PV1 for the
visit, ORC/OBR (and IPC in OMI) for the order, the requested procedure and the scheduled step.
Each attribute lists locations tried in order, so one table serves v2.3 ORM and v2.5.1 OMI.

The mapping file (``hl7_mapping``) may replace any location list (``[fields]``), set constant
values (``[constants]``) and route entries to a called-AE directory and Scheduled Station AE by
modality or patient location (``[[route]]``, first match wins, then ``default_ae``).
"""

from __future__ import annotations

import fnmatch
import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import generate_uid

from wlmd.dicom.textset import SPECIFIC_CHARACTER_SET, TextDataset
from wlmd.hl7.charsets import Charset, by_dicom_name, by_hl7_name
from wlmd.hl7.message import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    Hl7Error,
    Location,
    OrderGroup,
    OrderMessage,
)
from wlmd.worklist.store import is_safe_ae
from wlmd.worklist.writer import safe_file_name

SPS = "ScheduledProcedureStepSequence"
SPS_START_DATE = f"{SPS}.ScheduledProcedureStepStartDate"
SPS_START_TIME = f"{SPS}.ScheduledProcedureStepStartTime"
MODALITY = f"{SPS}.Modality"
SPS_ID = f"{SPS}.ScheduledProcedureStepID"
STATION_AE = f"{SPS}.ScheduledStationAETitle"
STATION_NAME = f"{SPS}.ScheduledStationName"
SPS_STATUS = f"{SPS}.ScheduledProcedureStepStatus"
SPS_TAG = 0x00400100
REFERENCED_STUDY_SEQUENCE = 0x00081110
REFERENCED_PATIENT_SEQUENCE = 0x00081120
CODE_VALUE, CODING_SCHEME_DESIGNATOR, CODE_MEANING = 0x00080100, 0x00080102, 0x00080104

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "PatientID": ("PID-3.1",),
    "IssuerOfPatientID": ("PID-3.4",),
    "PatientName": ("PID-5",),
    "PatientBirthDate": ("PID-7",),
    "PatientSex": ("PID-8",),
    "CurrentPatientLocation": ("PV1-3.1",),
    "AdmissionID": ("PV1-19.1",),
    "ReferringPhysicianName": ("PV1-8",),
    "PlacerOrderNumberImagingServiceRequest": ("ORC-2.1", "OBR-2.1"),
    "FillerOrderNumberImagingServiceRequest": ("ORC-3.1", "OBR-3.1"),
    "RequestingPhysician": ("ORC-12", "OBR-16"),
    "AccessionNumber": ("IPC-1.1", "OBR-18.1"),
    "RequestedProcedureID": ("IPC-2.1", "OBR-19.1"),
    "StudyInstanceUID": ("IPC-3.1", "ZDS-1.1"),
    "RequestedProcedureDescription": ("OBR-44.2", "OBR-4.2"),
    "RequestedProcedureCodeSequence": ("OBR-44", "OBR-4"),
    "ReasonForTheRequestedProcedure": ("OBR-31.2", "OBR-31.1"),
    "RequestedProcedurePriority": ("TQ1-9.1", "OBR-27.6", "ORC-7.6"),
    MODALITY: ("IPC-5.1", "OBR-24.1"),
    SPS_ID: ("IPC-4.1", "OBR-20.1"),
    SPS_START_DATE: ("TQ1-7.1", "OBR-27.4", "ORC-7.4", "OBR-36.1"),
    SPS_START_TIME: ("TQ1-7.1", "OBR-27.4", "ORC-7.4", "OBR-36.1"),
    f"{SPS}.ScheduledProcedureStepDescription": ("IPC-6.2", "OBR-4.2"),
    f"{SPS}.ScheduledProtocolCodeSequence": ("IPC-6", "OBR-4"),
    STATION_NAME: ("IPC-7.1",),
    f"{SPS}.ScheduledProcedureStepLocation": ("IPC-8.1",),
    STATION_AE: ("IPC-9.1",),
}
REQUIRED = ("PatientID", "PatientName", MODALITY, SPS_START_DATE, SPS_START_TIME)
XCN = {"ReferringPhysicianName", "RequestingPhysician"}  # ID^family^given…: name from 2
PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "T": "HIGH", "C": "MEDIUM", "R": "ROUTINE"}
SEX = {"M": "M", "F": "F", "O": "O", "A": "O"}
DEFAULT_CODING_SCHEME = "L"  # HL7 "local" when CE-3 is empty


class MappingError(Exception):
    """The mapping file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Route:
    """Where entries matching ``modality`` and ``location`` (shell patterns) are written."""

    ae: str
    modality: str = "*"
    location: str = "*"
    station_ae: str = ""
    station_name: str = ""

    def matches(self, modality: str, location: str) -> bool:
        return (fnmatch.fnmatchcase(modality.upper(), self.modality.upper())
                and fnmatch.fnmatchcase(location.upper(), self.location.upper()))


@dataclass(frozen=True)
class Entry:
    """One worklist entry an order produces: where, under what name, with which key."""

    ae: str
    name: str
    elements: TextDataset  # encoded straight to the file's bytes (``encode_entry``)
    key: tuple[str, str, str]  # (order number, requested procedure ID, SPS ID)
    uid_generated: bool  # no Study Instance UID in the message: a change keeps the old one

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The entry as a pydicom ``Dataset`` (``wlmctl hl7 test`` shows it)."""
        return self.elements.to_dataset()


@dataclass(frozen=True)
class Mapping:
    """The field table, constants and routes in effect."""

    fields: dict[str, tuple[Location, ...]]
    constants: dict[str, str] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    default_ae: str = ""
    default_charset: str = "ASCII"
    character_set: str = ""  # force this (0008,0005); "" = the message's MSH-18 charset

    @classmethod
    def default(cls) -> Mapping:
        return cls({k: tuple(Location.parse(v) for v in vs) for k, vs in DEFAULT_FIELDS.items()})

    @classmethod
    def load(cls, path: Path | None) -> Mapping:
        """The defaults, overridden by the mapping file when there is one."""
        base = cls.default()
        if path is None:
            return base
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise MappingError(f"{path}: {exc}") from None
        try:
            return _from_document(base, document)
        except (ValueError, TypeError) as exc:
            raise MappingError(f"{path}: {exc}") from None

    def entries(self, message: OrderMessage) -> list[tuple[OrderGroup, Entry]]:
        """Every entry the message's order groups produce (one per IPC in OMI)."""
        produced = []
        for group in message.groups:
            for step in _steps(group):
                produced.append((group, self.entry(message, step)))
        return produced

    def entry(self, message: OrderMessage, group: OrderGroup) -> Entry:
        """Map one order group; Hl7Error names the field that is missing or unusable."""
        charset = self._target_charset(message)
        values: dict[str, str | list[str]] = {}
        sources: dict[str, Location] = {}
        for keyword, locations in self.fields.items():
            for location in locations:
                value = _read(message, group, location, keyword)
                if value:
                    values[keyword], sources[keyword] = value, location
                    break
        values.update(self.constants)
        for keyword in REQUIRED:
            if not values.get(keyword):
                where = self.fields.get(keyword, (Location("PID", 3),))[0]
                raise Hl7Error(f"required field for {keyword.split('.')[-1]} is empty",
                               location=str(where), code=REQUIRED_FIELD_MISSING)
        order_number = str(values.get("FillerOrderNumberImagingServiceRequest")
                           or values.get("PlacerOrderNumberImagingServiceRequest") or "")
        if not order_number:
            raise Hl7Error("neither a filler nor a placer order number", location="ORC-3",
                           code=REQUIRED_FIELD_MISSING)
        values.setdefault("RequestedProcedureID", values.get("AccessionNumber") or order_number)
        values.setdefault(SPS_ID, values["RequestedProcedureID"])
        values.setdefault(SPS_STATUS, "SCHEDULED")
        key = (order_number, str(values["RequestedProcedureID"]), str(values[SPS_ID]))
        uid_generated = "StudyInstanceUID" not in values
        if uid_generated:
            values["StudyInstanceUID"] = generate_uid(entropy_srcs=["wlmd-hl7", *key])
        route = self._route(str(values[MODALITY]), message.value(Location("PV1", 3, 1)))
        if route.station_ae:
            values[STATION_AE] = route.station_ae
        if route.station_name:
            values[STATION_NAME] = route.station_name
        values.setdefault(STATION_AE, route.ae)
        elements = TextDataset()
        if charset.dicom:
            elements.values[SPECIFIC_CHARACTER_SET] = ("CS", charset.dicom)
        # type 2: present, empty, as modalities expect
        elements.sequences[REFERENCED_STUDY_SEQUENCE] = []
        elements.sequences[REFERENCED_PATIENT_SEQUENCE] = []
        for keyword, value in values.items():
            _check_encodable(value, charset, keyword, sources.get(keyword))
            _assign(elements, keyword, value, sources.get(keyword))
        name = safe_file_name("hl7", *key)
        return Entry(route.ae, name, elements, key, uid_generated)

    def _target_charset(self, message: OrderMessage) -> Charset:
        if self.character_set:
            forced = by_dicom_name(self.character_set)
            assert forced is not None  # checked when the mapping was loaded
            return forced
        return message.charset

    def _route(self, modality: str, location: str) -> Route:
        for route in self.routes:
            if route.matches(modality, location):
                return route
        if self.default_ae:
            return Route(self.default_ae)
        raise Hl7Error(f"no route for modality {modality!r} at location {location!r} "
                       "(set default_ae or a [[route]] in the mapping file)",
                       location="OBR-24")


def _from_document(base: Mapping, document: dict[str, object]) -> Mapping:
    known = {"fields", "constants", "route", "default_ae", "default_charset", "character_set"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    fields = dict(base.fields)
    for keyword, spec in _table(document, "fields").items():
        _check_keyword(keyword)
        specs = [spec] if isinstance(spec, str) else spec
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise ValueError(f"fields.{keyword}: expected a location or a list of them")
        if specs:
            fields[keyword] = tuple(Location.parse(s) for s in specs)
        else:
            fields.pop(keyword, None)  # an empty list: never fill this attribute
    constants = {}
    for keyword, value in _table(document, "constants").items():
        _check_keyword(keyword)
        constants[keyword] = str(value)
    routes = []
    raw_routes = document.get("route", [])
    if not isinstance(raw_routes, list):
        raise ValueError("route: expected [[route]] tables")
    for number, raw in enumerate(raw_routes, 1):
        if not isinstance(raw, dict) or not isinstance(raw.get("ae"), str):
            raise ValueError(f"route {number}: needs ae = \"CALLED_AE\"")
        extra = set(raw) - {"ae", "modality", "location", "station_ae", "station_name"}
        if extra:
            raise ValueError(f"route {number}: unknown key(s) {', '.join(sorted(extra))}")
        route = Route(**{k: str(v) for k, v in raw.items()})
        if not is_safe_ae(route.ae):
            raise ValueError(f"route {number}: not a usable called AE title {route.ae!r}")
        routes.append(route)
    default_ae = str(document.get("default_ae", ""))
    if default_ae and not is_safe_ae(default_ae):
        raise ValueError(f"default_ae: not a usable called AE title {default_ae!r}")
    default_charset = str(document.get("default_charset", base.default_charset))
    if by_hl7_name(default_charset) is None:
        raise ValueError(f"default_charset: unknown MSH-18 value {default_charset!r}")
    character_set = str(document.get("character_set", ""))
    if character_set and by_dicom_name(character_set) is None:
        raise ValueError(f"character_set: unsupported (0008,0005) value {character_set!r}")
    return Mapping(fields, constants, tuple(routes), default_ae, default_charset, character_set)


def _table(document: dict[str, object], name: str) -> dict[str, object]:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise ValueError(f"{name}: expected a table")
    return table


def _check_keyword(path: str) -> None:
    parts = path.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != SPS):
        raise ValueError(f"{path}: only top-level attributes and {SPS}.<attribute> can be set")
    if tag_for_keyword(parts[-1]) is None:
        raise ValueError(f"{path}: {parts[-1]} is not a DICOM keyword")


def _steps(group: OrderGroup) -> list[OrderGroup]:
    """One group per IPC segment (OMI: one entry per requested procedure and step)."""
    ipcs = group.segments.get("IPC", [])
    if len(ipcs) <= 1:
        return [group]
    return [OrderGroup({**group.segments, "IPC": [ipc]}) for ipc in ipcs]


def _read(message: OrderMessage, group: OrderGroup, location: Location,
          keyword: str) -> str | list[str]:
    """The value at ``location`` converted for the attribute's VR."""
    vr = _attribute(keyword)[1]
    if location.component == 0 and (vr in ("PN", "SQ")):
        parts = message.components(location, group)
        if vr == "PN":
            return _person_name(parts[1:] if keyword in XCN else parts)
        return parts if parts and parts[0] else ""
    value = message.value(location, group).strip()
    if keyword.endswith("Priority"):
        return PRIORITY.get(value.upper(), "")
    if keyword == "PatientSex":
        return SEX.get(value.upper(), "")
    if vr in ("DA", "TM"):
        value = value.split("+")[0].split("-")[0]  # a TS may end in a time zone
    if vr == "DA":
        return value[:8]
    if vr == "TM":
        return value[8:14] if len(value) > 8 else ""
    return value


def _person_name(parts: list[str]) -> str:
    """XPN family^given^middle^suffix^prefix as DICOM PN family^given^middle^prefix^suffix."""
    family, given, middle, suffix, prefix = (parts + [""] * 5)[:5]
    return "^".join([family, given, middle, prefix, suffix]).rstrip("^")


def _check_encodable(value: str | list[str], charset: Charset, keyword: str,
                     source: Location | None) -> None:
    texts = [value] if isinstance(value, str) else value
    for text in texts:
        try:
            text.encode(charset.codec)
        except UnicodeEncodeError:
            raise Hl7Error(
                f"{keyword.split('.')[-1]} has characters that character set "
                f"{charset.dicom or 'ISO_IR 6'} cannot hold",
                location=str(source or ""), code=DATA_TYPE_ERROR) from None


@functools.cache
def _attribute(keyword: str) -> tuple[int, str]:
    """(tag, VR) of ``keyword`` or ``Sequence.keyword``, looked up once per process."""
    attribute = keyword.split(".")[-1]
    tag = tag_for_keyword(attribute)
    assert tag is not None  # every keyword was checked when the mapping was made
    return tag, dictionary_VR(attribute)


def _assign(ds: TextDataset, keyword: str, value: str | list[str],
            source: Location | None) -> None:
    target = ds.item(SPS_TAG) if keyword.startswith(f"{SPS}.") else ds
    tag, vr = _attribute(keyword)
    if vr == "SQ":
        target.sequences[tag] = [_code_item(value)] if value else []
        return
    assert isinstance(value, str)  # ``_read`` gives lists for sequences only
    if vr == "DA" and value and not (len(value) == 8 and value.isdigit()):
        raise Hl7Error(f"{keyword.split('.')[-1]} {value!r} is not a date",
                       location=str(source or ""), code=DATA_TYPE_ERROR)
    target.values[tag] = (vr, value)


def _code_item(value: str | list[str]) -> TextDataset:
    """A CE/CWE code (code^text^scheme) as a DICOM code sequence item."""
    parts = ([value] if isinstance(value, str) else value) + ["", "", ""]
    return TextDataset({CODE_VALUE: ("SH", parts[0]),
                        CODING_SCHEME_DESIGNATOR: ("SH", parts[2] or DEFAULT_CODING_SCHEME),
                        CODE_MEANING: ("LO", parts[1] or parts[0])})
