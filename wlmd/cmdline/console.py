"""What a DCMTK console application prints: identification header, ``--help``, error texts.

The layout is OFConsoleApplication's and OFCommandLine's: header, usage line, parameters, then
the option groups with their short and long spellings in columns; errors are the header and one
``error: ...`` line on standard error, exit code 1.
"""

from __future__ import annotations

import locale
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wlmd.cmdline.option import Option

EXIT_OK = 0
EXIT_USAGE = 1  # every command-line error exits 1, as in DCMTK (EXITCODE_COMMANDLINE_SYNTAX_ERROR)


class UsageError(Exception):
    """A command line DCMTK would refuse; the message is the text after ``error: ``."""


class CommandLineExit(Exception):
    """Stop before running: help, version, or an error; carries what to print and the code."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stderr or stdout)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def emit(self) -> int:
        """Write the texts to stdout/stderr and return the exit code."""
        sys.stdout.write(self.stdout)
        sys.stdout.flush()
        sys.stderr.write(self.stderr)
        sys.stderr.flush()
        return self.code


@dataclass(frozen=True)
class Program:
    """What the header and ``--help`` say about a program besides its options."""

    name: str
    description: str
    identification: str  # the first line, e.g. "$wlmd: wlmd v1.0 $"
    synopsis: str  # the parameters on the usage line, e.g. "peer port [dcmfile-in...]"
    parameters: tuple[tuple[str, str], ...]  # (name, help) of each parameter
    long_column: int  # OFCommandLine's LONGCOL of the program
    short_column: int = 4  # SHORTCOL


def render_header(program: Program, host_info: bool = False) -> str:
    """OFConsoleApplication::printHeader: identification, name and description."""
    text = f"{program.identification}\n\n{program.name}: {program.description}\n"
    if host_info:
        encoding = locale.getpreferredencoding(False) or "system default (unknown)"
        text += (
            f"\nHost type: {platform.system()}-{platform.machine()}\n"
            f"Character encoding: {encoding}\n"
            f"Build options: python{platform.python_version()}\n"
        )
    return text


def error_text(program: Program, message: str) -> str:
    """A command-line error as DCMTK prints it: the header, then ``error: message``."""
    return f"{render_header(program)}error: {message}\n"


def _option_block(option: Option, indent: int, short: int, long: int) -> str:
    """One option laid out like OFCommandLine::getOptionString."""
    text = " " * indent + option.short.ljust(short) + "  " + option.long.ljust(long) + "  "
    if option.value is not None:
        text += option.value.description + "\n" + " " * (indent + short + long + 4)
    return text + option.help.replace("\n", "\n" + " " * (indent + short + long + 4)) + "\n"


def render_options(program: Program, options: Sequence[Option]) -> str:
    """The option list of ``--help``: groups, subgroups, per-block column widths.

    Options directly under a group get a short column two wider, so that their long spellings
    line up with those of options under subgroups (DCMTK's ``SHORTCOL + 2``).
    """
    out: list[str] = []
    group = subgroup = None
    index = 0
    while index < len(options):
        option = options[index]
        if option.group != group:
            group, subgroup = option.group, None
            out.append(f"{group}\n")
        indent, short_col = 2, program.short_column + 2
        if option.subgroup:
            indent, short_col = 4, program.short_column
            if option.subgroup != subgroup:
                subgroup = option.subgroup
                out.append(f"  {subgroup}\n")
        heading = (option.group, option.subgroup)
        end = index
        while end < len(options) and (options[end].group, options[end].subgroup) == heading:
            end += 1
        block = options[index:end]
        long_col = max([program.long_column, *(len(o.long) for o in block)])
        short_col = max([short_col, *(len(o.short) for o in block)])
        out += [_option_block(o, indent, short_col, long_col) for o in block]
        index += len(block)
    return "".join(out)


def render_help(program: Program, options: Sequence[Option]) -> str:
    """``--help``: OFConsoleApplication::printUsage."""
    column = program.long_column + program.short_column + 4
    params = "".join(f"  {name.ljust(column)}  {text}\n" for name, text in program.parameters)
    return (
        render_header(program)
        + f"usage: {program.name} [options] {program.synopsis}\n\nparameters:\n{params}\n"
        + render_options(program, options)
        + "\n"
    )
