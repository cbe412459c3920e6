"""The man pages: they render without warnings, list every option and key, and stay generated."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.processes import require_tool
from wlmd.config.file import CONFIG_KEYS, ConfigError, load_config, render_config
from wlmd.config.options import render_man_options
from wlmd.wlmctl.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
MAN = REPO / "man"
PAGES = ("wlmd.8", "wlmd.conf.5")
GROFF = ("groff", "-man", "-Tutf8", "-ww", "-z")
# An option line of `wlmd --help`: an optional short spelling, then the long one.
HELP_OPTION = re.compile(r"^\s+(?:([-+]\S+)\s+)?(--[a-z0-9-]+)(?:\s|$)")


def load_renderer() -> ModuleType:
    """man/render.py, which is a script rather than part of the package."""
    spec = importlib.util.spec_from_file_location("man_render", MAN / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = load_renderer()


def require_groff() -> None:
    """groff must be there under CI (.ci/run installs groff-base)."""
    require_tool("groff", "groff-base")


def groff_warnings(page: Path) -> str:
    """What groff prints on standard error while formatting ``page`` with every warning on."""
    result = subprocess.run([*GROFF, str(page)], capture_output=True, text=True, timeout=60,
                            check=False)
    return result.stderr + ("" if result.returncode == 0 else f"exit {result.returncode}\n")


def help_spellings() -> set[str]:
    """Every option spelling, short and long, that ``python -m wlmd --help`` prints."""
    result = subprocess.run([sys.executable, "-m", "wlmd", "--help"], capture_output=True,
                            text=True, timeout=60, check=True, cwd=REPO)
    spellings: set[str] = set()
    for line in result.stdout.splitlines():
        match = HELP_OPTION.match(line)
        if match:
            spellings.update(s for s in match.groups() if s)
    return spellings


def page_text(name: str) -> str:
    return (MAN / name).read_text(encoding="utf-8")


def item_lines(text: str) -> str:
    """The ``.It`` lines of a page: the heads of its lists."""
    return "\n".join(line for line in text.splitlines() if line.startswith(".It "))


def mentions(text: str, spelling: str) -> bool:
    """True if ``text`` (mdoc) names option ``spelling`` as a whole word."""
    token = RENDER.mdoc_flag(spelling)
    return re.search(rf"(?<!\S){re.escape(token)}(?!\S)", text) is not None


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page: str) -> None:
    require_groff()
    assert groff_warnings(MAN / page) == ""


def test_groff_check_reports_a_broken_page(tmp_path: Path) -> None:
    require_groff()
    broken = tmp_path / "broken.8"
    broken.write_text(page_text("wlmd.8").replace(".Sh FILES", ".Shh FILES"))
    assert "macro 'Shh' not defined" in groff_warnings(broken)


def test_help_lists_the_options_this_test_expects() -> None:
    spellings = help_spellings()
    assert {"-h", "--help", "-dfp", "--data-files-path", "+x=", "--prefer-uncompr",
            "--max-associations", "--tls-require-peer-cert"} <= spellings
    assert len(spellings) > 100


def test_every_help_option_is_a_list_item_of_wlmd_8() -> None:
    items = item_lines(page_text("wlmd.8"))
    missing = sorted(s for s in help_spellings() if not mentions(items, s))
    assert missing == []


@pytest.mark.parametrize("page", PAGES)
def test_every_option_a_page_names_exists(page: str) -> None:
    known = help_spellings()
    named = {"-" + flag for flag in re.findall(r"\bFl (\S+)", page_text(page))}
    named |= set(re.findall(r"\bCm (\+\S+)", page_text(page)))
    assert sorted(named - known) == []


def test_every_config_key_is_a_list_item_of_wlmd_conf_5() -> None:
    items = set(re.findall(r"^\.It Ic (\w+)$", page_text("wlmd.conf.5"), re.MULTILINE))
    shipped = set(re.findall(r"^# (\w+) = ", render_config(), re.MULTILINE))
    assert shipped == set(CONFIG_KEYS)
    assert items == set(CONFIG_KEYS)


@pytest.mark.parametrize(("page", "render"), [
    ("wlmd.8", render_man_options),
    ("wlmd.conf.5", RENDER.render_man_config_keys),
])
def test_generated_part_is_in_sync_with_the_option_table(page: str, render: object) -> None:
    assert RENDER.generated_part(page_text(page)) == render()  # type: ignore[operator]


def test_splice_replaces_only_the_generated_part() -> None:
    page = page_text("wlmd.conf.5")
    spliced = RENDER.splice(page, ".Pp\nreplaced\n")
    assert RENDER.generated_part(spliced) == ".Pp\nreplaced\n"
    assert RENDER.splice(spliced, RENDER.generated_part(page)) == page
    with pytest.raises(ValueError):
        RENDER.generated_part(page.replace(RENDER.END, ""))


def test_key_entries_state_type_default_and_range() -> None:
    keys = RENDER.render_man_config_keys()
    assert ".It Ic max_pdu\nType: integer, 4096 to 131072.\nDefault:\n.Li 16384 .\n" in keys
    assert ".Fl pdu , Fl -max-pdu .\n" in keys
    assert ".Li \\(dqnone\\(dq" in keys and ".Cm +xd , Fl -prefer-deflated No sets" in keys
    assert "Default: not set (unlimited)." in keys  # dimse_timeout


def test_config_example_of_wlmd_conf_5_loads(tmp_path: Path) -> None:
    page = page_text("wlmd.conf.5")
    example = re.search(r"^\.Bd -literal -offset indent\n(port = .*?)^\.Ed$", page,
                        re.MULTILINE | re.DOTALL)
    assert example is not None
    path = tmp_path / "wlmd.conf"
    path.write_text(example[1])
    values = load_config(path)
    assert values["port"] == 104 and values["access_control"] is True


def test_error_example_of_wlmd_conf_5_is_what_wlmd_says(tmp_path: Path) -> None:
    shown = re.search(r"^\.Dl /etc/wlmd/wlmd\.conf(:3: .*)$", page_text("wlmd.conf.5"),
                      re.MULTILINE)
    assert shown is not None
    path = tmp_path / "wlmd.conf"
    path.write_text("# settings\nport = 104\nmax_pdu = 100\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}{shown[1]}"


def findscu_help_spellings() -> set[str]:
    """Every option spelling that ``python -m wlmd.findscu --help`` prints."""
    result = subprocess.run([sys.executable, "-m", "wlmd.findscu", "--help"],
                            capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    return {s for line in result.stdout.splitlines() if (match := HELP_OPTION.match(line))
            for s in match.groups() if s}


def test_findscu_page_renders_without_warnings() -> None:
    require_groff()
    assert groff_warnings(MAN / "wlmd-findscu.1") == ""


def test_every_findscu_help_option_is_in_wlmd_findscu_1() -> None:
    """man/wlmd-findscu.1 (man macros) writes each option as ``\\-x`` in a bold ``.B`` line."""
    spellings = findscu_help_spellings()
    assert {"-aec", "--call", "-Xs", "+tls", "--cancel"} <= spellings
    heads = " ".join(line for line in page_text("wlmd-findscu.1").splitlines()
                     if line.startswith(".B "))
    words = set(re.split(r"[\s,]+", heads.replace("\\-", "-")))
    assert sorted(spellings - words) == []


def wlmctl_options(*command: str) -> set[str]:
    """The long options that ``python -m wlmd.wlmctl [COMMAND] --help`` prints."""
    result = subprocess.run([sys.executable, "-m", "wlmd.wlmctl", *command, "--help"],
                            capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", result.stdout)) - {"--help"}


def test_wlmctl_page_renders_without_warnings() -> None:
    require_groff()
    assert groff_warnings(MAN / "wlmctl.8") == ""


def test_every_wlmctl_subcommand_and_option_is_documented() -> None:
    """Each subcommand of the registry is an ``.It Cm`` item naming all of its options."""
    subparsers = next(action for action in build_parser()._actions
                      if action.dest == "command")
    commands = set(subparsers.choices)  # type: ignore[union-attr]
    assert {"add", "list", "show", "rm", "set-status", "lint", "explain", "expire"} <= commands
    items = {line.split()[2]: line for line in page_text("wlmctl.8").splitlines()
             if line.startswith(".It Cm ")}
    assert sorted(commands - set(items)) == []
    for command in commands:
        documented = {f"--{flag}" for flag in re.findall(r"Fl -([a-z-]+)", items[command])}
        assert sorted(wlmctl_options(command) - documented) == [], command
    top = page_text("wlmctl.8").split(".Sh SUBCOMMANDS")[0]
    assert all(f"Fl {option[1:]}" in top for option in wlmctl_options())
