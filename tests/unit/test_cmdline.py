"""The shared DCMTK command-line engine on its own, with a small table made up for the tests."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

from wlmd.cmdline.console import Program, UsageError, error_text, render_help
from wlmd.cmdline.general import GENERAL_OPTIONS, log_level
from wlmd.cmdline.option import Option
from wlmd.cmdline.render import (
    ConfigKey,
    render_config_file,
    render_man_option_list,
    toml_literal,
)
from wlmd.cmdline.tokens import (
    CommandLine,
    arguments_message,
    expand_command_files,
    looks_like_option,
    parse,
    read_command_file,
)
from wlmd.cmdline.values import ValueSpec, read_port, scan_unsigned, seconds, signed, text, unsigned

GROUP = "tool options:"
OPTIONS = (
    *GENERAL_OPTIONS,
    Option("--alpha", "first flag", GROUP, "flags:", short="-a"),
    Option("--beta", "second flag", GROUP, "flags:", short="+a"),
    Option("--count", "a count", GROUP, "values:", short="-c",
           value=unsigned("[n]umber: integer", 1, 9)),
    Option("--pair", "two values\non two lines", GROUP, "values:",
           value=text("[x], [y]: string", count=2)),
    Option("--a-much-longer-option-name", "widens its block", GROUP, "wide:"),
)
PROGRAM = Program("tool", "a made-up tool", "$wlmd: tool v1 $", "thing [more...]",
                  (("thing", "what to work on"), ("more", "more things")), long_column=12)


# --- tokenizer ---


@pytest.mark.parametrize(("arg", "is_option"), [
    ("-a", True), ("+a", True), ("--", True), ("-x=", True), ("-", False), ("+", False),
    ("-1", False), ("-5x", False), ("+0", False), ("a-b", False), ("", False),
])
def test_what_looks_like_an_option(arg: str, is_option: bool) -> None:
    assert looks_like_option(arg) is is_option


def test_options_anywhere_values_taken_verbatim_and_long_names_for_arguments() -> None:
    cmd = parse(["one", "-c", "-a", "two", "--pair", "+a", "-7", "-a", "-12"], OPTIONS)
    assert cmd.params == ["one", "two", "-12"]
    assert cmd.values("--count") == [("-a",)]
    assert cmd.values("--pair") == [("+a", "-7")]
    assert cmd.expanded == ["one", "--count", "-a", "two", "--pair", "+a", "-7", "--alpha",
                            "-12"]
    assert arguments_message("tool", cmd.expanded) == (
        "calling 'tool' with 9 arguments: 'one' '--count' '-a' 'two' '--pair' '+a' '-7' "
        "'--alpha' '-12' \n")


def test_rightmost_of_exclusive_options_wins() -> None:
    cmd = parse(["-a", "+a", "-c", "3", "-a", "--count", "4"], OPTIONS)
    last = cmd.last("--alpha", "--beta")
    assert last is not None and last.value is None
    assert last == ("--alpha", ())  # an (option, values) pair, as findscu's evaluation reads it
    counted = cmd.last("--count")
    assert counted is not None and counted.value == "4"
    assert cmd.has("--beta") and not cmd.has("--pair")
    assert cmd.last("--pair") is None and CommandLine().last("--alpha") is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--gamma"], "Unknown option --gamma"),
    (["-A"], "Unknown option -A"),
    (["-c"], "Missing value for option --count"),
    (["--pair", "x"], "Missing value for option --pair"),
])
def test_tokenizer_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(argv, OPTIONS)
    assert str(caught.value) == message


# --- @file command files ---


def test_command_file_words_quotes_and_no_escapes(tmp_path: Path) -> None:
    path = tmp_path / "args"
    path.write_text("-c  3\t'a b' \"it's\"\n'' back\\ slash \"x\"y\n", encoding="utf-8")
    assert read_command_file(str(path)) == ["-c", "3", "a b", "it's", "", "back\\", "slash",
                                            "x", "y"]


def test_command_file_keeps_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "args"
    path.write_bytes(b"-c \xc1\n")
    assert read_command_file(str(path)) == ["-c", "\udcc1"]


def test_command_files_expand_in_place_and_do_not_nest(tmp_path: Path) -> None:
    inner, outer = tmp_path / "inner", tmp_path / "outer"
    inner.write_text("-a")
    outer.write_text(f"-c 2 @{inner}")
    assert expand_command_files(["x", f"@{outer}", "@", "y"]) == [
        "x", "-c", "2", f"@{inner}", "@", "y"]


def test_missing_command_file_is_dcmtks_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(UsageError) as caught:
        parse([f"@{missing}"], OPTIONS)
    assert str(caught.value) == f"Cannot open command file '{missing}'"


# --- values ---


@pytest.mark.parametrize(("spec", "value", "expected"), [
    (unsigned("", 1, 9), "3", 3),
    (unsigned("", 1, 9), "9x", 9),
    (unsigned("", 1, 9), " +4", 4),
    (unsigned("", 1, 9), "x", "Invalid value for option --n (x)"),
    (unsigned("", 1, 9), "-3", "Invalid value for option --n (-3)"),
    (unsigned("", 1, 9), "0x5", "Invalid value for option --n (underflow: 0x5)"),
    (unsigned("", 1, 9), "10", "Invalid value for option --n (overflow: 10)"),
    (signed("", 1), "0x10", 16),
    (signed("", 1), "010", 8),
    (signed("", 1), "-0", "Invalid value for option --n (underflow: -0)"),
    (seconds(""), "0.5", 0.5),
    (seconds(""), "0", "Invalid value for option --n (underflow: 0)"),
    (seconds("", allow_zero=True), "0", 0.0),
    (seconds(""), "nan", "Invalid value for option --n (nan)"),
    (text(""), "", ""),
])
def test_value_read_and_range_checked(spec: ValueSpec, value: str, expected: object) -> None:
    if isinstance(expected, str) and expected.startswith("Invalid"):
        with pytest.raises(UsageError) as caught:
            spec.read("--n", value)
        assert str(caught.value) == expected
    else:
        assert spec.read("--n", value) == expected


def test_unsigned_scan_wraps_and_saturates_like_strtoul() -> None:
    assert scan_unsigned("-1") == (1 << 64) - 1
    assert scan_unsigned("9" * 30) == (1 << 64) - 1


@pytest.mark.parametrize(("port", "expected"), [
    ("104", 104), ("104x", 104), ("65535", 65535),
    ("0x5", "Invalid parameter value 0x5 (underflow)"),
    ("-5", "Invalid parameter value -5 (overflow)"),
    ("65536", "Invalid parameter value 65536 (overflow)"),
    ("peer", "Invalid parameter value peer"),
])
def test_port_parameter(port: str, expected: int | str) -> None:
    if isinstance(expected, int):
        assert read_port(port) == expected
    else:
        with pytest.raises(UsageError) as caught:
            read_port(port)
        assert str(caught.value) == expected


def test_log_level_names() -> None:
    assert [log_level(n) for n in ("fatal", "WARN", "trace", "off", "warning")] == [
        50, 30, 5, 60, None]


# --- texts ---


def test_help_layout() -> None:
    lines = render_help(PROGRAM, OPTIONS).split("\n")
    assert lines[:9] == [
        "$wlmd: tool v1 $", "", "tool: a made-up tool", "usage: tool [options] thing [more...]",
        "", "parameters:", "  thing                 what to work on",
        "  more                  more things", ""]
    assert "  -h      --help        print this help text and exit" in lines  # short column + 2
    assert lines[lines.index("tool options:") + 1:] == [
        "  flags:",
        "    -a    --alpha       first flag",
        "    +a    --beta        second flag",
        "  values:",
        "    -c    --count       [n]umber: integer",
        "                        a count",
        "          --pair        [x], [y]: string",
        "                        two values",
        "                        on two lines",
        "  wide:",
        "          --a-much-longer-option-name  widens its block",
        "", "",
    ]


def test_error_text() -> None:
    assert error_text(PROGRAM, "Unknown option -z") == (
        "$wlmd: tool v1 $\n\ntool: a made-up tool\nerror: Unknown option -z\n")


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_config_file_rendering() -> None:
    rendered = render_config_file(["head line"], [
        ConfigKey("thing", None, comment="what to work on", value=7),
        ConfigKey("count", 3, OPTIONS[10:11]),
        ConfigKey("colour", Colour.RED),
        ConfigKey("name", 'a "b" \\c'),
    ])
    assert rendered == (
        "# head line\n"
        "\n# what to work on\n# thing = (not set)\nthing = 7\n"
        "\n# -c, --count: a count\n# count = 3\n"
        '\n# one of: "red", "blue"\n# colour = "red"\n'
        '\n# name = "a \\"b\\" \\\\c"\n'
    )
    assert [toml_literal(v) for v in (True, 1.5, Path("/x"))] == ["true", "1.5", '"/x"']


def test_man_option_list() -> None:
    man = render_man_option_list(OPTIONS[8:11])
    assert man == (
        ".Ss tool options (flags)\n.Bl -tag -width Ds\n"
        ".It Fl a , Fl -alpha\nfirst flag\n.It Cm +a , Fl -beta\nsecond flag\n.El\n"
        ".Ss tool options (values)\n.Bl -tag -width Ds\n"
        ".It Fl c , Fl -count Ar [n]umber\na count\n.El\n"
    )
