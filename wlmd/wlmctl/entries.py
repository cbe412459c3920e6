"""Finding entries by file or accession number, and what ``list`` shows of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.worklist import keys
from wlmd.worklist.completeness import raw_value, sequence_of
from wlmd.worklist.lint import read_entry
from wlmd.worklist.records import Unreadable
from wlmd.worklist.store import is_worklist_name

ACCESSION = Tag(0x0008, 0x0050)
PATIENT_NAME, PATIENT_ID = Tag(0x0010, 0x0010), Tag(0x0010, 0x0020)


@dataclass(frozen=True)
class EntryRef:
    """One ``.wl`` file: its AE directory's name and its file name under a root."""

    root: Path
    ae: str
    name: str

    @property
    def path(self) -> Path:
        return self.root / self.ae / self.name

    def __str__(self) -> str:
        return f"{self.ae}/{self.name}"


def all_entries(context: Context, aes: list[str] | None = None) -> list[EntryRef]:
    """Every ``.wl`` file of the given AEs (default: all), sorted."""
    refs = []
    for ae in aes or context.ae_titles():
        directory = context.ae_directory(ae)
        refs += [EntryRef(context.root, ae, p.name) for p in sorted(directory.iterdir())
                 if is_worklist_name(p.name) and p.is_file()]
    return refs


def resolve(context: Context, spec: str, ae: str | None = None) -> list[EntryRef]:
    """The entries ``spec`` names: a file path, ``AE/NAME.wl``, or an accession number."""
    path = Path(spec)
    if is_worklist_name(path.name) and path.is_file():
        return [EntryRef(path.resolve().parent.parent, path.resolve().parent.name, path.name)]
    if is_worklist_name(path.name) and len(path.parts) == 2 and (context.root / path).is_file():
        return [EntryRef(context.root, path.parts[0], path.name)]
    found = []
    for ref in all_entries(context, [ae] if ae else None):
        try:
            dataset = read_entry(ref.path)
        except Unreadable:
            continue
        if text(dataset, ACCESSION) == spec:
            found.append(ref)
    if not found:
        raise WlmctlError(f"no entry file or accession number {spec!r}")
    return found


def resolve_one_or_all(context: Context, spec: str, ae: str | None, every: bool
                       ) -> list[EntryRef]:
    """``resolve``, refusing an accession that names several entries unless ``every``."""
    refs = resolve(context, spec, ae)
    if len(refs) > 1 and not every:
        raise WlmctlError(f"accession {spec} names {len(refs)} entries "
                          f"({', '.join(map(str, refs))}); name a file or use --all")
    return refs


def text(dataset: Dataset, tag: BaseTag) -> str:
    """A value as display text: decoded with the entry's character set, unpadded."""
    element = dataset.get(tag)
    if element is None or element.VR == "SQ":
        return ""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \0")
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \0")


def first_step(dataset: Dataset) -> Dataset:
    steps = sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    return steps[0] if steps else Dataset()


def sps_date(dataset: Dataset) -> str:
    """The first step's start date, as stored (trimmed)."""
    return (raw_value(first_step(dataset), keys.SPS_START_DATE) or b"").decode(
        "latin-1").strip(" \0")


def summary(ref: EntryRef, dataset: Dataset) -> dict[str, str]:
    """The columns of ``wlmctl list`` for one entry."""
    step = first_step(dataset)
    return {
        "ae": ref.ae,
        "file": ref.name,
        "patient_name": text(dataset, PATIENT_NAME),
        "patient_id": text(dataset, PATIENT_ID),
        "accession": text(dataset, ACCESSION),
        "date": text(step, keys.SPS_START_DATE),
        "time": text(step, keys.SPS_START_TIME),
        "modality": text(step, keys.MODALITY),
        "station": text(step, keys.SCHEDULED_STATION_AE_TITLE),
        "status": text(step, keys.SPS_STATUS),
    }
