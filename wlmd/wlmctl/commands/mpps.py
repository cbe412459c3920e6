"""``wlmctl mpps start|complete|discontinue|list|queue``: the MPPS client (``wlmd.mpps.client``).

``list`` and ``queue`` read ``mpps_path`` of wlmd.conf unless ``--mpps-path`` is given.
"""

from __future__ import annotations

import argparse

from wlmd.mpps import client
from wlmd.wlmctl.context import Context, WlmctlError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mpps", help="send MPPS N-CREATE/N-SET, list stored steps and the forwarding queue",
        description="Modality Performed Procedure Step: an SCU (pynetdicom) and listings.")
    client.add_commands(parser.add_subparsers(dest="mpps_command", required=True),
                        mpps_path_required=False)
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    if args.mpps_command in ("list", "queue") and args.mpps_path is None:
        if context.settings.mpps_path is None:
            raise WlmctlError("no mpps_path in wlmd.conf; give --mpps-path")
        args.mpps_path = context.settings.mpps_path
    return client.run(args)
