"""Documents made from an option table: the annotated TOML config file and the man page list.

Both are generated rather than written so that they cannot drift from the options the program
accepts; tests compare the shipped files with these renderings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wlmd.cmdline.option import Option


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


@dataclass(frozen=True)
class ConfigKey:
    """One key of a config file: its default, the options that set it, an active value."""

    name: str
    default: object  # None: not set
    options: Sequence[Option] = ()
    comment: str = ""  # what the key means, for keys that no option sets
    value: object = None  # the value the shipped file sets (None: left commented out)


def render_config_file(header: Iterable[str], keys: Iterable[ConfigKey]) -> str:
    """An annotated TOML file: each key's options and default as comments, then its value."""
    out = [f"# {line}" for line in header]
    for key in keys:
        out.append("")
        if key.comment:
            out.append(f"# {key.comment}")
        for option in key.options:
            spelling = f"{option.short}, {option.long}" if option.short else option.long
            summary = option.help.replace("\n", " ")
            out.append(f"# {spelling}: {summary}")
        if isinstance(key.default, enum.Enum):
            out.append("# one of: " + ", ".join(f'"{m.value}"' for m in type(key.default)))
        if key.default is None:
            out.append(f"# {key.name} = (not set)")
        else:
            out.append(f"# {key.name} = {toml_literal(key.default)}")
        if key.value is not None:
            out.append(f"{key.name} = {toml_literal(key.value)}")
    return "\n".join(out) + "\n"


def render_man_option_list(options: Sequence[Option]) -> str:
    """The OPTIONS section of a man page as mdoc, one ``.Ss`` list per (sub)group."""
    out: list[str] = []
    heading = None
    for option in options:
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
