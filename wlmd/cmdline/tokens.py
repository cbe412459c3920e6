"""Arguments to options and parameters, as OFCommandLine sorts them.

``@file`` arguments are replaced by the words of that file first; then ``+x``/``-x`` arguments
are options (taking the next arguments as their values, whatever they look like) and the rest
are parameters, in any order. Evaluation asks for the rightmost of exclusive options.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from wlmd.cmdline.console import UsageError
from wlmd.cmdline.option import Option, by_spelling


class Occurrence(NamedTuple):
    """One option as given: its long spelling and the values that followed it."""

    long: str
    values: tuple[str, ...]

    @property
    def value(self) -> str | None:
        """The first (usually only) value, None for a flag."""
        return self.values[0] if self.values else None


@dataclass
class CommandLine:
    """The sorted command line: options in the order given, then the parameters."""

    options: list[Occurrence] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    expanded: list[str] = field(default_factory=list)  # long spellings, for --arguments

    def has(self, *longs: str) -> bool:
        """True if any of the long options was given."""
        return any(occurrence.long in longs for occurrence in self.options)

    def last(self, *longs: str) -> Occurrence | None:
        """The rightmost of mutually exclusive options (DCMTK: the rightmost one wins)."""
        found = [occurrence for occurrence in self.options if occurrence.long in longs]
        return found[-1] if found else None

    def values(self, long: str) -> list[tuple[str, ...]]:
        """Every value tuple given to a repeatable option, in order."""
        return [occurrence.values for occurrence in self.options if occurrence.long == long]


def arguments_message(prog: str, arguments: Sequence[str]) -> str:
    """The INFO line DCMTK logs for ``--arguments``: the expanded arguments, quoted."""
    quoted = "".join(f"'{arg}' " for arg in arguments)
    return f"calling '{prog}' with {len(arguments)} arguments: {quoted}\n"


def read_command_file(name: str) -> list[str]:
    """Split a command file like OFCommandLine: white space separates, quotes group.

    There are no escapes: a backslash is an ordinary character, as in DCMTK.
    """
    with open(name, encoding="utf-8", errors="surrogateescape") as stream:
        content = stream.read()
    args: list[str] = []
    value, quote = "", ""
    for char in content:
        if char in "\"'":
            if quote == char:
                args.append(value)  # a closing quote ends a value, even an empty one
                value, quote = "", ""
            elif not quote:
                quote = char
            else:
                value += char
        elif char in " \t\n\r" and not quote:
            if value:
                args.append(value)
                value = ""
        else:
            value += char
    if value:
        args.append(value)
    return args


def expand_command_files(argv: Sequence[str]) -> list[str]:
    """Replace each ``@file`` by its content; command files do not nest."""
    expanded: list[str] = []
    for arg in argv:
        if len(arg) > 1 and arg.startswith("@"):
            try:
                expanded += read_command_file(arg[1:])
            except OSError:
                raise UsageError(f"Cannot open command file '{arg[1:]}'") from None
        else:
            expanded.append(arg)
    return expanded


def looks_like_option(arg: str) -> bool:
    """``+``/``-`` then anything but a digit: ``-1`` is a parameter (OFCommandLine rule)."""
    return len(arg) >= 2 and arg[0] in "+-" and not ("0" <= arg[1] <= "9")


def tokenize(args: Sequence[str], options: Iterable[Option]) -> CommandLine:
    """Sort already expanded arguments into options (with their values) and parameters."""
    known = by_spelling(options)
    cmd = CommandLine()
    index = 0
    while index < len(args):
        arg = args[index]
        if not looks_like_option(arg):
            cmd.params.append(arg)
            cmd.expanded.append(arg)
            index += 1
            continue
        option = known.get(arg)
        if option is None:
            raise UsageError(f"Unknown option {arg}")
        values = tuple(args[index + 1 : index + 1 + option.value_count])
        if len(values) < option.value_count:
            raise UsageError(f"Missing value for option {option.long}")
        cmd.options.append(Occurrence(option.long, values))
        cmd.expanded += [option.long, *values]
        index += 1 + option.value_count
    return cmd


def parse(argv: Sequence[str], options: Iterable[Option]) -> CommandLine:
    """Expand ``@file`` arguments of ``argv`` (without the program name), then tokenize."""
    return tokenize(expand_command_files(argv), options)
