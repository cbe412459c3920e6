"""``wlmctl``: the composition root: options common to all subcommands, then the subcommand.

Exit status: 0 done, 1 refused or failed (one ``wlmctl: error: ...`` line; nothing changed)
or ``lint`` found something, 2 a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pydicom import config

import wlmd
from wlmd.wlmctl.commands import register_all
from wlmd.wlmctl.context import WlmctlError, load_context
from wlmd.worklist.writer import WriterError

PROGRAM = "wlmctl"
EXIT_OK, EXIT_FAILURE = 0, 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Manage the entries of a wlmd (wlmscpfs) worklist directory.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {wlmd.__version__}")
    parser.add_argument("-dfp", "--data-files-path", type=Path, metavar="PATH",
                        help="worklist root (default: data_files_path of the config, else .)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="wlmd's TOML settings (default: /etc/wlmd/wlmd.conf if present)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_all(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wlmctl`` console script; returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    # The store's per-file warnings and pydicom's value warnings are reported by the
    # subcommands themselves (lint), one line each.
    logging.getLogger("wlmd").addHandler(logging.NullHandler())
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    warnings.simplefilter("ignore")
    try:
        context = load_context(args.config, args.data_files_path)
        return int(args.run(context, args))
    except (WlmctlError, WriterError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:  # the file system refused (permissions, a missing root, ...)
        where = f": {error.filename}" if error.filename else ""
        print(f"{PROGRAM}: error: {error.strerror or error}{where}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_FAILURE
