"""The command line: every option, DCMTK's errors (checked against the real wlmscpfs), @file."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import require_dcmtk
from wlmd.cmdline.console import CommandLineExit
from wlmd.cmdline.general import TRACE
from wlmd.cmdline.option import Option
from wlmd.cmdline.tokens import read_command_file
from wlmd.config.commandline import (
    ParsedCommandLine,
    parse_command_line,
    render_help,
)
from wlmd.config.options import OPTIONS
from wlmd.config.settings import (
    CharsetMode,
    IpFamily,
    LogFormat,
    RefreshMode,
    Settings,
    TlsProfile,
    TransferSyntaxPreference,
)

NO_CONFIG = Path("/nonexistent/wlmd.conf")


def parse(*argv: str) -> ParsedCommandLine:
    return parse_command_line(list(argv), default_config=NO_CONFIG)


def failure(*argv: str) -> CommandLineExit:
    with pytest.raises(CommandLineExit) as caught:
        parse(*argv)
    return caught.value


def error_lines(stderr: str) -> list[str]:
    """The ``error: …`` lines, without DCMTK's identification header."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- every option, table-driven: (argv before the port, field, expected value) ---
CASES: list[tuple[list[str], str, object]] = [
    (["-s"], "single_process", True),
    (["-s", "--fork"], "single_process", False),
    (["-dfp", "/srv/wl"], "data_files_path", Path("/srv/wl")),
    (["-dfr"], "file_reject", False),
    (["-dfr", "-efr"], "file_reject", True),
    (["-cs1"], "return_charset", CharsetMode.ISO_IR_100),
    (["-csk"], "return_charset", CharsetMode.KEEP),
    (["-csk", "-cs0"], "return_charset", CharsetMode.NONE),
    (["-nse"], "sequence_expansion", False),
    (["-i6"], "ip_family", IpFamily.IPV6),
    (["-i0"], "ip_family", IpFamily.AUTO),
    (["-i0", "-i4"], "ip_family", IpFamily.IPV4),
    (["+xe"], "transfer_syntax", TransferSyntaxPreference.LITTLE),
    (["+xb"], "transfer_syntax", TransferSyntaxPreference.BIG),
    (["+xd"], "transfer_syntax", TransferSyntaxPreference.DEFLATED),
    (["+xi"], "transfer_syntax", TransferSyntaxPreference.IMPLICIT),
    (["+xi", "+x="], "transfer_syntax", TransferSyntaxPreference.UNCOMPRESSED),
    (["+ac"], "access_control", True),
    (["+ac", "-ac"], "access_control", False),
    (["-u"], "new_vr", False),
    (["-u", "+u"], "new_vr", True),
    (["+xd", "+cl", "9"], "compression_level", 9),
    (["-ta", "5"], "acse_timeout", 5),
    (["-ta", "0x10"], "acse_timeout", 16),  # sscanf %li reads hex
    (["-ta", "1.5"], "acse_timeout", 1),  # ... and stops at the first non-digit
    (["-td", "7"], "dimse_timeout", 7),
    (["--max-associations", "3"], "max_associations", 3),
    (["--refuse"], "refuse", True),
    (["--reject"], "reject", True),
    (["--no-fail"], "no_fail", True),
    (["--sleep-before", "2"], "sleep_before", 2),
    (["--sleep-after", "3"], "sleep_after", 3),
    (["--sleep-during", "4"], "sleep_during", 4),
    (["-pdu", "4096"], "max_pdu", 4096),
    (["-pdu", "131072"], "max_pdu", 131072),
    (["-dhl"], "host_lookup", False),
    (["-rfp", "/tmp/rq"], "request_file_path", Path("/tmp/rq")),
    (["-rfp", "/tmp/rq", "-rff", "#a_#c.txt"], "request_file_format", "#a_#c.txt"),
    (["--daemon"], "daemon", True),
    (["--pid-file", "/run/wlmd.pid"], "pid_file", Path("/run/wlmd.pid")),
    (["--index-file", "/var/cache/wlmd/i.sqlite"], "index_file", Path("/var/cache/wlmd/i.sqlite")),
    (["--user", "wlmd"], "user", "wlmd"),
    (["--group", "dicom"], "group", "dicom"),
    (["--listen-address", "::1"], "listen_address", "::1"),
    (["--refresh", "stat"], "refresh", RefreshMode.STAT),
    (["--max-associations-per-host", "4"], "max_associations_per_host", 4),
    (["--idle-timeout", "2.5"], "idle_timeout", 2.5),
    (["--hosts-allow", "/x/allow"], "hosts_allow", Path("/x/allow")),
    (["--hosts-deny", "/x/deny"], "hosts_deny", Path("/x/deny")),
    (["--min-spare-workers", "1"], "min_spare_workers", 1),
    (["--max-spare-workers", "3"], "max_spare_workers", 3),
    (["--worker-max-uses", "10"], "worker_max_uses", 10),
    (["--worker-timeout", "0.5"], "worker_timeout", 0.5),
    (["--worker-max-memory", "64"], "worker_max_memory_mb", 64),
    (["--graceful-timeout", "0"], "graceful_timeout", 0.0),
    (["--syslog"], "syslog", True),
    (["--syslog-facility", "local3"], "syslog_facility", "local3"),
    (["-ll", "debug"], "log_level", "debug"),
    (["-v"], "log_level", "info"),
    (["-q"], "log_level", "fatal"),
    (["--log-format", "json"], "log_format", LogFormat.JSON),
    (["--syslog-socket", "/tmp/log.sock"], "syslog_socket", "/tmp/log.sock"),
    (["--max-identifier-size", "1000"], "max_identifier_bytes", 1000),
    (["--max-sequence-depth", "2"], "max_sequence_depth", 2),
    (["--max-sequence-items", "5"], "max_sequence_items", 5),
    (["--max-responses", "100"], "max_responses", 100),
    (["--tls-key", "k.pem", "--tls-cert", "c.pem"], "tls_key", Path("k.pem")),
    (["--tls-key", "k.pem", "--tls-cert", "c.pem"], "tls_cert", Path("c.pem")),
    (["--tls-key", "k", "--tls-cert", "c", "--tls-ca-file", "ca"], "tls_ca_file", Path("ca")),
    (["--tls-key", "k", "--tls-cert", "c", "--tls-ca-file", "ca", "--tls-require-peer-cert"],
     "tls_require_peer_cert", True),
    (["--tls-key", "k", "--tls-cert", "c", "--tls-profile", "bcp195"], "tls_profile",
     TlsProfile.BCP195),
    (["--hl7-listen", "2575"], "hl7_listen", "2575"),
    (["--hl7-listen", "[::1]:2575"], "hl7_listen", "[::1]:2575"),
    (["--hl7-mapping", "m.toml"], "hl7_mapping", Path("m.toml")),
    (["--hl7-journal", "/var/lib/j"], "hl7_journal", Path("/var/lib/j")),
    (["--hl7-tls"], "hl7_tls", True),
    (["--hl7-allow-senders", "10.0.0.0/8"], "hl7_allow_senders", "10.0.0.0/8"),
    (["--hl7-allow-applications", "RIS^HOSP"], "hl7_allow_applications", "RIS^HOSP"),
    (["--hl7-max-message-size", "4096"], "hl7_max_message_bytes", 4096),
    (["--hl7-max-rate", "50"], "hl7_max_rate", 50.0),
    (["--hl7-max-connections", "4"], "hl7_max_connections", 4),
    (["--mpps"], "mpps", True),
    (["--http-listen", "127.0.0.1:8080"], "http_listen", "127.0.0.1:8080"),
    (["--http-tokens", "/etc/wlmd/tokens"], "http_tokens", Path("/etc/wlmd/tokens")),
    (["--http-tls", "--tls-key", "k", "--tls-cert", "c"], "http_tls", True),
    (["--http-client-cert-scope", "read"], "http_client_cert_scope", "read"),
    (["--http-max-body", "4096"], "http_max_body", 4096),
    (["--http-rate", "5"], "http_rate", 5.0),
    (["--http-max-connections", "8"], "http_max_connections", 8),
    (["--http-workers", "3"], "http_workers", 3),
    (["--mpps", "--mpps-path", "/srv/mpps"], "mpps_path", Path("/srv/mpps")),
]


@pytest.mark.parametrize(("args", "field", "expected"), CASES)
def test_option_sets_its_field(args: list[str], field: str, expected: object) -> None:
    settings = parse(*args, "1104").settings
    assert getattr(settings, field) == expected
    assert settings.port == 1104


def test_every_settings_field_has_an_option_and_a_case() -> None:
    # mpps_policy (tests/unit/test_mpps_policy.py) and policy are tables in wlmd.conf only
    fields = {f for f in Settings.__dataclass_fields__
              if f not in ("port", "config_file", "mpps_policy", "policy")}
    assert fields <= {o.field for o in OPTIONS}
    assert fields <= {field for _, field, _ in CASES}


def outcome(*argv: str) -> object:
    """The parse result, or the error text: equal outcomes mean equal behaviour."""
    try:
        return parse(*argv)
    except CommandLineExit as exc:
        return exc.stderr


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.short], ids=lambda o: o.short)
def test_short_and_long_spellings_are_the_same_option(option: Option) -> None:
    for value in ([] if option.value is None else ["9", "x"]):
        assert outcome(option.short, value, "104") == outcome(option.long, value, "104")
    if option.value is None:
        assert outcome(option.short, "104") == outcome(option.long, "104")


def test_defaults_are_the_settings_defaults() -> None:
    parsed = parse("104")
    assert parsed.settings == Settings(port=104)
    assert parsed.log_level == logging.WARNING
    assert (parsed.log_config, parsed.check_config, parsed.arguments) == (None, False, None)


@pytest.mark.parametrize(("args", "level"), [
    (["-q"], logging.CRITICAL), (["-v"], logging.INFO), (["-d"], logging.DEBUG),
    (["-d", "-q", "-v"], logging.INFO), (["-v", "-d"], logging.DEBUG),
    (["-ll", "trace"], TRACE), (["-ll", "ERROR"], logging.ERROR),
    (["-ll", "Warn"], logging.WARNING),
    (["-ll", "fatal"], logging.CRITICAL), (["-ll", "off"], logging.CRITICAL + 10),
])
def test_log_levels(args: list[str], level: int) -> None:
    assert parse(*args, "104").log_level == level


def test_log_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "log.ini"
    conf.write_text("[loggers]\n")
    assert parse("-lc", str(conf), "104").log_config == conf


def test_arguments_are_expanded_to_long_names(tmp_path: Path) -> None:
    parsed = parse("--arguments", "-v", "-pdu", "8192", "104")
    assert parsed.arguments == ("--arguments", "--verbose", "--max-pdu", "8192", "104")
    assert parsed.arguments_message("wlmscpfs") == (
        "calling 'wlmscpfs' with 5 arguments: "
        "'--arguments' '--verbose' '--max-pdu' '8192' '104' \n")


def test_check_config_needs_no_port() -> None:
    parsed = parse("--check-config")
    assert parsed.check_config and parsed.settings.port == 104


def test_wlmd_cross_checks() -> None:
    assert error_lines(failure("--min-spare-workers", "5", "--max-spare-workers", "2",
                               "104").stderr) == [
        "error: --min-spare-workers (5) exceeds --max-spare-workers (2)"]
    assert error_lines(failure("--tls-key", "k", "104").stderr) == [
        "error: --tls-key only allowed with --tls-cert"]
    assert error_lines(failure("--listen-address", "localhost", "104").stderr) == [
        "error: Invalid value for option --listen-address (localhost)"]
    assert error_lines(failure("--worker-timeout", "0", "104").stderr) == [
        "error: Invalid value for option --worker-timeout (underflow: 0)"]


# --- @file command files ---


def test_command_file_quotes_and_white_space(tmp_path: Path) -> None:
    cmd = tmp_path / "cmd.txt"
    cmd.write_text("-dfp  'my dir'\t-rfp \"x y\"\n  -rff '' '@inner'\n")
    assert read_command_file(str(cmd)) == ["-dfp", "my dir", "-rfp", "x y", "-rff", "", "@inner"]


def test_command_file_expands_in_place_without_nesting(tmp_path: Path) -> None:
    cmd = tmp_path / "cmd.txt"
    cmd.write_text("-dfp '/srv/a b' -s")
    settings = parse(f"@{cmd}", "-cs1", "104").settings
    assert settings.data_files_path == Path("/srv/a b")
    assert settings.single_process and settings.return_charset is CharsetMode.ISO_IR_100
    cmd.write_text(f"@{cmd}")  # a command file cannot contain another one: "@…" is a parameter
    assert error_lines(failure(f"@{cmd}", "104").stderr) == ["error: Too many parameters"]


def test_help_and_version_exit_zero_on_stdout() -> None:
    for argv in ([], ["-h"], ["--help", "104"], ["--version"]):
        with pytest.raises(CommandLineExit) as caught:
            parse(*argv)
        assert caught.value.code == 0 and caught.value.stderr == ""
        assert caught.value.stdout.startswith("$wlmd: wlmd v")
    assert "External libraries used:\n- pydicom, Version " in failure("--version").stdout


# --- against the real wlmscpfs: same error line, same exit code ---

DCMTK_ERRORS = [
    ["--bogus", "104"], ["-x", "104"], ["104", "105"], ["-pdu"], ["-pdu", "abc", "104"],
    ["-pdu", "100", "104"], ["-pdu", "200000", "104"], ["-pdu", "0x1000", "104"],
    ["-pdu", "-5000", "104"], ["-ta"], ["-ta", "x", "104"], ["-ta", "-5", "104"],
    ["-ta", "0", "104"], ["-ta", "-0", "104"], ["-td", "0", "104"],
    ["--max-associations", "0", "104"], ["+cl", "10", "104"], ["+cl", "-1", "104"],
    ["+xd", "+cl", "10", "104"], ["+xd", "+cl", "-1", "104"], ["+cl", "3", "+xd", "+xe", "104"],
    ["--sleep-before", "-1", "104"], ["--sleep-after", "x", "104"], ["-rff", "x", "104"],
    ["-rfp", "", "-rff", "a", "104"], ["-ll", "foo", "104"], ["-ll"], ["-ll", "warning", "104"],
    ["-lc", "/nonexistent", "104"], ["-v", "-ll", "info", "104"],
    ["-ll", "info", "-lc", "/etc/passwd", "104"], ["-v", "-lc", "/etc/passwd", "104"],
    ["abc"], ["0"], ["70000"], ["-1"], ["-v"], ["+xe"], ["-rfp"], ["--arguments"],
    ["-ta", "5", "-ta", "x", "104"], ["-ta", "x", "-ta", "5", "-rff", "y", "104"],
    ["-pdu", "x", "0"], ["-rff", "x", "-pdu", "3", "104"], ["--help", "--bogus"],
    ["--version", "--bogus"], ["-q", "-pdu", "100", "104"], ["-ll", "fatal", "-pdu", "100", "104"],
    ["-ll", "off", "-rff", "x", "104"], ["-ll", "error", "-pdu", "100", "104"],
    ["-q", "104", "105"], ["-s", "-ll", "debug", "104", "-rff", "a"], ["-dfp"],
    ["-ll", "trace", "-ll", "foo", "104"], ["-q", "-v", "-rff", "x", "104"],
]


@pytest.mark.interop
@pytest.mark.parametrize("argv", DCMTK_ERRORS, ids=" ".join)
def test_errors_match_wlmscpfs(argv: list[str], tmp_path: Path) -> None:
    require_dcmtk("wlmscpfs")
    real = subprocess.run(["wlmscpfs", *argv], capture_output=True, text=True, timeout=10,
                          cwd=tmp_path)
    ours = failure(*argv)
    assert ours.code == real.returncode == 1
    assert error_lines(ours.stderr) == error_lines(real.stderr)
    assert (ours.stderr == "") == (real.stderr == "")


@pytest.mark.interop
def test_command_file_errors_match_wlmscpfs(tmp_path: Path) -> None:
    require_dcmtk("wlmscpfs")
    missing = str(tmp_path / "missing.txt")
    real = subprocess.run(["wlmscpfs", f"@{missing}"], capture_output=True, text=True, timeout=10)
    ours = failure(f"@{missing}")
    assert ours.code == real.returncode == 1
    assert error_lines(ours.stderr) == error_lines(real.stderr) == [
        f"error: Cannot open command file '{missing}'"]


@pytest.mark.interop
def test_help_is_laid_out_like_wlmscpfs() -> None:
    require_dcmtk("wlmscpfs")
    real = subprocess.run(["wlmscpfs", "--help"], capture_output=True, text=True, timeout=10)
    header = real.stdout.splitlines()[0]
    shared: list[Option] = [o for o in OPTIONS if o.in_wlmscpfs]
    assert render_help(shared, "wlmscpfs", header) == real.stdout
    assert render_help().count("\n") > real.stdout.count("\n")
