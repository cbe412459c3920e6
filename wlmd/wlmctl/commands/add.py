"""``wlmctl add AE ENTRY...``: write new entries, after filling in and linting them.

Every entry is checked before any is written: one bad entry (one that wlmd would skip, or a
value a modality cannot read, or an SPS ID another entry uses) refuses the whole command.
"""

from __future__ import annotations

import argparse
import sys

from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.sources import read_entries
from wlmd.worklist.entries import EntryRefused, prepare_entry, refuse_duplicates


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
    try:
        prepared = [prepare_entry(dataset, args.name) for dataset in datasets]
        refuse_duplicates(context.root / args.ae, prepared)
    except EntryRefused as refusal:
        prefix = f"{refusal.name}: refused: " if refusal.name else ""
        raise WlmctlError(prefix + "; ".join(refusal.problems)) from None
    for entry in prepared:
        for problem in entry.warnings:
            print(f"wlmctl: warning: {entry.name}: {problem.attribute}: {problem.reason}",
                  file=sys.stderr)
    writer = context.writer(create_ae=args.new_ae)
    for entry in prepared:
        path = writer.write(args.ae, entry.name, entry.data, replace=args.replace)
        note = f" (filled in: {', '.join(entry.filled)})" if entry.filled else ""
        print(f"added {args.ae}/{path.name}{note}")
    return 0
