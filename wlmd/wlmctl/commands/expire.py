"""``wlmctl expire``: remove (or archive) entries that are done with.

An entry expires when its first step's start date is more than ``--older-than`` days before
today, or when any step's status is one of ``--status``. Defaults come from the ``[expire]``
table of wlmd.conf, which is what ``wlmd-expire.timer`` runs with every day.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from pydicom import Dataset

from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.entries import sps_date
from wlmd.worklist import keys
from wlmd.worklist.completeness import raw_value, sequence_of
from wlmd.worklist.lint import STATUSES, read_entry
from wlmd.worklist.matching import parse_date
from wlmd.worklist.records import Unreadable
from wlmd.worklist.store import is_worklist_name


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "expire", help="remove or archive old and finished entries",
        description="Remove entries older than DAYS or with a final status "
        "(defaults: [expire] in wlmd.conf).")
    parser.add_argument("aes", metavar="AE", nargs="*", help="called AE titles (default: all)")
    parser.add_argument("--older-than", type=int, metavar="DAYS",
                        help="SPS start date more than DAYS days ago (0: never by age)")
    parser.add_argument("--status", metavar="LIST",
                        help="comma-separated final statuses, e.g. COMPLETED,DISCONTINUED "
                        "('' for none)")
    parser.add_argument("--archive", type=Path, metavar="DIR",
                        help="move expired entries to DIR/AE/ instead of deleting them")
    parser.add_argument("--dry-run", action="store_true", help="say what would expire; "
                        "change nothing")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    policy = context.expire
    older_than = policy.older_than if args.older_than is None else args.older_than
    statuses = policy.status if args.status is None else tuple(
        s.strip().upper() for s in args.status.split(",") if s.strip())
    archive = args.archive or policy.archive
    if older_than < 0:
        raise WlmctlError("--older-than: must not be negative")
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise WlmctlError(f"--status: {', '.join(unknown)} not one of {', '.join(STATUSES)}")
    if not older_than and not statuses:
        raise WlmctlError("nothing to expire: give --older-than or --status "
                          "(or set them in [expire] of wlmd.conf)")
    cutoff = datetime.date.today() - datetime.timedelta(days=older_than) if older_than else None
    writer = context.writer()
    count = 0
    for ae in args.aes or context.ae_titles():
        directory = context.ae_directory(ae)
        # Judge every entry without the lock (wlmscpfs waits while it is held), then take it
        # and act on the candidates only, judged again as they are then.
        candidates = [name for name in sorted(p.name for p in directory.iterdir())
                      if is_worklist_name(name) and _reason(directory / name, cutoff, statuses)]
        if not candidates:
            continue
        with writer.transaction(ae) as transaction:
            for name in candidates:
                reason = _reason(transaction.path / name, cutoff, statuses)
                if reason is None:
                    continue
                count += 1
                if args.dry_run:
                    print(f"would expire {ae}/{name} ({reason})")
                elif archive is not None:
                    target = transaction.move_out(name, archive / ae)
                    print(f"archived {ae}/{name} to {target} ({reason})")
                else:
                    transaction.remove(name)
                    print(f"expired {ae}/{name} ({reason})")
    entries = "entry" if count == 1 else "entries"
    print(f"{count} {entries} {'would expire' if args.dry_run else 'expired'}")
    return 0


def _reason(path: Path, cutoff: datetime.date | None, statuses: tuple[str, ...]) -> str | None:
    """Why the entry at ``path`` expires; None if it does not, is gone or cannot be read (a
    broken file is for lint to report, not for expire to judge)."""
    try:
        return _expired(read_entry(path), cutoff, statuses)
    except Unreadable:
        return None


def _expired(dataset: Dataset, cutoff: datetime.date | None,
             statuses: tuple[str, ...]) -> str | None:
    """Why the entry expires, or None."""
    for step in sequence_of(dataset, keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE) or ():
        status = (raw_value(step, keys.SPS_STATUS) or b"").decode("latin-1").strip(" \0")
        if status and status in statuses:
            return f"status {status}"
    if cutoff is not None:
        parsed = parse_date(sps_date(dataset).encode("latin-1"))
        if parsed is not None and datetime.date(*parsed) < cutoff:
            return f"scheduled {sps_date(dataset)}"
    return None
