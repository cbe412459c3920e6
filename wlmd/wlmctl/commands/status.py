"""``wlmctl set-status FILE|ACCESSION STATUS``: write ScheduledProcedureStepStatus (0040,0020).

Read, change and rename happen under the AE's exclusive lock, so a concurrent writer's change
to the same entry is never lost.
"""

from __future__ import annotations

import argparse

from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.entries import resolve_one_or_all
from wlmd.worklist import keys
from wlmd.worklist.completeness import sequence_of
from wlmd.worklist.lint import STATUSES
from wlmd.worklist.writer import WorklistWriter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "set-status", help="set the scheduled procedure step status",
        description="Set ScheduledProcedureStepStatus (0040,0020) of entries.")
    parser.add_argument("entry", metavar="FILE|ACCESSION")
    parser.add_argument("status", metavar="STATUS", type=str.upper,
                        help="SCHEDULED, STARTED, COMPLETED or DISCONTINUED (or ARRIVED, READY)")
    parser.add_argument("--ae", help="look for the accession number under this AE only")
    parser.add_argument("--all", action="store_true",
                        help="an accession number may name several entries")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    if args.status not in STATUSES:
        raise WlmctlError(f"status {args.status!r} is not one of {', '.join(STATUSES)}")
    for ref in resolve_one_or_all(context, args.entry, args.ae, args.all):
        with WorklistWriter(ref.root).transaction(ref.ae) as transaction:
            dataset = transaction.read(ref.name)
            steps = sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE)
            if not steps:
                raise WlmctlError(f"{ref}: no ScheduledProcedureStepSequence item")
            for step in steps:
                step.ScheduledProcedureStepStatus = args.status
            transaction.write(ref.name, dataset, replace=True)
        print(f"{ref}: {args.status}")
    return 0
