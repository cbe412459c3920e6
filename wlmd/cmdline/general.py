"""The general options every DCMTK console application has: help, version and logging."""

from __future__ import annotations

from wlmd.cmdline.option import Option
from wlmd.cmdline.values import ValueSpec, path

GENERAL = "general options:"

# Python logging levels for DCMTK's log levels; TRACE sits below DEBUG as in log4cplus.
TRACE = 5
OFF = 60
LOG_LEVELS = {
    "off": OFF,
    "fatal": 50,
    "error": 40,
    "warn": 30,
    "info": 20,
    "debug": 10,
    "trace": TRACE,
    "all": TRACE,
}
INVALID_LOG_LEVEL = "Invalid log level for --log-level option"


def log_level(text: str) -> int | None:
    """The Python level of a ``--log-level`` name (None if DCMTK would refuse it)."""
    return LOG_LEVELS.get(text.lower())


GENERAL_OPTIONS: tuple[Option, ...] = (
    Option("--help", "print this help text and exit", GENERAL, short="-h"),
    Option("--version", "print version information and exit", GENERAL),
    Option("--arguments", "print expanded command line arguments", GENERAL),
    Option("--quiet", "quiet mode, print no warnings and errors", GENERAL, short="-q",
           field="verbosity", const=LOG_LEVELS["fatal"]),
    Option("--verbose", "verbose mode, print processing details", GENERAL, short="-v",
           field="verbosity", const=LOG_LEVELS["info"]),
    Option("--debug", "debug mode, print debug information", GENERAL, short="-d",
           field="verbosity", const=LOG_LEVELS["debug"]),
    Option("--log-level", "(fatal, error, warn, info, debug, trace)\nuse level l for the logger",
           GENERAL, short="-ll", field="log_level",
           value=ValueSpec("[l]evel: string constant", log_level)),
    Option("--log-config", "use config file f for the logger", GENERAL, short="-lc",
           field="log_config", value=path("[f]ilename: string")),
)
