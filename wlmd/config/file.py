"""The TOML configuration file: loading it into Settings values, and the shipped example.

Its keys are the ``Settings`` field names that options set (plus ``port``), so the file, the
command line and the man page name the same things; values are checked by the same value
specs as on the command line, and every refusal says ``file:line``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import tomllib
import types
import typing
from pathlib import Path

from wlmd.cmdline.render import ConfigKey, render_config_file, toml_literal
from wlmd.config.options import OPTIONS, options_for, spec_for
from wlmd.config.settings import Settings
from wlmd.mpps.policy import CONFIG_EXAMPLE as MPPS_CONFIG_EXAMPLE
from wlmd.policy.config import EXAMPLE as POLICY_EXAMPLE
from wlmd.policy.config import PolicyError, parse_policies

DEFAULT_CONFIG_FILE = Path("/etc/wlmd/wlmd.conf")

SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_HINTS = typing.get_type_hints(Settings)
# Keys a config file may hold: every Settings field but the config file itself.
CONFIG_KEYS = tuple(name for name in SETTINGS_FIELDS if name != "config_file")
# Tables of wlmd.conf that belong to wlmd's tools and that the server skips.
TOOL_SECTIONS = ("expire",)
EXPIRE_SECTION = """
# [expire]: what `wlmctl expire` (and wlmd-expire.timer, daily) removes. A TOML table: it
# must stay the last part of this file. Options on wlmctl's command line win.
[expire]
# entries whose scheduled procedure step started more than this many days ago (0: none)
older_than = 30
# entries whose ScheduledProcedureStepStatus is one of these (empty list: none)
status = ["COMPLETED", "DISCONTINUED"]
# move expired entries below this directory (one subdirectory per AE) instead of deleting them
#archive = "/var/lib/wlmd/archive"
"""


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
    from_toml = getattr(kind, "from_toml", None)
    if from_toml is not None:  # a structured setting (tables) that parses itself
        return from_toml(raw)
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


def _table_line(lines: list[str], key: str, number: int) -> int:
    """The line of the ``number``-th ``[[key]]`` header (1 if it cannot be found)."""
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(key)}\s*\]\]")
    headers = [n for n, line in enumerate(lines, 1) if pattern.match(line)]
    return headers[number - 1] if 0 < number <= len(headers) else 1


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
        if key in TOOL_SECTIONS and isinstance(raw, dict):
            continue  # read by that tool (wlmd.wlmctl.context), not by the server
        where = f"{path}:{_line_of(lines, key)}"
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        try:
            values[key] = parse_policies(raw) if key == "policy" else convert_value(key, raw)
        except PolicyError as exc:
            raise ConfigError(f"{path}:{_table_line(lines, key, exc.table)}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    return values


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int:
    """tomllib puts "(at line L, column C)" in its message (3.11 has no lineno attribute)."""
    found = re.search(r"at line (\d+)", str(exc))
    return int(found.group(1)) if found else getattr(exc, "lineno", 1)


def _toml_error_text(exc: tomllib.TOMLDecodeError) -> str:
    return re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)$", "", str(exc))


def dump_config(values: dict[str, object]) -> str:
    """A TOML document setting ``values`` (None values are left out: they mean "unset").

    Structured settings (``to_toml``) are tables, which TOML wants after the plain keys.
    """
    plain = [f"{key} = {toml_literal(value)}\n" for key, value in values.items()
             if value is not None and not hasattr(value, "to_toml")]
    tables = [value.to_toml(key) for key, value in values.items() if hasattr(value, "to_toml")]
    return "".join(plain) + "".join(tables)


# Values the shipped file sets for the packaged systemd service (wlmd.service reads the file).
PACKAGED_VALUES: dict[str, object] = {"port": 104, "data_files_path": "/var/lib/wlmd/worklists",
                                      "index_file": "/var/cache/wlmd/index.sqlite"}
SHIPPED_HEADER = (
    "wlmd configuration (TOML). Generated from the option table: do not edit by hand,",
    "run `python -m wlmd.config > etc/wlmd.conf`.",
    "Every key is a command-line option's setting; options on the command line win.",
    "Uncomment a line to change its default. The few active lines are what the packaged",
    "systemd service needs: where to listen and where the worklists are.",
)


def config_keys() -> list[ConfigKey]:
    """Config keys in table order, each with the options that set it (port first)."""
    keys = [ConfigKey("port", None, comment="tcp/ip port number to listen on (the `port` "
                      "parameter)", value=PACKAGED_VALUES["port"])]
    for field in dict.fromkeys(option.field for option in OPTIONS):
        if field in CONFIG_KEYS:
            keys.append(ConfigKey(field, field_default(field), options_for(field),
                                  value=PACKAGED_VALUES.get(field)))
    return keys


def render_config() -> str:
    """The annotated default configuration file shipped as ``etc/wlmd.conf``."""
    return (render_config_file(SHIPPED_HEADER, config_keys()) + "\n" + MPPS_CONFIG_EXAMPLE
            + POLICY_EXAMPLE + EXPIRE_SECTION)
