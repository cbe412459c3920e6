"""wlmd's command line: wlmscpfs(1)'s, evaluated in the order DCMTK's wlmscpfs evaluates it.

The shared engine (``wlmd.cmdline``) expands ``@file`` and sorts the arguments; this module
evaluates them as wlmscpfs does, so the first error is the same one, with the same message and
exit code. Values are layered: Settings defaults < the TOML config file < the command line.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wlmd import __version__
from wlmd.cmdline.console import (
    EXIT_OK,
    EXIT_USAGE,
    CommandLineExit,
    Program,
    UsageError,
    error_text,
    render_header,
)
from wlmd.cmdline.console import render_help as render_program_help
from wlmd.cmdline.general import INVALID_LOG_LEVEL, LOG_LEVELS, log_level
from wlmd.cmdline.option import Option
from wlmd.cmdline.tokens import CommandLine, arguments_message, expand_command_files, tokenize
from wlmd.cmdline.values import read_port
from wlmd.config.file import DEFAULT_CONFIG_FILE, ConfigError, load_config
from wlmd.config.options import OPTIONS, spellings_for
from wlmd.config.settings import Settings

PROGRAM = Program(
    name="wlmd",
    description="DICOM Basic Worklist Management SCP (based on data files)",
    identification=f"$wlmd: wlmd v{__version__} $",
    synopsis="port",
    parameters=(("port", "tcp/ip port number to listen on"),),
    long_column=21,
)
CHECK_CONFIG_PORT = 104  # --check-config needs no port; the settings still need one
LIBRARIES = ("pydicom", "pynetdicom", "psutil", "netaddr", "python-daemon")
_LOGGING_FIELDS = ("verbosity", "log_level", "log_config")
_BY_LONG = {option.long: option for option in OPTIONS}


@dataclass(frozen=True)
class ParsedCommandLine:
    """What the command line (and config file) asked for."""

    settings: Settings
    log_level: int  # a Python logging level (TRACE=5 below DEBUG; OFF=60 above CRITICAL)
    log_config: Path | None = None  # -lc: a logging config file replaces level and handlers
    check_config: bool = False  # --check-config: validate, report, exit
    arguments: tuple[str, ...] | None = None  # --arguments: the expanded argument list

    def arguments_message(self, prog: str = PROGRAM.name) -> str | None:
        """The INFO line DCMTK logs for ``--arguments`` (always logged, whatever the level)."""
        if self.arguments is None:
            return None
        return arguments_message(prog, self.arguments)


class _Evaluator:
    """Turns tokens into settings; knows whether errors are still printed (not after -q)."""

    def __init__(self, cmd: CommandLine, values: dict[str, object]) -> None:
        self.cmd = cmd
        self.values = values  # config file values, overwritten by the command line
        self.quiet = False

    def fail(self, message: str) -> CommandLineExit:
        return _error(message, quiet=self.quiet)

    def logging(self) -> tuple[int, Path | None]:
        """-q/-v/-d (rightmost wins), -ll and -lc with DCMTK's conflicts."""
        verbosity = self.cmd.last(*spellings_for("verbosity"))
        level = _option(verbosity.long).const if verbosity else None
        level_option = self.cmd.last(*spellings_for("log_level"))
        if level_option is not None:
            if level is not None:
                raise self.fail("--log-level not allowed with --verbose, --debug or --quiet")
            level = log_level(level_option.value or "")
            if level is None:
                raise self.fail(INVALID_LOG_LEVEL)
        log_config = self.cmd.last(*spellings_for("log_config"))
        config_path = None
        if log_config is not None:
            if level_option is not None:
                raise self.fail("--log-config not allowed with --log-level")
            if level is not None:
                raise self.fail("--log-config not allowed with --verbose, --debug or --quiet")
            config_path = Path(log_config.value or "")
            if not config_path.is_file():
                raise self.fail("Specified --log-config file does not exist")
            if not os.access(config_path, os.R_OK):
                raise self.fail("Specified --log-config file cannot be read")
        if level is None and config_path is None:  # wlmd.conf's log_level, else warnings
            level = log_level(str(self.values.get("log_level", "warn")))
        level = logging.WARNING if level is None else level
        assert isinstance(level, int)
        self.values["log_level"] = next(name for name, value in LOG_LEVELS.items()
                                        if value == level)  # the level in force, by name
        self.quiet = config_path is None and level > logging.ERROR
        return level, config_path

    def field(self, field: str) -> None:
        """Set ``field`` from the rightmost of its options, if any appears."""
        occurrence = self.cmd.last(*spellings_for(field))
        if occurrence is None:
            return
        option = _option(occurrence.long)
        if option.requires is not None:
            base, satisfied = option.requires
            if not satisfied(self.values):
                raise self.fail(f"{option.long} only allowed with {base}")
        if option.value is None:
            self.values[field] = option.const
        else:
            try:  # empty strings pass, as in DCMTK
                self.values[field] = option.value.read(option.long, occurrence.value or "")
            except UsageError as exc:
                raise self.fail(str(exc)) from None
        if field == "request_file_path" and occurrence.value == "":
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


def _option(long: str) -> Option:
    """The table row of a long spelling the tokenizer accepted."""
    return _BY_LONG[long]


def _settings_defaults() -> dict[str, object]:
    """Settings defaults for fields that have one (the port has none)."""
    return {
        f.name: f.default for f in dataclasses.fields(Settings)
        if f.default is not dataclasses.MISSING
    }


def _port(cmd: CommandLine, values: dict[str, object], check_only: bool) -> int:
    """The ``port`` parameter: %lu, 1..65535; else the config file's port."""
    if not cmd.params:
        port = values.get("port")
        if isinstance(port, int):
            return port
        if check_only:
            return CHECK_CONFIG_PORT
        raise _error("Missing parameter port")
    return read_port(cmd.params[0])


def _config_values(cmd: CommandLine, default_config: Path) -> tuple[Path | None, dict[str, object]]:
    """Load ``--config FILE`` (rightmost), else ``default_config`` when it exists."""
    occurrence = cmd.last(*spellings_for("config_file"))
    path = Path(occurrence.value) if occurrence and occurrence.value else None
    if path is None and default_config.exists():
        path = default_config
    if path is None:
        return None, {}
    try:
        values = load_config(path)
    except ConfigError as exc:
        raise _error(str(exc)) from None
    port = values.get("port")
    if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
        raise _error(f"{path}: port: {port} is not in 1..65535")
    return path, values


def parse_command_line(
    argv: Sequence[str], *, default_config: Path = DEFAULT_CONFIG_FILE
) -> ParsedCommandLine:
    """Parse ``argv`` (without the program name); CommandLineExit for help, version, errors."""
    try:
        cmd = tokenize(expand_command_files(argv), OPTIONS)
        if not argv or cmd.has("--help"):
            raise CommandLineExit(EXIT_OK, stdout=render_help())
        if cmd.has("--version"):
            raise CommandLineExit(EXIT_OK, stdout=render_version())
        if len(cmd.params) > len(PROGRAM.parameters):
            raise UsageError("Too many parameters")
        check_only = cmd.has("--check-config")
        config_path, config_values = _config_values(cmd, default_config)
        port = _port(cmd, config_values, check_only)
    except UsageError as exc:
        raise _error(str(exc)) from None
    values = _settings_defaults() | config_values
    evaluator = _Evaluator(cmd, values)
    log_level, log_config = evaluator.logging()
    for field in dict.fromkeys(o.field for o in OPTIONS):
        if field is not None and field not in _LOGGING_FIELDS:
            evaluator.field(field)
    evaluator.cross_checks()
    values.update(port=port, config_file=config_path)
    return ParsedCommandLine(
        settings=Settings(**values),  # type: ignore[arg-type]
        log_level=log_level,
        log_config=log_config,
        check_config=check_only,
        arguments=tuple(cmd.expanded) if cmd.has("--arguments") else None,
    )


# --- texts: errors, --help, --version ---


def _error(message: str, *, quiet: bool = False) -> CommandLineExit:
    """A command-line error as DCMTK prints it (nothing after -q): exit 1."""
    return CommandLineExit(EXIT_USAGE, stderr="" if quiet else error_text(PROGRAM, message))


def render_version() -> str:
    """``--version``: the header with host information, then the libraries used."""
    lines = [render_header(PROGRAM, host_info=True), "External libraries used:"]
    for name in LIBRARIES:
        try:
            lines.append(f"- {name}, Version {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def render_help(
    options: Sequence[Option] = OPTIONS, prog: str = PROGRAM.name,
    identification: str = PROGRAM.identification,
) -> str:
    """``--help``, laid out as ``wlmscpfs --help`` (tests render it as wlmscpfs to compare)."""
    program = dataclasses.replace(PROGRAM, name=prog, identification=identification)
    return render_program_help(program, options)
