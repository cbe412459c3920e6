"""Logging: DCMTK-style lines on stderr, syslog for daemons, or a logging config file (-lc).

Named ``logs`` so it does not shadow the standard library's ``logging``. ``configure_logging``
replaces what it installed before, so the supervisor calls it again on SIGHUP (new settings) or
SIGUSR1 (reopen files and sockets). When stderr is the systemd journal (``JOURNAL_STREAM``),
each line starts with its syslog priority (``<4>``), so ``journalctl -p warning`` filters.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import socket
import stat
import sys
import tomllib
from logging.handlers import SysLogHandler
from pathlib import Path
from typing import TextIO

from wlmd.cmdline.general import TRACE
from wlmd.config.settings import LogFormat, Settings
from wlmd.dicom.dump import byte_exact

IDENT = "wlmd"
ASSOCIATION_LOGGER = "wlmd.associations"  # the per-association lines, an access log
LIFECYCLE_LOGGER = "wlmd.lifecycle"  # where the server listens (the first line it writes)
logging.addLevelName(TRACE, "TRACE")

# DCMTK's %P pattern: one letter per level, on every line of a message.
_LETTERS = ((logging.CRITICAL, "F"), (logging.ERROR, "E"), (logging.WARNING, "W"),
            (logging.INFO, "I"), (logging.DEBUG, "D"))


_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class LogConfigError(Exception):
    """The logging destination cannot be set up (bad -lc file, unreachable syslog)."""


def level_letter(levelno: int) -> str:
    """F, E, W, I, D or T, as DCMTK prefixes its log lines."""
    return next((letter for level, letter in _LETTERS if levelno >= level), "T")


class DcmtkFormatter(logging.Formatter):
    """``W: message``, the prefix repeated on each line, as DCMTK's console layout does."""

    def format(self, record: logging.LogRecord) -> str:
        letter = level_letter(record.levelno)
        text = super().format(record)
        if "\n" not in text:  # most lines, the association line among them
            return f"{letter}: {text}"
        return "\n".join(f"{letter}: {line}" for line in text.split("\n"))


def syslog_priority(levelno: int) -> int:
    """The syslog severity of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    return next((priority for level, priority in _PRIORITIES if levelno >= level), 7)


class JsonFormatter(logging.Formatter):
    """One JSON object per record and line, for log shippers (``log_format = "json"``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class JournalPrefix(logging.Formatter):
    """Puts ``<N>``, the record's syslog priority, before every line another formatter makes.

    journald reads the prefix from each line of a service's stderr (sd-daemon(3)).
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


def stderr_is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journal connection systemd named in ``JOURNAL_STREAM``."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def stderr_formatter(settings: Settings, stream: TextIO) -> logging.Formatter:
    """DCMTK's layout or JSON lines, with journal priorities when stderr is the journal."""
    formatter: logging.Formatter = (
        JsonFormatter() if settings.log_format is LogFormat.JSON else DcmtkFormatter())
    return JournalPrefix(formatter) if stderr_is_journal(stream) else formatter


class SyslogFormatter(logging.Formatter):
    """``wlmd[pid]: message``; syslog carries the level in the priority."""

    def __init__(self) -> None:
        super().__init__(f"{IDENT}[%(process)d]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip("\n").replace("\n", " | ")


def syslog_address(socket_spec: str) -> str | tuple[str, int]:
    """A socket path (``/dev/log``) or ``host[:port]`` for UDP (port 514 by default)."""
    if socket_spec.startswith("/"):
        return socket_spec
    host, colon, port = socket_spec.rpartition(":")
    if colon and host and port.isdigit():
        return host.strip("[]"), int(port)
    return socket_spec, 514


class NonBlockingSysLogHandler(SysLogHandler):
    """Drops a record rather than wait: a syslog daemon that stops reading its socket must not
    stop associations (the socket's queue only fills when nobody reads it)."""

    socket: socket.socket  # set by SysLogHandler (typeshed leaves it out)

    def __init__(self, address: str | tuple[str, int], facility: int) -> None:
        self.dropped = 0
        super().__init__(address, facility)
        self.socket.setblocking(False)

    def _connect_unixsocket(self, address: str) -> None:
        # SysLogHandler reconnects (with a fresh, blocking socket) when a send fails.
        super()._connect_unixsocket(address)  # type: ignore[misc]
        self.socket.setblocking(False)

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BlockingIOError):
            self.dropped += 1
            return
        super().handleError(record)


def _syslog_handler(settings: Settings) -> logging.Handler:
    facility = SysLogHandler.facility_names.get(settings.syslog_facility)
    if facility is None:
        raise LogConfigError(f"unknown syslog facility {settings.syslog_facility!r}")
    address = syslog_address(settings.syslog_socket)
    try:
        if isinstance(address, str) and not stat.S_ISSOCK(os.stat(address).st_mode):
            raise OSError(f"{address} is not a socket")
        handler = NonBlockingSysLogHandler(address, facility)
    except OSError as exc:
        raise LogConfigError(f"cannot open syslog socket {settings.syslog_socket}: {exc}") from None
    handler.setFormatter(SyslogFormatter())
    return handler


def _apply_config_file(path: Path) -> None:
    """-lc: fileConfig (INI), or dictConfig from ``.json`` / ``.toml``."""
    try:
        if path.suffix in (".json", ".toml"):
            text = path.read_text(encoding="utf-8")
            config = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
            config.setdefault("disable_existing_loggers", False)  # keep module loggers working
            logging.config.dictConfig(config)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError,
            RuntimeError) as exc:  # logging.config reports bad content with all of these
        raise LogConfigError(f"Specified --log-config file is not valid: {exc}") from None


def _remove_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def configure_logging(
    settings: Settings, level: int, log_config: Path | None = None, *, stream: TextIO | None = None
) -> None:
    """Route the root logger: -lc file, else syslog (``--syslog``), else stderr (default).

    At the default level (warnings) the one line per association is still written, to syslog
    or stderr alike: that is what an administrator reads to see who queried and what came back.
    """
    root = logging.getLogger()
    _remove_handlers(root)
    if log_config is not None:
        _apply_config_file(log_config)
        return
    if settings.syslog:
        handler = _syslog_handler(settings)
    else:
        # Dumps at -v print value bytes as received, as wlmscpfs does.
        target = stream if stream is not None else sys.stderr
        handler = logging.StreamHandler(stream if stream is not None else byte_exact(sys.stderr))
        handler.setFormatter(stderr_formatter(settings, target))
    # The access log and the listening line follow the root level, but the default keeps them.
    kept = logging.INFO if level == logging.WARNING else logging.NOTSET
    root.addHandler(handler)
    root.setLevel(level)
    for name in (ASSOCIATION_LOGGER, LIFECYCLE_LOGGER):
        logging.getLogger(name).setLevel(kept)


def log_always(message: str, logger: str = IDENT) -> None:
    """Log at INFO whatever the level (DCMTK's forcedLog, used by ``--arguments``)."""
    target = logging.getLogger(logger)
    target.handle(target.makeRecord(target.name, logging.INFO, "(wlmd)", 0, message, (), None))
