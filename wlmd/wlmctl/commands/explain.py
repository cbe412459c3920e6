"""``wlmctl explain AE QUERY...``: for every entry, "matches" or the key that excluded it.

The entries are those wlmd serves (its own store, file-reject rules as configured), matched by
wlmd's own matcher (``wlmd.worklist.explain``); files wlmd does not serve at all are listed
with the reason. QUERY is ``-k KEY`` (findscu's syntax), a query file (DICOM) or a request file
wlmd or wlmscpfs wrote with ``-rfp`` (dump text).

With ``[[policy]]`` tables in wlmd.conf, the policy wlmd would apply to ``--calling-ae``
(findscu's default title when not given) is applied too: its allow-list, coerced keys, text
comparison, character set fallback and answer limit, so the explanation stays wlmd's answer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydicom import Dataset

from wlmd.config.settings import Settings
from wlmd.findscu.keys import BadKeyPath, apply_key, parse_key
from wlmd.policy.apply import (
    PolicyQuery,
    apply_policy,
    convert_response,
    query_charset,
    record_charset,
)
from wlmd.policy.model import Fallback, LimitAction, PeerPolicy
from wlmd.wlmctl.context import Context, WlmctlError
from wlmd.wlmctl.sources import read_entries
from wlmd.worklist.explain import Explainer
from wlmd.worklist.lint import lint_file, rejection_reason
from wlmd.worklist.query import InvalidQuery, prepare_query
from wlmd.worklist.response import build_response
from wlmd.worklist.store import LockfileError, WorklistStore, is_worklist_name

DEFAULT_CALLING_AE = "FINDSCU"  # findscu's -aet default


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
    parser.add_argument("-aet", "--calling-ae", default=DEFAULT_CALLING_AE, metavar="AET",
                        help="the querying modality's AE title, for the per-peer policy "
                             f"(default: {DEFAULT_CALLING_AE}, as findscu)")
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
    policy = _policy(settings, args.ae, args.calling_ae)
    applied = None if policy is None else apply_policy(
        policy, query, query_charset(identifier), args.calling_ae)
    store = WorklistStore(context.root, file_reject=settings.file_reject)
    try:
        records = store.query(args.ae, None)
    except LockfileError as error:
        raise WlmctlError(str(error)) from None
    served = {record.name: record for record in records}
    explainer = Explainer(query if applied is None else applied.match)
    matched = 0
    for path in sorted(p for p in directory.iterdir() if is_worklist_name(p.name)):
        record = served.get(path.name)
        if record is None:
            print(f"{path.name}: not served: {_why_not_served(path, settings.file_reject)}")
            continue
        dataset = record.dataset
        reason = explainer.first_mismatch(dataset)
        if reason is None and applied is not None:
            reason = _policy_mismatch(applied, dataset, settings)
        matched += reason is None
        print(f"{path.name}: {'matches' if reason is None else 'excluded: ' + reason}")
    print(f"{matched} of {len(served)} served entries match")
    if policy is not None and 0 < policy.max_answers < matched:
        sent = 0 if policy.on_too_many is LimitAction.REFUSE else policy.max_answers
        print(f"policy {policy.name}: max_answers {policy.max_answers} "
              f"({policy.on_too_many.value}): {sent} of them are sent")
    return 0


def _policy(settings: Settings, called_ae: str, calling_ae: str) -> PeerPolicy | None:
    """The per-peer policy wlmd applies to ``calling_ae``; refused callers are an error."""
    policies = settings.policy
    if not policies:
        return None
    admission = policies.admit(called_ae, calling_ae)
    if not admission.allowed:
        raise WlmctlError(f"calling AE {calling_ae!r} is refused by policy "
                          f"{admission.policy!r} (A-ASSOCIATE-RJ 1/1/3)")
    policy = policies.for_peer(called_ae, calling_ae)
    print(f"policy: {'none' if policy is None else policy.name} (calling AE {calling_ae})")
    return policy


def _policy_mismatch(applied: PolicyQuery, dataset: Dataset, settings: Settings) -> str | None:
    """What the policy adds to matching: keys compared as text, entries its charset omits."""
    key = applied.text_mismatch(dataset)
    if key is not None:
        return f"{key} does not match (compared as text, policy {applied.policy.name})"
    target = applied.target
    if target is None or applied.policy.charset_fallback is not Fallback.OMIT:
        return None
    response = build_response(applied.answer, dataset, settings.return_charset)
    outcome = convert_response(response, record_charset(dataset), target, Fallback.OMIT)
    if outcome.omitted:
        return (f"values {target.value.decode()} cannot represent (charset_fallback omit, "
                f"policy {applied.policy.name})")
    return None


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
