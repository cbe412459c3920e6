"""The TOML config file: keys from the option table, file:line errors, precedence, round trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wlmd.cmdline.console import CommandLineExit
from wlmd.cmdline.values import scan_signed, scan_unsigned
from wlmd.config.commandline import parse_command_line
from wlmd.config.file import CONFIG_KEYS, ConfigError, dump_config, load_config, render_config
from wlmd.config.options import OPTIONS, render_man_options
from wlmd.config.settings import CharsetMode, IpFamily, Settings, TransferSyntaxPreference

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wlmd.conf"
    path.write_text(text)
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_shipped_config_is_generated_from_the_table() -> None:
    assert (REPO / "etc" / "wlmd.conf").read_text() == render_config()


def test_shipped_config_sets_only_the_packaged_values_and_names_every_key() -> None:
    text = render_config()
    loaded = load_config(REPO / "etc" / "wlmd.conf")
    assert loaded == {"port": 104, "data_files_path": Path("/var/lib/wlmd/worklists"),
                      "index_file": Path("/var/cache/wlmd/index.sqlite")}
    for key in CONFIG_KEYS:
        assert f"# {key} = " in text


def test_every_key_uncommented_at_its_default_loads(tmp_path: Path) -> None:
    lines = [line[2:] for line in render_config().splitlines()
             if re.match(r"# \w+ = ", line) and "(not set)" not in line]
    values = load_config(write(tmp_path, "port = 104\n" + "\n".join(lines) + "\n"))
    defaults = Settings(port=104)
    assert values == {k: getattr(defaults, k) for k in values}
    unset = {key for key in CONFIG_KEYS if getattr(defaults, key, None) is None}
    assert set(values) | unset >= set(CONFIG_KEYS)  # only the None defaults are left out


def test_round_trip_of_non_default_settings(tmp_path: Path) -> None:
    settings = Settings(
        port=2104, single_process=True, data_files_path=Path("/srv/wl"), file_reject=False,
        return_charset=CharsetMode.KEEP, ip_family=IpFamily.AUTO, listen_address="::1",
        transfer_syntax=TransferSyntaxPreference.DEFLATED, compression_level=3, acse_timeout=7,
        dimse_timeout=9, max_pdu=65536, request_file_path=Path("/tmp/rq"),
        request_file_format="#a.txt", syslog=True, syslog_facility="local4", worker_timeout=2.5,
        max_responses=10, tls_key=Path("k.pem"), tls_cert=Path("c.pem"),
    )
    values = {k: getattr(settings, k) for k in CONFIG_KEYS}
    loaded = load_config(write(tmp_path, dump_config(values)))
    assert Settings(**loaded) == settings  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "message"), [
    ("port = 104\nmax_pdu = 100\n", ":2: max_pdu: underflow: 100 (allowed: 4096..131072)"),
    ("\n\nbogus = 1\n", ":3: unknown setting 'bogus'"),
    ("return_charset = \"latin1\"\n",
     ":1: return_charset: expected one of 'none', 'iso-ir-100', 'keep'"),
    ("# c\nfile_reject = 1\n", ":2: file_reject: expected true or false"),
    ("acse_timeout = \"30\"\n", ":1: acse_timeout: expected a number"),
    ("max_associations = 1.5\n", ":1: max_associations: expected an integer"),
    ("syslog_facility = \"nope\"\n", ":1: syslog_facility: invalid value 'nope'"),
    ("a = 1\nport = = 3\n", ":2: Invalid value"),
    ("[section]\nx = 1\n", ":1: unknown setting 'section'"),
    ("  'max_pdu' = 200000\n", ":1: max_pdu: overflow: 200000 (allowed: 4096..131072)"),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}{message}"


def test_unreadable_config(tmp_path: Path) -> None:
    assert config_error(tmp_path / "missing.conf").startswith(f"{tmp_path}/missing.conf: cannot")


def test_precedence_defaults_config_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 2104\nmax_pdu = 8192\nreturn_charset = "keep"\n'
                           'transfer_syntax = "deflated"\n')
    parsed = parse_command_line(["--config", str(path), "-cs1", "+cl", "2"],
                                default_config=Path("/nonexistent"))
    settings = parsed.settings
    assert (settings.port, settings.max_pdu, settings.return_charset) == (
        2104, 8192, CharsetMode.ISO_IR_100)
    assert settings.compression_level == 2  # +cl is allowed: the file chose +xd
    assert settings.acse_timeout == 30 and settings.config_file == path
    assert parse_command_line(["3104"], default_config=path).settings.port == 3104


def test_default_config_is_read_only_when_present(tmp_path: Path) -> None:
    assert parse_command_line(["104"], default_config=tmp_path / "no").settings.config_file is None
    path = write(tmp_path, "max_pdu = 8192\n")
    assert parse_command_line(["104"], default_config=path).settings.max_pdu == 8192


def test_config_error_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "max_pdu = 1\n")
    with pytest.raises(CommandLineExit) as caught:
        parse_command_line(["--check-config", "--config", str(path)])
    assert caught.value.code == 1
    assert caught.value.stderr.endswith(
        f"error: {path}:1: max_pdu: underflow: 1 (allowed: 4096..131072)\n")


def test_sscanf_number_reading() -> None:
    assert [scan_unsigned(t) for t in ("104", " +7x", "0x10", "-1", "", "abc")] == [
        104, 7, 0, (1 << 64) - 1, None, None]
    assert [scan_signed(t) for t in ("010", "0x1F", "-5", "9" * 30, "0x")] == [
        8, 31, -5, (1 << 63) - 1, 0]


def test_man_page_lists_every_option() -> None:
    man = render_man_options()
    for option in OPTIONS:
        assert f"Fl {option.long[1:]}" in man
    assert ".It Fl pdu , Fl -max-pdu Ar [n]umber of bytes" in man
    assert ".It Cm +xe , Fl -prefer-little" in man
    assert man.count(".Bl") == man.count(".El")
