"""The entries ``wlmctl add`` reads, and what it fills in that a user may leave out.

An ENTRY argument is a file (or ``-``: standard input) holding DICOM JSON (PS3.18 Annex F, an
object or an array of them), dump text (dump2dcm's input, dcmdump's output) or a DICOM file;
or a ``KEY=VALUE`` in findscu's ``-k`` path syntax. All ``KEY=VALUE`` arguments together make one
entry, or, given with files, are applied to every entry the files hold.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from wlmd.dicom.dump_text import DumpSyntaxError, parse_dump
from wlmd.findscu.keys import BadKeyPath, apply_key, parse_key
from wlmd.wlmctl.context import WlmctlError
from wlmd.worklist.records import Unreadable, parse_worklist_file

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
