"""DCMTK-style logging for findscu: ``I: text`` lines on stderr, one prefix per line.

Responses have their own logger because DCMTK shows them at INFO even when the
application logs only warnings (unless hidden, extracted or quiet).
"""

from __future__ import annotations

import logging
import logging.config
import sys

from wlmd.cmdline.console import UsageError
from wlmd.cmdline.general import INVALID_LOG_LEVEL, TRACE, log_level
from wlmd.cmdline.tokens import CommandLine
from wlmd.dicom.dump import byte_exact

APP = "wlmd.findscu"
RESPONSES = "wlmd.findscu.responses"
_LETTERS = {TRACE: "T", logging.DEBUG: "D", logging.INFO: "I", logging.WARNING: "W",
            logging.ERROR: "E", logging.CRITICAL: "F"}


class DcmtkFormatter(logging.Formatter):
    """``X: `` before every line of a message, X being the level's letter."""

    def format(self, record: logging.LogRecord) -> str:
        letter = _LETTERS.get(record.levelno, "I")
        return "\n".join(f"{letter}: {line}" for line in record.getMessage().split("\n"))


def level_from(cmd: CommandLine) -> int:
    """The rightmost of -q, -v, -d and -ll decides; DCMTK's default is WARN."""
    last = cmd.last("--quiet", "--verbose", "--debug", "--log-level")
    if last is None:
        return logging.WARNING
    name, values = last
    if name == "--log-level":
        level = log_level(values[0])
        if level is None:
            raise UsageError(INVALID_LOG_LEVEL)
        return level
    return {"--quiet": logging.CRITICAL, "--verbose": logging.INFO,
            "--debug": logging.DEBUG}[name]


def setup_logging(cmd: CommandLine) -> None:
    """Configure the findscu loggers (or load ``-lc FILE``, a Python logging config file)."""
    logging.addLevelName(TRACE, "TRACE")
    level = level_from(cmd)
    app = logging.getLogger(APP)
    app.handlers.clear()
    app.propagate = False
    app.setLevel(level)
    handler = logging.StreamHandler(byte_exact(sys.stderr))  # value bytes as DCMTK prints
    handler.setFormatter(DcmtkFormatter())
    app.addHandler(handler)
    logging.getLogger(RESPONSES).setLevel(logging.INFO)
    library = logging.getLogger("pynetdicom")
    library.propagate = False
    library.handlers.clear()
    if level <= logging.DEBUG:
        library.setLevel(level)
        library.addHandler(handler)
    else:
        library.setLevel(logging.CRITICAL + 10)
    config = cmd.values("--log-config")
    if config:
        try:
            logging.config.fileConfig(config[-1][0], disable_existing_loggers=False)
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"cannot read log config file: {config[-1][0]}") from exc


def log_always(message: str) -> None:
    """Log at INFO whatever the level: DCMTK prints ``--arguments`` even with ``-q``."""
    app = logging.getLogger(APP)
    app.handle(app.makeRecord(APP, logging.INFO, "(findscu)", 0, message, (), None))
