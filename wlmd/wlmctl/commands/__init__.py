"""The subcommands of wlmctl, one module each.

A module here that defines ``register(subparsers)`` is a subcommand: it adds its parser and
sets ``run=`` (``run(context, args) -> exit status``) as the parser's default. Features that
bring their own subcommands (``wlmctl mpps ...``, ``wlmctl hl7 ...``) add a module; nothing
else changes.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType


def modules() -> Iterator[ModuleType]:
    """Every subcommand module, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            yield module


def register_all(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the parser of every subcommand."""
    for module in modules():
        module.register(subparsers)
