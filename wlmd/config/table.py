"""The one option table, and the TOML configuration file generated from it.

Every command-line option is one ``Option`` row: DCMTK spellings, the ``Settings`` field it sets,
how its value is parsed and range-checked, and its help text. The parser and ``--help``
(``wlmd.options``), the config file keys (the field names) and the man page list all come from
``OPTIONS``, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from logging.handlers import SysLogHandler
from pathlib import Path

from wlmd.config.settings import (
    CharsetMode,
    IpFamily,
    Settings,
    TlsProfile,
    TransferSyntaxPreference,
)

DEFAULT_CONFIG_FILE = Path("/etc/wlmd/wlmd.conf")

ULONG_MAX = (1 << 64) - 1
LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)

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


class ValueStatus(enum.Enum):
    """How a value failed, worded as DCMTK's ``OFCommandLine::getStatusString`` words it."""

    INVALID = "invalid"
    UNDERFLOW = "underflow"
    OVERFLOW = "overflow"


@dataclass(frozen=True)
class ValueSpec:
    """How an option's value is read (``parse``) and range-checked (``check``)."""

    description: str  # DCMTK's "[s]econds: integer (default: 30)" column
    parse: Callable[[str], object | None]  # None = not a valid value of this kind
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True

    def check(self, value: object) -> ValueStatus | None:
        """Range-check a parsed value: None if fine."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if self.low is not None and (
            value < self.low or (not self.low_inclusive and value == self.low)
        ):
            return ValueStatus.UNDERFLOW
        if self.high is not None and value > self.high:
            return ValueStatus.OVERFLOW
        return None


@dataclass(frozen=True)
class Option:
    """One command-line option: DCMTK spelling, what it sets, and its help text."""

    long: str
    help: str
    group: str
    subgroup: str = ""
    short: str = ""
    field: str | None = None  # Settings field; "log_level"/"log_config"/"verbosity" for logging
    const: object = None  # the value a flag stores in ``field``
    value: ValueSpec | None = None  # options that take one value
    requires: tuple[str, Callable[[dict[str, object]], bool]] | None = None
    in_wlmscpfs: bool = True  # spelled exactly so by wlmscpfs 3.6.7 (else 3.7.0 or wlmd)

    @property
    def takes_value(self) -> bool:
        """True when the next argument is this option's value."""
        return self.value is not None


# --- value parsers: DCMTK reads numbers with sscanf, so "104x" is 104 and "0x10" is 0 for %lu.

_SPACE = " \t\n\v\f\r"


def _scan_digits(text: str, base: int) -> tuple[int, int] | None:
    """Leading digits of ``text`` in ``base``: (value, count), or None when there are none."""
    digits = "0123456789abcdef"[:base]
    count = 0
    while count < len(text) and text[count].lower() in digits:
        count += 1
    if count == 0:
        return None
    return int(text[:count], base), count


def _split_sign(text: str) -> tuple[int, str]:
    """Skip leading white space and one sign, as scanf does."""
    text = text.lstrip(_SPACE)
    if text[:1] in ("+", "-"):
        return (-1 if text[0] == "-" else 1), text[1:]
    return 1, text


def scan_signed(text: str) -> int | None:
    """``sscanf(text, "%li")``: base from the prefix (0x hex, 0 octal), saturating."""
    sign, rest = _split_sign(text)
    if rest[:2].lower() == "0x" and _scan_digits(rest[2:], 16):
        base, rest = 16, rest[2:]
    elif rest[:1] == "0":
        base = 8
    else:
        base = 10
    scanned = _scan_digits(rest, base)
    if scanned is None:
        return None
    return max(LONG_MIN, min(LONG_MAX, sign * scanned[0]))


def scan_unsigned(text: str) -> int | None:
    """``sscanf(text, "%lu")``: decimal; a negative number wraps around as strtoul does."""
    sign, rest = _split_sign(text)
    scanned = _scan_digits(rest, 10)
    if scanned is None:
        return None
    value = min(scanned[0], ULONG_MAX)
    return value if sign > 0 or value == 0 else ULONG_MAX + 1 - value


def _option_unsigned(text: str) -> int | None:
    """An unsigned option value: DCMTK also refuses a leading minus sign."""
    value = scan_unsigned(text)
    return None if value is None or text.lstrip(" ").startswith("-") else value


def _seconds(text: str) -> float | None:
    """A wlmd duration in seconds (may have a fraction)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _string(text: str) -> str:
    return text


def _path(text: str) -> Path:
    return Path(text)


def _ip_address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _facility(text: str) -> str | None:
    return text if text in SysLogHandler.facility_names else None


def _tls_profile(text: str) -> TlsProfile | None:
    return next((p for p in TlsProfile if p.value == text), None)


def _log_level(text: str) -> int | None:
    return LOG_LEVELS.get(text.lower())


def unsigned(description: str, low: int | None = None, high: int | None = None) -> ValueSpec:
    """An unsigned integer option (DCMTK ``OFCmdUnsignedInt``)."""
    return ValueSpec(description, _option_unsigned, low, high)


def signed(description: str, low: int) -> ValueSpec:
    """A signed integer option (DCMTK ``OFCmdSignedInt``)."""
    return ValueSpec(description, scan_signed, low)


def seconds(description: str, *, allow_zero: bool = False) -> ValueSpec:
    """A duration in seconds, wlmd's own options."""
    return ValueSpec(description, _seconds, 0, None, low_inclusive=allow_zero)


def text(description: str) -> ValueSpec:
    return ValueSpec(description, _string)


def path(description: str) -> ValueSpec:
    return ValueSpec(description, _path)


def _needs(field: str, wanted: object) -> Callable[[dict[str, object]], bool]:
    return lambda values: values.get(field) == wanted


def _has(field: str) -> Callable[[dict[str, object]], bool]:
    return lambda values: bool(values.get(field))


GENERAL = "general options:"
MULTI = "multi-process options:"
INPUT = "input options:"
PROCESSING = "processing options:"
NETWORK = "network options:"
OUTPUT = "output options:"
WLMD = "wlmd options:"

_O = Option

OPTIONS: tuple[Option, ...] = (
    _O("--help", "print this help text and exit", GENERAL, short="-h"),
    _O("--version", "print version information and exit", GENERAL),
    _O("--arguments", "print expanded command line arguments", GENERAL),
    _O("--quiet", "quiet mode, print no warnings and errors", GENERAL, short="-q",
       field="verbosity", const=LOG_LEVELS["fatal"]),
    _O("--verbose", "verbose mode, print processing details", GENERAL, short="-v",
       field="verbosity", const=LOG_LEVELS["info"]),
    _O("--debug", "debug mode, print debug information", GENERAL, short="-d",
       field="verbosity", const=LOG_LEVELS["debug"]),
    _O("--log-level", "(fatal, error, warn, info, debug, trace)\nuse level l for the logger",
       GENERAL, short="-ll", field="log_level",
       value=ValueSpec("[l]evel: string constant", _log_level)),
    _O("--log-config", "use config file f for the logger", GENERAL, short="-lc",
       field="log_config", value=path("[f]ilename: string")),
    _O("--single-process", "single process mode", MULTI, short="-s",
       field="single_process", const=True),
    _O("--fork", "fork child process for each association (def.)", MULTI,
       field="single_process", const=False),
    _O("--data-files-path", "path to worklist data files", INPUT, "general:", short="-dfp",
       field="data_files_path", value=path("[p]ath: string (default: .)")),
    _O("--enable-file-reject", "enable rejection of incomplete worklist files\n(default)", INPUT,
       "handling of worklist files:", short="-efr", field="file_reject", const=True),
    _O("--disable-file-reject", "disable rejection of incomplete worklist files", INPUT,
       "handling of worklist files:", short="-dfr", field="file_reject", const=False),
    _O("--return-no-char-set", "return no specific character set (default)", PROCESSING,
       "returned character set:", short="-cs0", field="return_charset", const=CharsetMode.NONE),
    _O("--return-iso-ir-100", "return specific character set ISO IR 100", PROCESSING,
       "returned character set:", short="-cs1", field="return_charset",
       const=CharsetMode.ISO_IR_100),
    _O("--keep-char-set", "return character set provided in file", PROCESSING,
       "returned character set:", short="-csk", field="return_charset", const=CharsetMode.KEEP),
    _O("--no-sq-expansion", "disable expansion of empty sequences in C-FIND\nrequest messages",
       PROCESSING, "other processing options:", short="-nse", field="sequence_expansion",
       const=False),
    _O("--ipv4", "use IPv4 only (default)", NETWORK, "IP protocol version:", short="-i4",
       field="ip_family", const=IpFamily.IPV4, in_wlmscpfs=False),
    _O("--ipv6", "use IPv6 only", NETWORK, "IP protocol version:", short="-i6",
       field="ip_family", const=IpFamily.IPV6, in_wlmscpfs=False),
    _O("--ip-auto", "use IPv6/IPv4 dual stack", NETWORK, "IP protocol version:", short="-i0",
       field="ip_family", const=IpFamily.AUTO, in_wlmscpfs=False),
    _O("--prefer-uncompr", "prefer explicit VR local byte order (default)", NETWORK,
       "preferred network transfer syntaxes:", short="+x=", field="transfer_syntax",
       const=TransferSyntaxPreference.UNCOMPRESSED),
    _O("--prefer-little", "prefer explicit VR little endian TS", NETWORK,
       "preferred network transfer syntaxes:", short="+xe", field="transfer_syntax",
       const=TransferSyntaxPreference.LITTLE),
    _O("--prefer-big", "prefer explicit VR big endian TS", NETWORK,
       "preferred network transfer syntaxes:", short="+xb", field="transfer_syntax",
       const=TransferSyntaxPreference.BIG),
    _O("--prefer-deflated", "prefer deflated explicit VR little endian TS", NETWORK,
       "preferred network transfer syntaxes:", short="+xd", field="transfer_syntax",
       const=TransferSyntaxPreference.DEFLATED),
    _O("--implicit", "accept implicit VR little endian TS only", NETWORK,
       "preferred network transfer syntaxes:", short="+xi", field="transfer_syntax",
       const=TransferSyntaxPreference.IMPLICIT),
    _O("--access-full", "accept connections from any host (default)", NETWORK,
       "network host access control (tcp wrapper):", short="-ac", field="access_control",
       const=False),
    _O("--access-control", "enforce host access control rules", NETWORK,
       "network host access control (tcp wrapper):", short="+ac", field="access_control",
       const=True),
    _O("--enable-new-vr", "enable support for new VRs (UN/UT) (default)", NETWORK,
       "post-1993 value representations:", short="+u", field="new_vr", const=True),
    _O("--disable-new-vr", "disable support for new VRs, convert to OB", NETWORK,
       "post-1993 value representations:", short="-u", field="new_vr", const=False),
    _O("--compression-level", "0=uncompressed, 1=fastest, 9=best compression", NETWORK,
       "deflate compression level (only with --prefer-deflated):", short="+cl",
       field="compression_level", value=unsigned("[l]evel: integer (default: 6)", 0, 9),
       requires=("--prefer-deflated",
                 _needs("transfer_syntax", TransferSyntaxPreference.DEFLATED))),
    _O("--acse-timeout", "timeout for ACSE messages", NETWORK, "other network options:",
       short="-ta", field="acse_timeout", value=signed("[s]econds: integer (default: 30)", 1)),
    _O("--dimse-timeout", "timeout for DIMSE messages", NETWORK, "other network options:",
       short="-td", field="dimse_timeout",
       value=signed("[s]econds: integer (default: unlimited)", 1)),
    _O("--max-associations", "limit maximum number of parallel associations", NETWORK,
       "other network options:", field="max_associations",
       value=signed("[a]ssocs: integer (default: 50)", 1)),
    _O("--refuse", "refuse association", NETWORK, "other network options:", field="refuse",
       const=True),
    _O("--reject", "reject association if no implement. class UID", NETWORK,
       "other network options:", field="reject", const=True),
    _O("--no-fail", "don't fail on an invalid query", NETWORK, "other network options:",
       field="no_fail", const=True),
    _O("--sleep-before", "sleep s seconds before find (default: 0)", NETWORK,
       "other network options:", field="sleep_before", value=unsigned("[s]econds: integer", 0)),
    _O("--sleep-after", "sleep s seconds after find (default: 0)", NETWORK,
       "other network options:", field="sleep_after", value=unsigned("[s]econds: integer", 0)),
    _O("--sleep-during", "sleep s seconds during find (default: 0)", NETWORK,
       "other network options:", field="sleep_during", value=unsigned("[s]econds: integer", 0)),
    _O("--max-pdu", "set max receive pdu to n bytes (default: 16384)", NETWORK,
       "other network options:", short="-pdu", field="max_pdu",
       value=unsigned("[n]umber of bytes: integer (4096..131072)", 4096, 131072)),
    _O("--disable-host-lookup", "disable hostname lookup", NETWORK, "other network options:",
       short="-dhl", field="host_lookup", const=False),
    _O("--request-file-path", "path to store request files to", OUTPUT, "general:",
       short="-rfp", field="request_file_path", value=path("[p]ath: string")),
    _O("--request-file-format", "request file name format", OUTPUT, "general:", short="-rff",
       field="request_file_format", value=text("[f]ormat: string (default: #t.dump)"),
       requires=("--request-file-path", _has("request_file_path"))),
    # --- wlmd's own options: long spellings only ---
    _O("--config", "read settings from TOML file f\n(default: /etc/wlmd/wlmd.conf if present)",
       WLMD, "configuration and daemon:", field="config_file",
       value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--check-config", "check configuration and access rules, then exit", WLMD,
       "configuration and daemon:", in_wlmscpfs=False),
    _O("--daemon", "detach from the terminal and run in the background", WLMD,
       "configuration and daemon:", field="daemon", const=True, in_wlmscpfs=False),
    _O("--pid-file", "write the server's process id to file f", WLMD,
       "configuration and daemon:", field="pid_file", value=path("[f]ilename: string"),
       in_wlmscpfs=False),
    _O("--index-file", "keep the parsed worklist in file f, so that a\nrestart parses "
       "changed files only (default: none)", WLMD, "configuration and daemon:",
       field="index_file", value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--user", "run as user u after binding the port", WLMD, "configuration and daemon:",
       field="user", value=text("[u]ser: string"), in_wlmscpfs=False),
    _O("--group", "run as group g after binding the port", WLMD, "configuration and daemon:",
       field="group", value=text("[g]roup: string"), in_wlmscpfs=False),
    _O("--listen-address", "listen on address a only (default: all addresses)", WLMD,
       "network:", field="listen_address",
       value=ValueSpec("[a]ddress: IPv4 or IPv6 address", _ip_address), in_wlmscpfs=False),
    _O("--max-associations-per-host", "limit parallel associations per peer address\n"
       "(default: 0 = unlimited)", WLMD, "network:", field="max_associations_per_host",
       value=unsigned("[a]ssocs: integer", 0), in_wlmscpfs=False),
    _O("--idle-timeout", "close an association idle between commands\nfor s seconds "
       "(default: never)", WLMD, "network:", field="idle_timeout",
       value=seconds("[s]econds: number"), in_wlmscpfs=False),
    _O("--hosts-allow", "host access rules allowing peers (with +ac)", WLMD, "network:",
       field="hosts_allow", value=path("[f]ilename: string (default: /etc/hosts.allow)"),
       in_wlmscpfs=False),
    _O("--hosts-deny", "host access rules denying peers (with +ac)", WLMD, "network:",
       field="hosts_deny", value=path("[f]ilename: string (default: /etc/hosts.deny)"),
       in_wlmscpfs=False),
    _O("--min-spare-workers", "keep at least n idle worker processes", WLMD, "worker pool:",
       field="min_spare_workers", value=unsigned("[n]umber: integer (default: 2)", 0),
       in_wlmscpfs=False),
    _O("--max-spare-workers", "keep at most n idle worker processes", WLMD, "worker pool:",
       field="max_spare_workers", value=unsigned("[n]umber: integer (default: 8)", 1),
       in_wlmscpfs=False),
    _O("--worker-max-uses", "recycle a worker after n associations", WLMD, "worker pool:",
       field="worker_max_uses", value=unsigned("[n]umber: integer (default: 1000)", 1),
       in_wlmscpfs=False),
    _O("--worker-timeout", "kill a busy worker silent for s seconds", WLMD, "worker pool:",
       field="worker_timeout", value=seconds("[s]econds: number (default: 30)"),
       in_wlmscpfs=False),
    _O("--worker-max-memory", "recycle a worker above m MiB of private memory", WLMD,
       "worker pool:", field="worker_max_memory_mb",
       value=unsigned("[m]ebibytes: integer (default: 512)", 1), in_wlmscpfs=False),
    _O("--graceful-timeout", "on SIGTERM, let associations finish for s seconds", WLMD,
       "worker pool:", field="graceful_timeout",
       value=seconds("[s]econds: number (default: 30)", allow_zero=True), in_wlmscpfs=False),
    _O("--syslog", "log to syslog instead of standard error", WLMD, "logging:",
       field="syslog", const=True, in_wlmscpfs=False),
    _O("--syslog-facility", "syslog facility (daemon, local0..local7, ...)", WLMD, "logging:",
       field="syslog_facility", value=ValueSpec("[f]acility: string (default: daemon)",
                                                _facility), in_wlmscpfs=False),
    _O("--syslog-socket", "syslog socket path, or host:port for UDP", WLMD, "logging:",
       field="syslog_socket", value=text("[s]ocket: string (default: /dev/log)"),
       in_wlmscpfs=False),
    _O("--max-identifier-size", "refuse C-FIND identifiers above n bytes", WLMD, "limits:",
       field="max_identifier_bytes", value=unsigned("[n]umber of bytes: integer "
                                                    "(default: 1048576)", 1),
       in_wlmscpfs=False),
    _O("--max-sequence-depth", "refuse identifiers nesting sequences deeper than n", WLMD,
       "limits:", field="max_sequence_depth", value=unsigned("[n]umber: integer (default: 8)",
                                                             1), in_wlmscpfs=False),
    _O("--max-sequence-items", "refuse identifiers with more than n sequence items",
       WLMD, "limits:", field="max_sequence_items",
       value=unsigned("[n]umber: integer (default: 64)", 1), in_wlmscpfs=False),
    _O("--max-responses",
       "refuse (0xA700) a C-FIND matching more than n\nentries (default: 0 = unlimited)", WLMD,
       "limits:", field="max_responses", value=unsigned("[n]umber: integer", 0),
       in_wlmscpfs=False),
    _O("--tls-key", "enable TLS with private key file f (PEM)", WLMD, "TLS:",
       field="tls_key", value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--tls-cert", "server certificate file f (PEM)", WLMD, "TLS:", field="tls_cert",
       value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--tls-ca-file", "trust peer certificates signed by CAs in file f\n"
       "(a client certificate is then verified if sent)", WLMD, "TLS:",
       field="tls_ca_file", value=path("[f]ilename: string"), in_wlmscpfs=False),
    _O("--tls-require-peer-cert", "require a valid client certificate", WLMD, "TLS:",
       field="tls_require_peer_cert", const=True, in_wlmscpfs=False),
    _O("--tls-profile", "TLS security profile p, as findscu's +pg ... +pa:\n"
       + ", ".join(p.value for p in TlsProfile), WLMD, "TLS:", field="tls_profile",
       value=ValueSpec("[p]rofile: string (default: 8996)", _tls_profile), in_wlmscpfs=False),
)

BY_SPELLING: dict[str, Option] = {
    spelling: option for option in OPTIONS for spelling in (option.long, option.short) if spelling
}

SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_HINTS = typing.get_type_hints(Settings)
# Keys a config file may hold: every Settings field but the config file itself.
CONFIG_KEYS = tuple(name for name in SETTINGS_FIELDS if name != "config_file")


def options_for(field: str) -> list[Option]:
    """The options that set ``field``, in table order."""
    return [option for option in OPTIONS if option.field == field]


def spec_for(field: str) -> ValueSpec | None:
    """The value spec that range-checks ``field`` (None for flag-only fields)."""
    return next((o.value for o in options_for(field) if o.value is not None), None)


def field_default(field: str) -> object:
    """The Settings default of ``field`` (``port`` has none)."""
    default = SETTINGS_FIELDS[field].default
    return None if default is dataclasses.MISSING else default


# --- the TOML file ---


class ConfigError(Exception):
    """A configuration file problem, worded ``file:line: message``."""


def _base_type(field: str) -> tuple[type, bool]:
    """The type of ``field`` without ``| None``, and whether None is allowed."""
    hint = _HINTS[field]
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def convert_value(field: str, raw: object) -> object:
    """Turn a TOML value into the Settings type of ``field``; ValueError explains a refusal."""
    kind, _optional = _base_type(field)
    if kind is bool:
        if not isinstance(raw, bool):
            raise ValueError("expected true or false")
        return raw
    if kind in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, int | float) or (
            kind is int and not isinstance(raw, int)
        ):
            raise ValueError("expected an integer" if kind is int else "expected a number")
        value: object = raw
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        names = [member.value for member in kind]
        if raw not in names:
            raise ValueError(f"expected one of {', '.join(repr(n) for n in names)}")
        return kind(raw)
    else:
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        value = Path(raw) if kind is Path else raw
    return _checked(field, value)


def _checked(field: str, value: object) -> object:
    """Apply the option's own parser and range check to a value from the file."""
    spec = spec_for(field)
    if spec is None:
        return value
    if isinstance(value, str) and spec.parse(value) is None:
        raise ValueError(f"invalid value {value!r}")
    problem = spec.check(value)
    if problem is not None:
        bounds = f"{spec.low:g}.." + ("" if spec.high is None else f"{spec.high:g}")
        raise ValueError(f"{problem.value}: {value} (allowed: {bounds})")
    return value


def _line_of(lines: list[str], key: str) -> int:
    """The 1-based line where ``key`` is assigned (1 if it cannot be found)."""
    pattern = re.compile(rf"""^\s*(["']?){re.escape(key)}\1\s*=""")
    return next((n for n, line in enumerate(lines, 1) if pattern.match(line)), 1)


def load_config(path: Path) -> dict[str, object]:
    """Read a wlmd TOML file into {Settings field: value}; ConfigError says file:line."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        document = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}:{_toml_error_line(exc)}: {_toml_error_text(exc)}") from None
    lines = source.splitlines()
    values: dict[str, object] = {}
    for key, raw in document.items():
        where = f"{path}:{_line_of(lines, key)}"
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        try:
            values[key] = convert_value(key, raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    return values


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int:
    """tomllib puts "(at line L, column C)" in its message (3.11 has no lineno attribute)."""
    found = re.search(r"at line (\d+)", str(exc))
    return int(found.group(1)) if found else getattr(exc, "lineno", 1)


def _toml_error_text(exc: tomllib.TOMLDecodeError) -> str:
    return re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)$", "", str(exc))


def toml_literal(value: object) -> str:
    """A value as TOML source (strings, paths, numbers, booleans, enums)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dump_config(values: dict[str, object]) -> str:
    """A TOML document setting ``values`` (None values are left out: they mean "unset")."""
    return "".join(
        f"{key} = {toml_literal(value)}\n" for key, value in values.items() if value is not None
    )


def _config_fields() -> Iterator[tuple[str, list[Option]]]:
    """Config keys in table order, each with the options that set it (port first)."""
    yield "port", []
    seen: set[str] = set()
    for option in OPTIONS:
        field = option.field
        if field in CONFIG_KEYS and field not in seen:
            seen.add(field)
            yield field, options_for(field)


# Values the shipped file sets for the packaged systemd service (wlmd.service reads the file).
PACKAGED_VALUES: dict[str, object] = {"port": 104, "data_files_path": "/var/lib/wlmd/worklists",
                                      "index_file": "/var/cache/wlmd/index.sqlite"}


def render_config() -> str:
    """The annotated default configuration file shipped as ``etc/wlmd.conf``."""
    out = [
        "# wlmd configuration (TOML). Generated from the option table: do not edit by hand,",
        "# run `python -m wlmd.config.table > etc/wlmd.conf`.",
        "# Every key is a command-line option's setting; options on the command line win.",
        "# Uncomment a line to change its default. The few active lines are what the packaged",
        "# systemd service needs: where to listen and where the worklists are.",
    ]
    for field, options in _config_fields():
        out.append("")
        if not options:
            out.append("# tcp/ip port number to listen on (the `port` parameter)")
        for option in options:
            spelling = f"{option.short}, {option.long}" if option.short else option.long
            summary = option.help.replace("\n", " ")
            out.append(f"# {spelling}: {summary}")
        default = field_default(field)
        if isinstance(default, enum.Enum):
            out.append("# one of: " + ", ".join(f'"{m.value}"' for m in type(default)))
        if default is None:
            out.append(f"# {field} = (not set)")
        else:
            out.append(f"# {field} = {toml_literal(default)}")
        if field in PACKAGED_VALUES:
            out.append(f"{field} = {toml_literal(PACKAGED_VALUES[field])}")
    return "\n".join(out) + "\n"


def render_man_options() -> str:
    """The OPTIONS section of the man page as mdoc, straight from the table."""
    out: list[str] = []
    heading = None
    for option in OPTIONS:
        if (option.group, option.subgroup) != heading:
            if heading is not None:
                out.append(".El")
            heading = (option.group, option.subgroup)
            title = option.group.rstrip(":") + (
                f" ({option.subgroup.rstrip(':')})" if option.subgroup else ""
            )
            out += [f".Ss {title}", ".Bl -tag -width Ds"]
        flags = " , ".join(f"Fl {s[1:]}" if s.startswith("-") else f"Cm {s}"
                           for s in (option.short, option.long) if s)
        argument = f" Ar {option.value.description.split(':')[0]}" if option.value else ""
        out += [f".It {flags}{argument}", option.help.replace("\n", " ")]
    out.append(".El")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_config(), end="")
