"""``wlmctl list [AE...]``: one line per entry (or ``--json``), optionally for some dates."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys

from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.entries import all_entries, summary
from wlmd.worklist.lint import read_entry
from wlmd.worklist.records import Unreadable

COLUMNS = (("ae", "AE"), ("file", "FILE"), ("patient_name", "PATIENT"), ("patient_id", "ID"),
           ("accession", "ACCESSION"), ("date", "DATE"), ("time", "TIME"),
           ("modality", "MOD"), ("station", "STATION"), ("status", "STATUS"))
_DATE = re.compile(r"\d{8}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("list", help="list entries",
                                   description="List the entries of some or all AE titles.")
    parser.add_argument("aes", metavar="AE", nargs="*", help="called AE titles (default: all)")
    parser.add_argument("--date", metavar="WHEN",
                        help="SPS start date: today, YYYYMMDD or a range YYYYMMDD-YYYYMMDD "
                        "(either end may be left out)")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(run=run)


def date_range(when: str, today: datetime.date | None = None) -> tuple[str, str]:
    """``today``, ``YYYYMMDD`` or ``[YYYYMMDD]-[YYYYMMDD]`` as inclusive bounds ("" = open)."""
    if when == "today":
        day = (today or datetime.date.today()).strftime("%Y%m%d")
        return day, day
    first, dash, last = when.partition("-")
    if not dash:
        last = first
    for part in (first, last):
        if part and not _DATE.fullmatch(part):
            raise WlmctlError(f"--date {when}: expected today, YYYYMMDD or YYYYMMDD-YYYYMMDD")
    if not (first or last):
        raise WlmctlError(f"--date {when}: expected today, YYYYMMDD or YYYYMMDD-YYYYMMDD")
    return first, last


def run(context: Context, args: argparse.Namespace) -> int:
    bounds = date_range(args.date) if args.date else None
    rows = []
    for ref in all_entries(context, args.aes or None):
        try:
            row = summary(ref, read_entry(ref.path))
        except Unreadable as error:
            print(f"wlmctl: warning: {ref}: unreadable: {error}", file=sys.stderr)
            continue
        if bounds is None or _within(row["date"], bounds):
            rows.append(row)
    rows.sort(key=lambda row: (row["ae"], row["date"], row["time"], row["file"]))  # as served
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        _print_table(rows)
    return 0


def _within(date: str, bounds: tuple[str, str]) -> bool:
    first, last = bounds
    return bool(date) and (not first or date >= first) and (not last or date <= last)


def _print_table(rows: list[dict[str, str]]) -> None:
    widths = {key: max([len(title)] + [len(row[key]) for row in rows]) for key, title in COLUMNS}
    print("  ".join(title.ljust(widths[key]) for key, title in COLUMNS).rstrip())
    for row in rows:
        print("  ".join(row[key].ljust(widths[key]) for key, _ in COLUMNS).rstrip())
