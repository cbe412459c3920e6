"""``wlmctl hl7 test MESSAGE`` and ``wlmctl hl7 replay --from N [--to M]``: HL7 order intake.

``test`` shows the entries a message would make with the configured mapping (``hl7_mapping``)
and writes nothing; ``replay`` applies journalled messages (``hl7_journal``) again through the
writer, after a mapping fix for example (see ``wlmd.hl7.cli``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wlmd.hl7.cli import replay, test_message
from wlmd.hl7.intake import Intake
from wlmd.hl7.journal import journal_directory
from wlmd.hl7.mapping import Mapping, MappingError
from wlmd.wlmctl.context import Context, WlmctlError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("hl7", help="HL7 orders: test a message, replay the journal",
                                   description="HL7 order intake tools.")
    actions = parser.add_subparsers(dest="hl7_command", required=True)
    test = actions.add_parser("test", help="show the entries a message would make")
    test.add_argument("message", type=Path, help="file holding one HL7 message")
    again = actions.add_parser("replay", help="apply journalled messages again")
    again.add_argument("--from", dest="first", type=int, required=True,
                       help="first journal sequence number")
    again.add_argument("--to", dest="last", type=int, help="last one (default: --from)")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    settings = context.settings
    try:
        mapping = Mapping.load(settings.hl7_mapping)
    except MappingError as exc:
        raise WlmctlError(str(exc)) from None
    if args.hl7_command == "test":
        try:
            raw = args.message.read_bytes()
        except OSError as exc:
            raise WlmctlError(f"{args.message}: {exc.strerror}") from None
        return test_message(Intake(context.root, mapping), raw)
    return replay(Intake(context.root, mapping, replaying=True), journal_directory(settings),
                  args.first, args.last)
