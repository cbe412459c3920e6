"""``wlmctl show FILE|ACCESSION``: an entry as dcmdump prints it, or as DICOM JSON."""

from __future__ import annotations

import argparse
import json

from pydicom.uid import ExplicitVRLittleEndian

from wlmd.dicom.dump import dump_dataset
from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.entries import resolve
from wlmd.worklist.lint import read_entry
from wlmd.worklist.records import Unreadable


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("show", help="print an entry",
                                   description="Print entries named by file or accession.")
    parser.add_argument("entry", metavar="FILE|ACCESSION")
    parser.add_argument("--ae", help="look for the accession number under this AE only")
    parser.add_argument("--json", action="store_true", help="print DICOM JSON")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    for ref in resolve(context, args.entry, args.ae):
        try:
            dataset = read_entry(ref.path)
        except Unreadable as error:
            raise WlmctlError(f"{ref}: unreadable: {error}") from None
        if args.json:
            print(json.dumps(dataset.to_json_dict(), ensure_ascii=False, indent=1))
        else:
            print(f"# {ref}")
            print("\n".join(dump_dataset(dataset, ExplicitVRLittleEndian)))
    return 0
