"""Option values read the way DCMTK reads them: sscanf numbers, OFCommandLine's range checks.

DCMTK reads numbers with sscanf, so "104x" is 104 and "0x10" is 0 for ``%lu``; scripts written
for wlmscpfs and findscu get the same values and the same refusals here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wlmd.cmdline.console import UsageError

ULONG_MAX = (1 << 64) - 1
LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)


class ValueStatus(enum.Enum):
    """How a value failed, worded as DCMTK's ``OFCommandLine::getStatusString`` words it."""

    INVALID = "invalid"
    UNDERFLOW = "underflow"
    OVERFLOW = "overflow"


@dataclass(frozen=True)
class ValueSpec:
    """How an option's values are read (``parse``) and range-checked (``check``)."""

    description: str  # DCMTK's "[s]econds: integer (default: 30)" column
    parse: Callable[[str], object | None]  # None = not a valid value of this kind
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    count: int = 1  # how many arguments follow the option (findscu's +tls takes two)

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

    def read(self, long: str, text: str) -> object:
        """Parse and range-check ``text``, the value of option ``long``; UsageError if bad."""
        parsed = self.parse(text)
        status = ValueStatus.INVALID if parsed is None else self.check(parsed)
        if status is not None:
            raise UsageError(invalid_value(long, text, status))
        return parsed


def invalid_value(long: str, text: str, status: ValueStatus) -> str:
    """OFConsoleApplication's text for a refused option value."""
    detail = text if status is ValueStatus.INVALID else f"{status.value}: {text}"
    return f"Invalid value for option {long} ({detail})"


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


def read_port(text: str) -> int:
    """A port parameter as DCMTK tools read it: %lu, 1..65535; UsageError if not."""
    port = scan_unsigned(text)
    if port is None:
        raise UsageError(f"Invalid parameter value {text}")
    if port < 1:
        raise UsageError(f"Invalid parameter value {text} (underflow)")
    if port > 65535:
        raise UsageError(f"Invalid parameter value {text} (overflow)")
    return port


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


def unsigned(description: str, low: int | None = None, high: int | None = None) -> ValueSpec:
    """An unsigned integer option (DCMTK ``OFCmdUnsignedInt``)."""
    return ValueSpec(description, _option_unsigned, low, high)


def signed(description: str, low: int, high: int | None = None) -> ValueSpec:
    """A signed integer option (DCMTK ``OFCmdSignedInt``)."""
    return ValueSpec(description, scan_signed, low, high)


def seconds(description: str, *, allow_zero: bool = False) -> ValueSpec:
    """A duration in seconds, wlmd's own options."""
    return ValueSpec(description, _seconds, 0, None, low_inclusive=allow_zero)


def text(description: str, count: int = 1) -> ValueSpec:
    """A string option (DCMTK reads these unchecked)."""
    return ValueSpec(description, _string, count=count)


def path(description: str) -> ValueSpec:
    """A file or directory name."""
    return ValueSpec(description, _path)
