"""The entries ``wlmctl add`` reads, and what it fills in that a user may leave out.

An ENTRY argument is a file (or ``-``: standard input) holding DICOM JSON (PS3.18 Annex F, an
object or an array of them), dump text (dump2dcm's input, dcmdump's output) or a DICOM file;
or a ``KEY=VALUE`` in findscu's ``-k`` path syntax. All ``KEY=VALUE`` arguments together make one
entry, or, given with files, are applied to every entry the files hold.
"""

from __future__ import annotations

import io
import json
import secrets
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import generate_uid

from wlmd.dicom.dump_text import DumpSyntaxError, parse_dump
from wlmd.findscu.keys import BadKeyPath, apply_key, parse_key
from wlmd.wlmctl.context import WlmctlError
from wlmd.worklist import keys
from wlmd.worklist.completeness import raw_value, sequence_of
from wlmd.worklist.lint import SPS_TYPE2, TOP_TYPE2
from wlmd.worklist.query import STRING_VRS, element_vr
from wlmd.worklist.records import Unreadable, parse_worklist_file
from wlmd.worklist.writer import encode_entry

STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
REQUESTED_PROCEDURE_ID = Tag(0x0040, 0x1001)
UTF8 = "ISO_IR 192"
MAX_INPUT_BYTES = 16 << 20


def read_entries(arguments: Iterable[str]) -> list[Dataset]:
    """The datasets the ENTRY arguments describe (WlmctlError names the bad one)."""
    datasets: list[Dataset] = []
    key_args: list[str] = []
    for argument in arguments:
        if argument == "-" or Path(argument).is_file():
            datasets += _from_bytes(argument, _read(argument))
        elif "=" in argument:
            key_args.append(argument)
        else:
            raise WlmctlError(f"{argument}: neither a file nor a KEY=VALUE")
    if key_args and not datasets:
        datasets = [Dataset()]
    for dataset in datasets:
        for argument in key_args:
            try:
                apply_key(dataset, parse_key(argument))
            except BadKeyPath as error:
                raise WlmctlError(f"{argument}: {error}") from None
    if not datasets:
        raise WlmctlError("no entry given")
    return datasets


def _read(argument: str) -> bytes:
    try:
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1) if argument == "-" else \
            Path(argument).read_bytes()
    except OSError as error:
        raise WlmctlError(f"{argument}: {error.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise WlmctlError(f"{argument}: larger than {MAX_INPUT_BYTES} bytes")
    return data


def _from_bytes(argument: str, data: bytes) -> list[Dataset]:
    """JSON, a DICOM file, or dump text, recognised by content."""
    if data[128:132] == b"DICM":
        try:
            dataset, _body = parse_worklist_file(data)
        except Unreadable as error:
            raise WlmctlError(f"{argument}: not a readable DICOM file: {error}") from None
        return [_without_meta(dataset)]
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            document = json.loads(data)
            items = document if isinstance(document, list) else [document]
            return [Dataset.from_json(item) for item in items]
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise WlmctlError(f"{argument}: not DICOM JSON: {error}") from None
    try:
        dataset = parse_dump(data)
    except DumpSyntaxError as error:
        return [_dicom_without_preamble(argument, data, error)]
    if not len(dataset):
        raise WlmctlError(f"{argument}: no attributes (not DICOM JSON, dump text or DICOM)")
    return [dataset]


def _dicom_without_preamble(argument: str, data: bytes, dump_error: Exception) -> Dataset:
    """A bare DICOM dataset (no preamble), the last format to try."""
    try:
        return _without_meta(dcmread(io.BytesIO(data), force=True))
    except (InvalidDicomError, ValueError, EOFError, OSError):
        raise WlmctlError(f"{argument}: not DICOM JSON, a DICOM file or dump text "
                          f"({dump_error})") from None


def _without_meta(dataset: Dataset) -> Dataset:
    plain = Dataset()
    for tag in dataset.keys():  # noqa: SIM118 (keys() keeps elements raw)
        if tag.group != 0x0002:
            plain.add(dataset.get_item(tag))
    return plain


def fill_in(dataset: Dataset) -> list[str]:
    """Add what the user may omit; returns the keywords filled (for the user to see)."""
    filled = []
    if keys.SPECIFIC_CHARACTER_SET not in dataset and _needs_unicode(dataset):
        dataset.SpecificCharacterSet = UTF8
        filled.append("SpecificCharacterSet")
    if not _present(dataset, STUDY_INSTANCE_UID):
        dataset.StudyInstanceUID = generate_uid()
        filled.append("StudyInstanceUID")
    if not _present(dataset, REQUESTED_PROCEDURE_ID):
        dataset.RequestedProcedureID = _new_id("R")
        filled.append("RequestedProcedureID")
    for step in sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE) or ():
        if not _present(step, keys.SPS_ID):
            step.ScheduledProcedureStepID = _new_id("S")
            filled.append("ScheduledProcedureStepID")
        filled += _empty_type2(step, SPS_TYPE2)
    filled += _empty_type2(dataset, TOP_TYPE2)
    return filled


def _present(dataset: Dataset, tag: BaseTag) -> bool:
    return bool((raw_value(dataset, tag) or b"").strip(b" \0"))


def _new_id(prefix: str) -> str:
    """A fresh SH value (16 characters), unique enough never to collide in one worklist."""
    return prefix + secrets.token_hex(7).upper() + "0"


def _empty_type2(dataset: Dataset, tags: tuple[BaseTag, ...]) -> list[str]:
    """Type-2 attributes added empty: modalities that insist on them see them."""
    added = []
    for tag in tags:
        if dataset.get_item(tag) is None:
            element = DataElement(tag, "SQ", Sequence()) if tag in (
                keys.REFERENCED_STUDY_SEQUENCE, keys.REFERENCED_PATIENT_SEQUENCE) else \
                DataElement(tag, dictionary_VR(tag), "")
            dataset.add(element)
            added.append(str(element.keyword))
    return added


def _needs_unicode(dataset: Dataset) -> bool:
    """True if any text value is beyond ASCII (so the entry must declare a character set)."""
    for tag in dataset.keys():  # noqa: SIM118 (keys() keeps elements raw)
        element = dataset.get_item(tag)
        vr = element_vr(element)
        if vr == "SQ":
            if any(_needs_unicode(item) for item in dataset[tag].value or ()):
                return True
        elif vr in STRING_VRS and _non_ascii(element):
            return True
    return False


def _non_ascii(element: DataElement | RawDataElement) -> bool:
    if isinstance(element, RawDataElement):
        return any(byte >= 0x80 for byte in element.value or b"")
    return any(ord(ch) > 0x7F for ch in _as_text(element.value))


def _as_text(value: object) -> str:
    if value is None or isinstance(value, bytes):
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "__iter__"):
        return "\\".join(str(v) for v in value)
    return str(value)


def canonical(dataset: Dataset) -> tuple[bytes, Dataset]:
    """The ``.wl`` bytes of an entry and the dataset wlmd will read back from them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = encode_entry(dataset)
            parsed, _body = parse_worklist_file(data)
        except (Unreadable, ValueError, TypeError, OverflowError) as error:
            raise WlmctlError(f"the entry cannot be encoded: {error}") from None
    lossy = [str(w.message) for w in caught if "encode" in str(w.message).lower()]
    if lossy:
        raise WlmctlError(f"the declared SpecificCharacterSet cannot encode every value "
                          f"({lossy[0]})")
    return data, parsed
