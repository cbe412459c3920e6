"""One row of a program's option table: spellings, what it sets, its value and its help."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wlmd.cmdline.values import ValueSpec


@dataclass(frozen=True)
class Option:
    """One command-line option: DCMTK spelling, what it sets, and its help text.

    ``group`` and ``subgroup`` are the headings ``--help`` prints it under; ``field`` and
    ``const`` say which setting a flag sets (programs that evaluate options themselves, as
    findscu does, leave them empty).
    """

    long: str
    help: str  # lines separated by "\n"
    group: str
    subgroup: str = ""
    short: str = ""
    field: str | None = None  # the setting this option sets
    const: object = None  # the value a flag stores in ``field``
    value: ValueSpec | None = None  # options followed by values
    requires: tuple[str, Callable[[dict[str, object]], bool]] | None = None
    in_wlmscpfs: bool = True  # spelled exactly so by the DCMTK tool (else a wlmd addition)

    @property
    def takes_value(self) -> bool:
        """True when the next argument is this option's value."""
        return self.value is not None

    @property
    def value_count(self) -> int:
        """How many arguments after the option are its values."""
        return 0 if self.value is None else self.value.count


def by_spelling(options: Iterable[Option]) -> dict[str, Option]:
    """Every spelling, short and long, mapped to its option."""
    return {
        spelling: option for option in options for spelling in (option.long, option.short)
        if spelling
    }
