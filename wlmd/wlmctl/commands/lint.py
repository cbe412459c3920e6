"""``wlmctl lint [AE|FILE...]``: one line per problem; exit 1 when anything is wrong.

``--fix`` repairs only what is safe to repair: stray temporary files of writers that died are
removed (under the AE's lock, by the writer). Everything else needs a person.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wlmd.wlmctl.context import Context
from wlmd.worklist.lint import Finding, Severity, lint_paths
from wlmd.worklist.writer import WorklistWriter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lint", help="check entries", description="Report entries that wlmd would skip or "
        "that modalities cannot use, duplicates and stray temporary files.")
    parser.add_argument("targets", metavar="AE|FILE", nargs="*",
                        help="AE titles, AE directories or files (default: every AE)")
    parser.add_argument("--fix", action="store_true", help="remove stray temporary files")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    paths = [_target(context, target) for target in args.targets] or [
        context.ae_directory(ae) for ae in context.ae_titles()]
    findings = lint_paths(paths)
    if args.fix:
        findings = _fix(findings)
    for finding in findings:
        suffix = " (warning)" if finding.severity is Severity.WARNING else ""
        print(f"{finding}{suffix}")
    return 1 if findings else 0


def _target(context: Context, target: str) -> Path:
    path = Path(target)
    if path.exists():
        return path
    return context.ae_directory(target)


def _fix(findings: list[Finding]) -> list[Finding]:
    """Remove the stray temporaries (every change under an AE's lock does); what remains."""
    fixable = [f for f in findings if f.fixable]
    for directory in sorted({f.path.parent for f in fixable}):
        with WorklistWriter(directory.parent).transaction(directory.name):
            pass
    for finding in fixable:
        if not finding.path.exists():
            print(f"removed {finding.path}")
    return [f for f in findings if not (f.fixable and not f.path.exists())]
