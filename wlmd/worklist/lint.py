"""What makes a worklist entry unusable: everything ``wlmctl lint`` reports and ``add`` refuses.

A modality shows nothing (or garbage) for an entry that wlmd's file-reject rules skip
(``completeness``, reported with the rule DCMTK logs), whose type-1 attributes are empty, whose
values do not fit their VR (dates, times, lengths, repertoires), whose text the declared
SpecificCharacterSet cannot carry, or that shares its SPS ID (or, across requested procedures,
its StudyInstanceUID) with another entry. Missing type-2 attributes are warnings: wlmd serves
the entry, some modalities do not. Stray temporaries of dead writers are the one finding that
``--fix`` may repair.
"""

from __future__ import annotations

import copy
import enum
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, config
from pydicom.charset import python_encoding
from pydicom.datadict import keyword_for_tag
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import validate_value

from wlmd.worklist import completeness, keys
from wlmd.worklist.completeness import is_complete, raw_value, sequence_of
from wlmd.worklist.matching import parse_date, parse_time
from wlmd.worklist.query import CHARSET_VRS, STRING_VRS, element_vr
from wlmd.worklist.records import Unreadable, parse_worklist_file
from wlmd.worklist.store import DEFAULT_MAX_FILE_BYTES, is_worklist_name
from wlmd.worklist.writer import stray_temporaries

TOP_TYPE1 = (Tag(0x0010, 0x0010), Tag(0x0010, 0x0020), Tag(0x0020, 0x000D), Tag(0x0040, 0x1001))
SPS_TYPE1 = (keys.SCHEDULED_STATION_AE_TITLE, keys.SPS_START_DATE, keys.SPS_START_TIME,
             keys.MODALITY, keys.SPS_ID)
TOP_TYPE2 = (Tag(0x0008, 0x0050), Tag(0x0008, 0x0090), Tag(0x0010, 0x0030), Tag(0x0010, 0x0040),
             Tag(0x0040, 0x1003), keys.REFERENCED_STUDY_SEQUENCE, keys.REFERENCED_PATIENT_SEQUENCE)
SPS_TYPE2 = (keys.SCHEDULED_PERFORMING_PHYSICIAN_NAME, keys.SCHEDULED_STATION_NAME,
             keys.SPS_LOCATION)
STATUSES = ("SCHEDULED", "ARRIVED", "READY", "STARTED", "COMPLETED", "DISCONTINUED")
_ASCII = "ascii"


class Severity(enum.Enum):
    """An error stops a modality from using the entry; a warning may."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One thing wrong: where, which attribute (a ``-k`` style path, or ``-``), and why."""

    path: Path
    attribute: str
    reason: str
    severity: Severity = Severity.ERROR
    fixable: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.attribute}: {self.reason}"


@dataclass(frozen=True)
class Problem:
    """A finding about a dataset not yet tied to a file."""

    attribute: str
    reason: str
    severity: Severity = Severity.ERROR


def read_entry(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Dataset:
    """The dataset of a worklist file, parsed as wlmd parses it; Unreadable says why not."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise Unreadable(f"file too large ({size} bytes, limit {max_bytes})")
        data = path.read_bytes()
    except OSError as error:
        raise Unreadable(error.strerror or str(error)) from None
    dataset, _body = parse_worklist_file(data)
    if not any(tag.group > 0x0002 for tag in dataset.keys()):  # noqa: SIM118
        raise Unreadable("the file holds no attributes")
    return dataset


def check_dataset(dataset: Dataset) -> list[Problem]:
    """Every problem of one entry on its own (no other files considered)."""
    problems = []
    rejected = rejection_reason(dataset)
    if rejected is not None:
        problems.append(Problem("-", f"wlmd and wlmscpfs skip this file (file reject rule): "
                                     f"{rejected}"))
    problems += _required(dataset)
    problems += _values(dataset, "", _charset(dataset))
    return problems


def rejection_reason(dataset: Dataset) -> str | None:
    """The rule by which ``--enable-file-reject`` skips the entry (DCMTK's words), or None."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = completeness.LOGGER
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        complete = is_complete(copy.deepcopy(dataset))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if complete:
        return None
    reasons = [line.lstrip("- ") for line in lines if line.startswith("- ")]
    return reasons[-1] if reasons else "incomplete"


def _required(dataset: Dataset) -> Iterator[Problem]:
    """Type-1 attributes empty (error), type-2 attributes missing (warning)."""
    steps = sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    levels: list[tuple[str, Dataset, tuple[BaseTag, ...], tuple[BaseTag, ...]]] = [
        ("", dataset, TOP_TYPE1, TOP_TYPE2)]
    if steps is None or len(steps) == 0:
        yield Problem(_name(keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE), "type 1: missing or empty")
    else:
        if len(steps) > 1:
            yield Problem(_name(keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE),
                          f"{len(steps)} items; wlmd and wlmscpfs serve only one per file")
        levels += [(f"{_name(keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE)}[{n}].", step, SPS_TYPE1,
                    SPS_TYPE2) for n, step in enumerate(steps)]
    for prefix, level, type1, type2 in levels:
        for tag in type1:
            value = raw_value(level, tag)
            if not (value or b"").strip(b" \0"):
                yield Problem(prefix + _name(tag), "type 1: missing or empty")
        for tag in type2:
            if level.get_item(tag) is None:
                yield Problem(prefix + _name(tag), "type 2: missing (some modalities need it, "
                              "even empty)", Severity.WARNING)
    for n, step in enumerate(steps or ()):
        status = (raw_value(step, keys.SPS_STATUS) or b"").strip(b" ").decode("latin-1")
        if status and status not in STATUSES:
            yield Problem(f"{_name(keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE)}[{n}]."
                          f"{_name(keys.SPS_STATUS)}",
                          f"{status!r} is not one of {', '.join(STATUSES)}")


def _charset(dataset: Dataset) -> str | None:
    """The Python codec of the declared character set; None for ISO 2022 code extensions."""
    raw = (raw_value(dataset, keys.SPECIFIC_CHARACTER_SET) or b"").decode("latin-1")
    terms = [term.strip() for term in raw.split("\\")]
    if len(terms) > 1:
        return None  # code extensions: pydicom decodes them; not judged byte by byte here
    term = terms[0] if terms else ""
    return python_encoding.get(term, _ASCII) if term else _ASCII


def _values(dataset: Dataset, prefix: str, codec: str | None) -> Iterator[Problem]:
    """Values that do not fit their VR or the character set, at every level."""
    for tag in sorted(dataset.keys()):
        element = dataset.get_item(tag)
        vr = element_vr(element)
        name = prefix + _name(tag)
        if vr == "SQ":
            for n, item in enumerate(sequence_of(dataset, tag) or Sequence()):
                yield from _values(item, f"{name}[{n}].", codec)
            continue
        if vr not in STRING_VRS or tag == keys.SPECIFIC_CHARACTER_SET:
            continue
        raw = raw_value(dataset, tag) or b""
        problem = _bad_bytes(raw, vr, codec)
        if problem is None:
            problem = _bad_value(raw, vr, codec or "latin-1")
        if problem is not None:
            yield Problem(name, problem)


def _bad_bytes(raw: bytes, vr: str, codec: str | None) -> str | None:
    """Text the declared character set cannot carry (or non-ASCII in a default-only VR)."""
    if vr not in CHARSET_VRS:
        if any(byte >= 0x80 for byte in raw):
            return f"non-ASCII bytes in a {vr} value (only the default repertoire is allowed)"
        return None
    if codec is None:
        return None
    try:
        raw.decode(codec)
    except UnicodeDecodeError:
        if codec == _ASCII:
            return ("non-ASCII characters but no SpecificCharacterSet (0008,0005) "
                    "(ISO_IR 192 for UTF-8)")
        return f"bytes not valid in the declared SpecificCharacterSet ({codec})"
    return None


def _bad_value(raw: bytes, vr: str, codec: str) -> str | None:
    """A value that breaks its VR: dates and times as wlmd parses them, the rest as pydicom."""
    text = raw.decode(codec, "replace").rstrip(" \0")
    values = text.split("\\") if vr not in ("LT", "ST", "UT", "UR") else [text]
    for value in values:
        if not value:
            continue
        if vr == "DA" and parse_date(value.encode("latin-1", "replace")) is None:
            return f"{value!r} is not a date (YYYYMMDD)"
        if vr == "TM" and parse_time(value.strip().encode("latin-1", "replace")) is None:
            return f"{value!r} is not a time (HHMMSS.FFFFFF)"
        if vr in ("DA", "TM"):
            continue
        try:
            validate_value(vr, value, config.RAISE)
        except (ValueError, KeyError) as error:
            return str(error).rstrip(".")
    return None


def lint_paths(paths: Iterable[Path], *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
               ) -> list[Finding]:
    """Findings for AE directories and single files; duplicates are judged per directory."""
    findings: list[Finding] = []
    for path in paths:
        if path.is_dir():
            findings += lint_directory(path, max_bytes=max_bytes)
        else:
            findings += lint_file(path, max_bytes=max_bytes)[0]
    return findings


def lint_file(path: Path, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
              ) -> tuple[list[Finding], Dataset | None]:
    """Findings for one file, and its dataset if it could be read."""
    try:
        dataset = read_entry(path, max_bytes)
    except Unreadable as error:
        return [Finding(path, "-", f"unreadable, wlmd skips it: {error}")], None
    return [Finding(path, p.attribute, p.reason, p.severity)
            for p in check_dataset(dataset)], dataset


def lint_directory(directory: Path, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
                   ) -> list[Finding]:
    """Findings for every entry of one AE directory, duplicates and stray temporaries."""
    findings: list[Finding] = []
    datasets: dict[Path, Dataset] = {}
    for path in sorted(p for p in directory.iterdir() if is_worklist_name(p.name)):
        file_findings, dataset = lint_file(path, max_bytes=max_bytes)
        findings += file_findings
        if dataset is not None:
            datasets[path] = dataset
    findings += duplicates(datasets)
    findings += [Finding(path, "-", "stray temporary file of a writer that died (--fix removes "
                         "it)", fixable=True) for path in stray_temporaries(directory)]
    if not (directory / "lockfile").is_file():
        findings.append(Finding(directory, "lockfile", "missing: wlmd and wlmscpfs refuse "
                                "queries to this AE"))
    return findings


def duplicates(datasets: dict[Path, Dataset]) -> list[Finding]:
    """SPS IDs used twice, and StudyInstanceUIDs shared by different requested procedures."""
    by_sps: dict[str, list[Path]] = defaultdict(list)
    by_study: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path, dataset in datasets.items():
        for step in sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE) or ():
            sps_id = _text(step, keys.SPS_ID)
            if sps_id:
                by_sps[sps_id].append(path)
        study = _text(dataset, Tag(0x0020, 0x000D))
        if study:
            by_study[study][_text(dataset, Tag(0x0040, 0x1001))].append(path)
    findings = []
    for sps_id, paths in by_sps.items():
        for path in paths[1:] if len(paths) > 1 else ():
            findings.append(Finding(path, f"{_name(keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE)}[0]."
                                    f"{_name(keys.SPS_ID)}", f"{sps_id} is also used by "
                                    f"{paths[0].name}"))
    for study, procedures in by_study.items():
        if len(procedures) > 1:
            first, *others = sorted(procedures.items())
            for _procedure, paths in others:
                findings += [Finding(path, "StudyInstanceUID", f"{study} is also the study of "
                                     f"another requested procedure ({first[1][0].name})")
                             for path in paths]
    return findings


def _text(dataset: Dataset, tag: BaseTag) -> str:
    return (raw_value(dataset, tag) or b"").decode("latin-1").strip(" \0")


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04x},{tag.element:04x})"
