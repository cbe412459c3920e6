"""``wlmctl http-token NAME read|write``: make a token for wlmd's HTTP API.

Prints the token (give it to the client; it is shown once) and the line to append to the
``http_tokens`` file, which holds only its SHA-256. Nothing is written: the admin decides where
the line goes, and a reload (SIGHUP) makes wlmd read the file again.
"""

from __future__ import annotations

import argparse

from wlmd.web.auth import SCOPES, new_token
from wlmd.wlmctl.context import Context, WlmctlError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "http-token", help="make a bearer token for the HTTP API",
        description="Print a new token and the line of the http_tokens file that admits it.")
    parser.add_argument("name", help="who the token is for (one word; shown in the logs)")
    parser.add_argument("scope", choices=SCOPES, help="read: search and status; write: also "
                        "entries and MPPS")
    parser.set_defaults(run=run)


def run(context: Context, args: argparse.Namespace) -> int:
    try:
        token, line = new_token(args.name, args.scope)
    except ValueError as error:
        raise WlmctlError(str(error)) from None
    print(f"token: {token}")
    print(f"line for the http_tokens file: {line}")
    return 0
