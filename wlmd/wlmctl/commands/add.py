"""``wlmctl add AE ENTRY...``: write new entries, after filling in and linting them.

Every entry is checked before any is written: one bad entry (one that wlmd would skip, or a
value a modality cannot read, or an SPS ID another entry uses) refuses the whole command.
"""

from __future__ import annotations

import argparse
import sys

from pydicom import Dataset

from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.entries import ACCESSION, first_step, text
from wlmd.wlmctl.sources import canonical, fill_in, read_entries
from wlmd.worklist import keys
from wlmd.worklist.lint import Finding, Problem, Severity, check_dataset, duplicates, read_entry
from wlmd.worklist.records import Unreadable
from wlmd.worklist.store import is_worklist_name
from wlmd.worklist.writer import safe_file_name


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "add", help="add entries (DICOM JSON, KEY=VALUE, dump text, DICOM file)",
        description="Add worklist entries to the directory of called AE title AE.")
    parser.add_argument("ae", metavar="AE", help="called AE title (its directory)")
    parser.add_argument("entries", metavar="ENTRY", nargs="+",
                        help="a file (JSON, dump text, DICOM; - for stdin) or KEY=VALUE")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite an entry of the same file name")
    parser.add_argument("--name", help="file name (one entry only; default: from the "
                        "accession number and SPS ID)")
    parser.add_argument("--new-ae", action="store_true",
                        help="create the AE directory (and its lockfile) if missing")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    datasets = read_entries(args.entries)
    if args.name is not None and len(datasets) > 1:
        raise WlmctlError("--name names one entry, but several were given")
    prepared: list[tuple[str, bytes, Dataset, list[str]]] = []
    for dataset in datasets:
        filled = fill_in(dataset)
        data, parsed = canonical(dataset)
        name = args.name or _file_name(parsed)
        if not is_worklist_name(name) or "/" in name or name.startswith("."):
            raise WlmctlError(f"not a worklist file name: {name!r} (it must end in .wl)")
        problems = check_dataset(parsed)
        errors = [p for p in problems if p.severity is Severity.ERROR]
        if errors:
            raise WlmctlError(f"{name}: refused: " + "; ".join(_line(p) for p in errors))
        for problem in problems:
            print(f"wlmctl: warning: {name}: {_line(problem)}", file=sys.stderr)
        prepared.append((name, data, parsed, filled))
    _refuse_duplicates(context, args, prepared)
    writer = context.writer(create_ae=args.new_ae)
    for name, data, _parsed, filled in prepared:
        path = writer.write(args.ae, name, data, replace=args.replace)
        note = f" (filled in: {', '.join(filled)})" if filled else ""
        print(f"added {args.ae}/{path.name}{note}")
    return 0


def _file_name(dataset: Dataset) -> str:
    """``<accession>_<SPS ID>.wl``, made safe; both are filled in or required before this."""
    return safe_file_name(text(dataset, ACCESSION), text(first_step(dataset), keys.SPS_ID))


def _refuse_duplicates(context: Context, args: argparse.Namespace,
                       prepared: list[tuple[str, bytes, Dataset, list[str]]]) -> None:
    """Refuse SPS IDs (or study UIDs of other procedures) that other entries already use."""
    names = [name for name, *_ in prepared]
    if len(set(names)) != len(names):
        raise WlmctlError("two of the entries would have the same file name")
    directory = context.root / args.ae
    existing = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if is_worklist_name(path.name) and path.name not in names:
                try:
                    existing[path] = read_entry(path)
                except Unreadable:
                    continue
    new = {directory / name: parsed for name, _data, parsed, _filled in prepared}
    clashes = [f for f in duplicates({**existing, **new}) if f.path in new]
    if clashes:
        raise WlmctlError("; ".join(_finding_line(f) for f in clashes))


def _line(problem: Problem) -> str:
    return f"{problem.attribute}: {problem.reason}"


def _finding_line(finding: Finding) -> str:
    return f"{finding.path.name}: {finding.attribute}: {finding.reason}"
