"""``wlmctl explain AE QUERY...``: for every entry, "matches" or the key that excluded it.

The entries are those wlmd serves (its own store, file-reject rules as configured), matched by
wlmd's own matcher (``wlmd.worklist.explain``); files wlmd does not serve at all are listed
with the reason. QUERY is ``-k KEY`` (findscu's syntax), a query file (DICOM) or a request file
wlmd or wlmscpfs wrote with ``-rfp`` (dump text).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydicom import Dataset

from wlmd.findscu.keys import BadKeyPath, apply_key, parse_key
from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.sources import read_entries
from wlmd.worklist.explain import Explainer
from wlmd.worklist.lint import lint_file, rejection_reason
from wlmd.worklist.query import InvalidQuery, prepare_query
from wlmd.worklist.store import LockfileError, WorklistStore, is_worklist_name


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain", help="say why entries do (not) match a query",
        description="For every entry of AE: whether it matches the query, or the first key "
        "that excluded it and why.")
    parser.add_argument("ae", metavar="AE", help="called AE title")
    parser.add_argument("queries", metavar="QUERYFILE", nargs="*",
                        help="a query file (DICOM) or a -rfp request file (dump text)")
    parser.add_argument("-k", "--key", dest="keys", action="append", default=[],
                        metavar="KEY", help="a query key, as findscu -k (repeatable)")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    directory = context.ae_directory(args.ae)
    identifier = _identifier(args.queries, args.keys)
    settings = context.settings
    try:
        query = prepare_query(identifier, no_fail=settings.no_fail,
                              expand_sequences=settings.sequence_expansion)
    except InvalidQuery as error:
        raise WlmctlError(f"wlmd refuses this query (0xA900): {error.comment}") from None
    store = WorklistStore(context.root, file_reject=settings.file_reject)
    try:
        records = store.query(args.ae, None)
    except LockfileError as error:
        raise WlmctlError(str(error)) from None
    served = {record.name: record for record in records}
    explainer = Explainer(query)
    matched = 0
    for path in sorted(p for p in directory.iterdir() if is_worklist_name(p.name)):
        record = served.get(path.name)
        if record is None:
            print(f"{path.name}: not served: {_why_not_served(path, settings.file_reject)}")
            continue
        reason = explainer.first_mismatch(record.dataset)
        matched += reason is None
        print(f"{path.name}: {'matches' if reason is None else 'excluded: ' + reason}")
    print(f"{matched} of {len(served)} served entries match")
    return 0


def _identifier(files: list[str], keys: list[str]) -> Dataset:
    """The query: the file's dataset (if any) with the ``-k`` keys applied, as findscu does."""
    if len(files) > 1:
        raise WlmctlError("give at most one query file")
    identifier = read_entries(files)[0] if files else Dataset()
    for key in keys:
        try:
            apply_key(identifier, parse_key(key))
        except BadKeyPath as error:
            raise WlmctlError(f"-k {key}: {error}") from None
    return identifier


def _why_not_served(path: Path, file_reject: bool) -> str:
    findings, dataset = lint_file(path)
    if dataset is None:
        return findings[0].reason
    reason = rejection_reason(dataset) if file_reject else None
    return f"incomplete: {reason}" if reason else "not a regular, readable file"
