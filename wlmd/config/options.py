"""The command line of wlmscpfs(1), parsed the way DCMTK's OFCommandLine parses it.

Same spellings, ``@file`` command files, rightmost-wins for mutually exclusive options, the same
evaluation order and therefore the same first error, the same messages and exit codes. Values
are layered: Settings defaults < the TOML config file < the command line.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import locale
import logging
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wlmd import __version__
from wlmd.config.settings import Settings
from wlmd.config.table import (
    BY_SPELLING,
    DEFAULT_CONFIG_FILE,
    GENERAL,
    MULTI,
    OPTIONS,
    ConfigError,
    Option,
    ValueStatus,
    load_config,
    options_for,
    scan_unsigned,
)

PROGRAM = "wlmd"
DESCRIPTION = "DICOM Basic Worklist Management SCP (based on data files)"
IDENTIFICATION = f"$wlmd: {PROGRAM} v{__version__} $"
EXIT_OK = 0
EXIT_USAGE = 1  # every command-line error exits 1, as in DCMTK (EXITCODE_COMMANDLINE_SYNTAX_ERROR)
CHECK_CONFIG_PORT = 104  # --check-config needs no port; the settings still need one
LIBRARIES = ("pydicom", "pynetdicom", "psutil", "netaddr", "python-daemon")

# OFCommandLine layout: option columns per group, parameter column.
LONGCOL, SHORTCOL = 21, 4
_GROUP_COLUMNS = {GENERAL: (LONGCOL, SHORTCOL + 2), MULTI: (LONGCOL, SHORTCOL + 2)}
PARAMETERS = (("port", "tcp/ip port number to listen on"),)


class CommandLineExit(Exception):
    """Stop before serving: help, version, or an error; carries what to print and the code."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stderr or stdout)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def emit(self) -> int:
        """Write the texts to stdout/stderr and return the exit code, for ``cli.main``."""
        sys.stdout.write(self.stdout)
        sys.stdout.flush()
        sys.stderr.write(self.stderr)
        sys.stderr.flush()
        return self.code


@dataclass(frozen=True)
class ParsedCommandLine:
    """What the command line (and config file) asked for."""

    settings: Settings
    log_level: int  # a Python logging level (TRACE=5 below DEBUG; OFF=60 above CRITICAL)
    log_config: Path | None = None  # -lc: a logging config file replaces level and handlers
    check_config: bool = False  # --check-config: validate, report, exit
    arguments: tuple[str, ...] | None = None  # --arguments: the expanded argument list

    def arguments_message(self, prog: str = PROGRAM) -> str | None:
        """The INFO line DCMTK logs for ``--arguments`` (always logged, whatever the level)."""
        if self.arguments is None:
            return None
        quoted = "".join(f"'{arg}' " for arg in self.arguments)
        return f"calling '{prog}' with {len(self.arguments)} arguments: {quoted}\n"


@dataclass(frozen=True)
class Occurrence:
    """One option as it appeared, at its position in the expanded argument list."""

    position: int
    option: Option
    value: str | None


@dataclass
class _Tokens:
    occurrences: list[Occurrence]
    parameters: list[str]
    expanded: list[str]  # options in long form, as ``--arguments`` prints them

    def rightmost(self, options: Sequence[Option]) -> Occurrence | None:
        """The last occurrence of any of ``options``: DCMTK's rightmost-wins rule."""
        found = [o for o in self.occurrences if o.option in options]
        return found[-1] if found else None


# --- step 1: @file command files ---


def read_command_file(name: str) -> list[str]:
    """Split a command file like OFCommandLine: white space separates, quotes group."""
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
                raise _error(f"Cannot open command file '{arg[1:]}'") from None
        else:
            expanded.append(arg)
    return expanded


# --- step 2: options and parameters ---


def looks_like_option(arg: str) -> bool:
    """``+``/``-`` then anything but a digit: ``-1`` is a parameter (OFCommandLine rule)."""
    return len(arg) >= 2 and arg[0] in "+-" and not ("0" <= arg[1] <= "9")


def tokenize(args: Sequence[str]) -> _Tokens:
    """Sort arguments into options (with their values) and parameters."""
    tokens = _Tokens([], [], [])
    index = 0
    while index < len(args):
        arg = args[index]
        if not looks_like_option(arg):
            tokens.parameters.append(arg)
            tokens.expanded.append(arg)
            index += 1
            continue
        option = BY_SPELLING.get(arg)
        if option is None:
            raise _error(f"Unknown option {arg}")
        value = None
        if option.takes_value:
            if index + 1 >= len(args):
                raise _error(f"Missing value for option {option.long}")
            value = args[index + 1]
        tokens.occurrences.append(Occurrence(len(tokens.expanded), option, value))
        tokens.expanded += [option.long] if value is None else [option.long, value]
        index += 2 if option.takes_value else 1
    return tokens


# --- step 3: evaluation, in DCMTK's order ---


class _Evaluator:
    """Turns tokens into settings; knows whether errors are still printed (not after -q)."""

    def __init__(self, tokens: _Tokens, values: dict[str, object]) -> None:
        self.tokens = tokens
        self.values = values  # config file values, overwritten by the command line
        self.quiet = False

    def fail(self, message: str) -> CommandLineExit:
        return _error(message, quiet=self.quiet)

    def value_error(self, occurrence: Occurrence, status: ValueStatus) -> CommandLineExit:
        detail = occurrence.value if status is ValueStatus.INVALID else (
            f"{status.value}: {occurrence.value}")
        return self.fail(f"Invalid value for option {occurrence.option.long} ({detail})")

    def parse_value(self, occurrence: Occurrence) -> object:
        """Parse and range-check an option's value (empty strings pass, as in DCMTK)."""
        spec = occurrence.option.value
        assert spec is not None and occurrence.value is not None
        parsed = spec.parse(occurrence.value)
        if parsed is None:
            raise self.value_error(occurrence, ValueStatus.INVALID)
        status = spec.check(parsed)
        if status is not None:
            raise self.value_error(occurrence, status)
        return parsed

    def logging(self) -> tuple[int, Path | None]:
        """-q/-v/-d (rightmost wins), -ll and -lc with DCMTK's conflicts."""
        verbosity = self.tokens.rightmost(options_for("verbosity"))
        level = verbosity.option.const if verbosity else None
        log_level = self.tokens.rightmost(options_for("log_level"))
        if log_level is not None:
            if level is not None:
                raise self.fail("--log-level not allowed with --verbose, --debug or --quiet")
            level = log_level.option.value.parse(log_level.value or "")  # type: ignore[union-attr]
            if level is None:
                raise self.fail("Invalid log level for --log-level option")
        log_config = self.tokens.rightmost(options_for("log_config"))
        config_path = None
        if log_config is not None:
            if log_level is not None:
                raise self.fail("--log-config not allowed with --log-level")
            if level is not None:
                raise self.fail("--log-config not allowed with --verbose, --debug or --quiet")
            config_path = Path(log_config.value or "")
            if not config_path.is_file():
                raise self.fail("Specified --log-config file does not exist")
            if not os.access(config_path, os.R_OK):
                raise self.fail("Specified --log-config file cannot be read")
        level = logging.WARNING if level is None else level
        assert isinstance(level, int)
        self.quiet = config_path is None and level > logging.ERROR
        return level, config_path

    def field(self, field: str) -> None:
        """Set ``field`` from the rightmost of its options, if any appears."""
        occurrence = self.tokens.rightmost(options_for(field))
        if occurrence is None:
            return
        option = occurrence.option
        if option.requires is not None:
            base, satisfied = option.requires
            if not satisfied(self.values):
                raise self.fail(f"{option.long} only allowed with {base}")
        if option.value is None:
            self.values[field] = option.const
        else:
            self.values[field] = self.parse_value(occurrence)
        if field == "request_file_path" and str(occurrence.value) == "":
            self.values[field] = None  # DCMTK: an empty -rfp means no request files

    def cross_checks(self) -> None:
        """wlmd's own consistency rules between settings."""
        low, high = self.values.get("min_spare_workers"), self.values.get("max_spare_workers")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            raise self.fail(f"--min-spare-workers ({low}) exceeds --max-spare-workers ({high})")
        for first, second in (("tls_key", "tls_cert"), ("tls_cert", "tls_key"),
                              ("tls_ca_file", "tls_key"), ("tls_require_peer_cert", "tls_ca_file")):
            if self.values.get(first) and not self.values.get(second):
                raise self.fail(f"--{first.replace('_', '-')} only allowed with "
                                f"--{second.replace('_', '-')}")


def _settings_defaults() -> dict[str, object]:
    """Settings defaults for fields that have one (the port has none)."""
    return {
        f.name: f.default for f in dataclasses.fields(Settings)
        if f.default is not dataclasses.MISSING
    }


def _port(tokens: _Tokens, values: dict[str, object], check_only: bool) -> int:
    """The ``port`` parameter: %lu, 1..65535; else the config file's port."""
    if not tokens.parameters:
        if "port" in values:
            return int(values["port"])  # type: ignore[call-overload]
        if check_only:
            return CHECK_CONFIG_PORT
        raise _error("Missing parameter port")
    text = tokens.parameters[0]
    port = scan_unsigned(text)
    if port is None:
        raise _error(f"Invalid parameter value {text}")
    if port < 1:
        raise _error(f"Invalid parameter value {text} (underflow)")
    if port > 65535:
        raise _error(f"Invalid parameter value {text} (overflow)")
    return port


def _config_values(tokens: _Tokens, default_config: Path) -> tuple[Path | None, dict[str, object]]:
    """Load ``--config FILE`` (rightmost), else ``default_config`` when it exists."""
    occurrence = tokens.rightmost(options_for("config_file"))
    path = Path(occurrence.value) if occurrence and occurrence.value else None
    if path is None and default_config.exists():
        path = default_config
    if path is None:
        return None, {}
    try:
        values = load_config(path)
    except ConfigError as exc:
        raise _error(str(exc)) from None
    if "port" in values and not 1 <= int(values["port"]) <= 65535:  # type: ignore[call-overload]
        raise _error(f"{path}: port: {values['port']} is not in 1..65535")
    return path, values


def parse_command_line(
    argv: Sequence[str], *, default_config: Path = DEFAULT_CONFIG_FILE
) -> ParsedCommandLine:
    """Parse ``argv`` (without the program name); CommandLineExit for help, version, errors."""
    tokens = tokenize(expand_command_files(argv))
    if not argv:
        raise CommandLineExit(EXIT_OK, stdout=render_help())
    present = {o.option.long for o in tokens.occurrences}
    if "--help" in present:
        raise CommandLineExit(EXIT_OK, stdout=render_help())
    if "--version" in present:
        raise CommandLineExit(EXIT_OK, stdout=render_version())
    if len(tokens.parameters) > len(PARAMETERS):
        raise _error("Too many parameters")
    check_only = "--check-config" in present
    config_path, config_values = _config_values(tokens, default_config)
    port = _port(tokens, config_values, check_only)
    values = _settings_defaults() | config_values
    evaluator = _Evaluator(tokens, values)
    log_level, log_config = evaluator.logging()
    for field in dict.fromkeys(o.field for o in OPTIONS):
        if field is not None and field not in ("verbosity", "log_level", "log_config"):
            evaluator.field(field)
    evaluator.cross_checks()
    values.update(port=port, config_file=config_path)
    return ParsedCommandLine(
        settings=Settings(**values),  # type: ignore[arg-type]
        log_level=log_level,
        log_config=log_config,
        check_config=check_only,
        arguments=tuple(tokens.expanded) if "--arguments" in present else None,
    )


# --- texts: errors, --help, --version ---


def render_header(
    prog: str = PROGRAM, identification: str = IDENTIFICATION, host_info: bool = False
) -> str:
    """OFConsoleApplication::printHeader: identification, name and description."""
    text = f"{identification}\n\n{prog}: {DESCRIPTION}\n"
    if host_info:
        encoding = locale.getpreferredencoding(False) or "system default (unknown)"
        text += (
            f"\nHost type: {platform.system()}-{platform.machine()}\n"
            f"Character encoding: {encoding}\n"
            f"Build options: python{platform.python_version()}\n"
        )
    return text


def _error(message: str, *, quiet: bool = False) -> CommandLineExit:
    """A command-line error as DCMTK prints it: header, ``error: …``, exit 1."""
    text = "" if quiet else f"{render_header()}error: {message}\n"
    return CommandLineExit(EXIT_USAGE, stderr=text)


def render_version() -> str:
    """``--version``: the header with host information, then the libraries used."""
    lines = [render_header(host_info=True), "External libraries used:"]
    for name in LIBRARIES:
        try:
            lines.append(f"- {name}, Version {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def _option_block(option: Option, indent: int, short: int, long: int) -> str:
    """One option laid out like OFCommandLine::getOptionString."""
    text = " " * indent + option.short.ljust(short) + "  " + option.long.ljust(long) + "  "
    if option.value is not None:
        text += option.value.description + "\n" + " " * (indent + short + long + 4)
    return text + option.help.replace("\n", "\n" + " " * (indent + short + long + 4)) + "\n"


def render_options(options: Sequence[Option] = OPTIONS) -> str:
    """The option list of ``--help``: groups, subgroups, per-block column widths."""
    out: list[str] = []
    group = subgroup = None
    index = 0
    while index < len(options):
        option = options[index]
        if option.group != group:
            group, subgroup = option.group, None
            out.append(f"{group}\n")
        indent = 2
        if option.subgroup:
            indent = 4
            if option.subgroup != subgroup:
                subgroup = option.subgroup
                out.append(f"  {subgroup}\n")
        heading = (option.group, option.subgroup)
        block = list(itertools.takewhile(lambda o, h=heading: (o.group, o.subgroup) == h,
                                         options[index:]))
        long_col, short_col = _GROUP_COLUMNS.get(group, (LONGCOL, SHORTCOL))
        long_col = max([long_col, *(len(o.long) for o in block)])
        short_col = max([short_col, *(len(o.short) for o in block)])
        out += [_option_block(o, indent, short_col, long_col) for o in block]
        index += len(block)
    return "".join(out)


def render_help(
    options: Sequence[Option] = OPTIONS, prog: str = PROGRAM, identification: str = IDENTIFICATION
) -> str:
    """``--help``: OFConsoleApplication::printUsage, laid out as ``wlmscpfs --help``."""
    column = LONGCOL + SHORTCOL + 4
    params = "".join(f"  {name.ljust(column)}  {text}\n" for name, text in PARAMETERS)
    synopsis = " ".join(name for name, _ in PARAMETERS)
    return (
        render_header(prog, identification)
        + f"usage: {prog} [options] {synopsis}\n\nparameters:\n{params}\n"
        + render_options(options)
        + "\n"
    )
