"""The DCMTK-style command line: options anywhere, @files, rightmost wins, error texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from wlmd.cmdline.console import UsageError
from wlmd.cmdline.values import unsigned
from wlmd.findscu.options import parse, render_help


def test_options_anywhere_and_params_in_order() -> None:
    cmd = parse(["host", "-aec", "X", "104", "-k", "A=1", "q.dcm", "-k", "B"])
    assert cmd.params == ["host", "104", "q.dcm"]
    assert cmd.values("--key") == [("A=1",), ("B",)]
    assert cmd.values("--call") == [("X",)]


def test_rightmost_of_exclusive_options_wins() -> None:
    cmd = parse(["-P", "-W", "-S", "h", "1"])
    assert cmd.last("--worklist", "--patient", "--study", "--psonly") == ("--study", ())


def test_two_argument_option() -> None:
    assert parse(["+tls", "k.pem", "c.pem"]).values("--enable-tls") == [("k.pem", "c.pem")]


def test_value_is_taken_even_if_it_looks_like_an_option() -> None:
    assert parse(["--repeat", "-aec"]).values("--repeat") == [("-aec",)]


def test_unknown_option() -> None:
    with pytest.raises(UsageError, match=r"^Unknown option --bogus$"):
        parse(["--bogus"])


def test_missing_value() -> None:
    with pytest.raises(UsageError, match="Missing value for option --repeat"):
        parse(["--repeat"])


def test_command_file_is_expanded_with_quotes(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text('-aec OFFIS\n-k "PatientName=A B"\n')
    cmd = parse([f"@{tmp_path / 'a.txt'}", "h", "1"])
    assert cmd.values("--key") == [("PatientName=A B",)]
    assert cmd.expanded == ["--call", "OFFIS", "--key", "PatientName=A B", "h", "1"]


@pytest.mark.parametrize(("text", "message"), [
    ("x", "Invalid value for option --repeat (x)"),
    ("0", "Invalid value for option --repeat (underflow: 0)"),
    ("9", "Invalid value for option --repeat (overflow: 9)"),
])
def test_integer_values(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        unsigned("[n]umber: integer", 1, 8).read("--repeat", text)
    assert str(info.value) == message


def test_help_columns() -> None:
    lines = render_help().splitlines()
    assert "  -h      --help                print this help text and exit" in lines
    assert "    -k    --key                 [k]ey: gggg,eeee=\"str\", path or dict. name=\"str\"" \
        in lines
    assert "          --request-sni         [s]erver name: string" in lines
