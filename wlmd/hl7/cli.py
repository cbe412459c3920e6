"""``wlmctl hl7 test|replay`` (``wlmd.wlmctl.commands.hl7``), also ``python -m wlmd.hl7``.

``test FILE`` shows the entries a message would produce (mapping, routing, file names) and
writes nothing. ``replay --from N [--to M]`` applies journalled messages again through the
writer, after a mapping fix for example. As the messages may have been applied before, they
converge instead of being refused: a new order (NW) replaces the entry an older mapping made,
and a cancel of an entry already gone does nothing. Every change is keyed by order, requested
procedure and step, so nothing is created twice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wlmd.hl7.intake import Intake
from wlmd.hl7.journal import received_in
from wlmd.hl7.mapping import Mapping, MappingError
from wlmd.hl7.message import Hl7Error

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        mapping = Mapping.load(args.mapping)
    except MappingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    intake = Intake(args.data_files_path, mapping, replaying=args.command == "replay")
    if args.command == "test":
        return test_message(intake, args.message.read_bytes())
    journal = args.journal or args.data_files_path.resolve().parent / "hl7-journal"
    return replay(intake, journal, args.first, args.last)


def test_message(intake: Intake, raw: bytes) -> int:
    """Print what ``raw`` would become; nothing is written."""
    try:
        entries = intake.entries(raw)
    except Hl7Error as exc:
        print(f"{exc.ack} {exc.location or '-'} {exc.code}: {exc.reason}")
        return EXIT_REFUSED
    for entry in entries:
        print(f"# {entry.ae}/{entry.name}")
        print(entry.dataset)
    return EXIT_OK


def replay(intake: Intake, journal: Path, first: int, last: int | None) -> int:
    """Apply the journalled messages ``first``..``last`` again; one line per message."""
    records = received_in(journal, first, last if last is not None else first)
    if not records:
        print(f"no journalled message in {first}..{last or first} under {journal}",
              file=sys.stderr)
        return EXIT_REFUSED
    refused = 0
    for record in records:
        result = intake.handle(record.raw, f"replay of {record.seq}")
        detail = ", ".join(o.value for o in result.outcomes)
        if result.error is not None:
            refused += 1
            detail = f"{result.error.location or '-'} {result.error.code}: {result.error.reason}"
        print(f"{record.seq}: {result.ack_code} {detail}")
    return EXIT_REFUSED if refused else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wlmd.hl7", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-dfp", "--data-files-path", type=Path, default=Path("."),
                        help="worklist directory (default: .)")
    common.add_argument("--mapping", type=Path, help="HL7 mapping file (default: IHE mapping)")
    commands = parser.add_subparsers(dest="command", required=True)
    test = commands.add_parser("test", parents=[common], help="show the entries of a message")
    test.add_argument("message", type=Path, help="file holding one HL7 message")
    again = commands.add_parser("replay", parents=[common], help="apply journalled messages")
    again.add_argument("--journal", type=Path,
                       help="journal directory (default: beside -dfp, hl7-journal)")
    again.add_argument("--from", dest="first", type=int, required=True, help="first sequence")
    again.add_argument("--to", dest="last", type=int, help="last sequence (default: --from)")
    return parser
