"""``wlmctl rm FILE|ACCESSION...``: remove entries under the AE's lock."""

from __future__ import annotations

import argparse

from wlmd.wlmctl.context import Context
from wlmd.wlmctl.entries import resolve_one_or_all
from wlmd.worklist.writer import WorklistWriter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("rm", help="remove entries",
                                   description="Remove entries named by file or accession.")
    parser.add_argument("entries", metavar="FILE|ACCESSION", nargs="+")
    parser.add_argument("--ae", help="look for accession numbers under this AE only")
    parser.add_argument("--all", action="store_true",
                        help="an accession number may name several entries")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    refs = [ref for spec in args.entries
            for ref in resolve_one_or_all(context, spec, args.ae, args.all)]
    for ref in refs:
        WorklistWriter(ref.root).remove(ref.ae, ref.name)
        print(f"removed {ref}")
    return 0
