"""Logging: DCMTK-style stderr lines, levels, syslog on a real datagram socket, -lc files."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import require_dcmtk
from wlmd.cmdline.general import TRACE
from wlmd.config.commandline import parse_command_line
from wlmd.config.logs import LogConfigError, configure_logging, log_always, syslog_address
from wlmd.config.settings import Settings
from wlmd.daemon.connection import log_association
from wlmd.dicom.types import AssociationReport, Outcome

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def emit_all(logger: logging.Logger) -> None:
    logger.critical("fatal one")
    logger.error("error one")
    logger.warning("warn one")
    logger.info("info one")
    logger.debug("debug one")
    logger.log(TRACE, "trace one")


@pytest.mark.parametrize(("args", "expected"), [
    ([], ["F: fatal one", "E: error one", "W: warn one"]),
    (["-q"], ["F: fatal one"]),
    (["-v"], ["F: fatal one", "E: error one", "W: warn one", "I: info one"]),
    (["-d"], ["F: fatal one", "E: error one", "W: warn one", "I: info one", "D: debug one"]),
    (["-ll", "trace"], ["F: fatal one", "E: error one", "W: warn one", "I: info one",
                        "D: debug one", "T: trace one"]),
    (["-ll", "off"], []),
])
def test_levels_and_dcmtk_prefixes(args: list[str], expected: list[str]) -> None:
    parsed = parse_command_line([*args, "104"], default_config=Path("/nonexistent"))
    stream = io.StringIO()
    configure_logging(parsed.settings, parsed.log_level, stream=stream)
    emit_all(logging.getLogger("wlmd.test"))
    assert stream.getvalue().splitlines() == expected


def test_arguments_line_is_logged_whatever_the_level() -> None:
    parsed = parse_command_line(["-q", "--arguments", "104"], default_config=Path("/nonexistent"))
    stream = io.StringIO()
    configure_logging(parsed.settings, parsed.log_level, stream=stream)
    log_always(parsed.arguments_message("wlmscpfs") or "")
    assert stream.getvalue() == (
        "I: calling 'wlmscpfs' with 3 arguments: '--quiet' '--arguments' '104' \nI: \n")


@pytest.mark.interop
def test_arguments_line_matches_wlmscpfs(tmp_path: Path) -> None:
    """wlmscpfs prints the line, then fails on the missing data directory: no port is bound."""
    require_dcmtk("wlmscpfs")
    argv = ["--arguments", "-q", "-dfp", str(tmp_path / "missing"), "104"]
    real = subprocess.run(["wlmscpfs", *argv], capture_output=True, text=True, timeout=10)
    parsed = parse_command_line(argv, default_config=Path("/nonexistent"))
    stream = io.StringIO()
    configure_logging(parsed.settings, parsed.log_level, stream=stream)
    log_always(parsed.arguments_message("wlmscpfs") or "")
    assert real.stderr == stream.getvalue()


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings(port=104), logging.WARNING, stream=first)
    configure_logging(Settings(port=104), logging.INFO, stream=second)
    logging.getLogger("wlmd").info("after")
    assert (first.getvalue(), second.getvalue()) == ("", "I: after\n")


def test_syslog_on_a_datagram_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(5)
        settings = Settings(port=104, syslog=True, syslog_facility="local3",
                            syslog_socket=address)
        configure_logging(settings, logging.INFO)
        logging.getLogger("wlmd").warning("disk %s", "full")
        logging.getLogger("wlmd").debug("not sent")
        logging.getLogger("wlmd").info("two\nlines")
        first, second = server.recv(4096), server.recv(4096)
    # priority = facility local3 (19) * 8 + severity (warning 4, info 6)
    assert first == f"<156>wlmd[{os.getpid()}]: disk full\x00".encode()
    assert second == f"<158>wlmd[{os.getpid()}]: two | lines\x00".encode()


def test_syslog_default_level_keeps_the_association_lines(tmp_path: Path) -> None:
    """A daemon at the default level (warnings) still sends its one line per association."""
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(5)
        configure_logging(Settings(port=104, syslog=True, syslog_socket=address), logging.WARNING)
        logging.getLogger("wlmd.worklist.store").info("not sent: an ordinary info line")
        logging.getLogger("wlmd.associations").info("association from 127.0.0.1:5000")
        assert b"association from 127.0.0.1:5000" in server.recv(4096)
        configure_logging(Settings(port=104, syslog=True, syslog_socket=address), logging.ERROR)
        logging.getLogger("wlmd.associations").info("not sent: -ll error")
        logging.getLogger("wlmd").error("an error")
        assert b"an error" in server.recv(4096)  # the association line was not sent before it


def test_syslog_receiver_that_stops_reading_never_blocks_logging(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(address)
        configure_logging(Settings(port=104, syslog=True, syslog_socket=address), logging.INFO)
        handler = logging.getLogger().handlers[0]
        started = time.monotonic()
        for n in range(5000):  # far more than the receive queue holds; nobody reads
            logging.getLogger("wlmd").warning("line %d", n)
        assert time.monotonic() - started < 5
        assert handler.dropped > 0  # type: ignore[attr-defined]


def test_syslog_socket_missing_is_an_error(tmp_path: Path) -> None:
    settings = Settings(port=104, syslog=True, syslog_socket=str(tmp_path / "none"))
    with pytest.raises(LogConfigError, match="cannot open syslog socket"):
        configure_logging(settings, logging.INFO)


def test_syslog_addresses() -> None:
    assert syslog_address("/dev/log") == "/dev/log"
    assert syslog_address("loghost:1514") == ("loghost", 1514)
    assert syslog_address("[::1]:514") == ("::1", 514)
    assert syslog_address("loghost") == ("loghost", 514)


def test_shipped_example_log_config(tmp_path: Path) -> None:
    text = (REPO / "etc" / "logging.conf").read_text().replace(
        "/var/log/wlmd/wlmd.log", str(tmp_path / "wlmd.log")).replace("sys.stderr", "sys.stdout")
    conf = tmp_path / "logging.conf"
    conf.write_text(text)
    code = (
        "import logging, pathlib; from wlmd.config.logs import configure_logging; "
        "from wlmd.config.settings import Settings; "
        f"configure_logging(Settings(port=104), 0, pathlib.Path({str(conf)!r})); "
        "logging.getLogger('wlmd').info('hello'); logging.getLogger('wlmd').debug('detail')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, cwd=REPO, check=True)
    assert out.stdout == "I: hello\n"
    logged = (tmp_path / "wlmd.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in logged] == ["hello", "detail"]


def test_dict_config_json_and_bad_files(tmp_path: Path) -> None:
    log_file = tmp_path / "out.log"
    conf = tmp_path / "log.json"
    conf.write_text(json.dumps({
        "version": 1,
        "handlers": {"f": {"class": "logging.FileHandler", "filename": str(log_file)}},
        "root": {"level": "INFO", "handlers": ["f"]},
    }))
    configure_logging(Settings(port=104), logging.WARNING, conf)
    logging.getLogger("wlmd").info("via json")
    logging.getLogger().handlers[0].flush()
    assert log_file.read_text() == "via json\n"
    bad = tmp_path / "bad.ini"
    bad.write_text("[loggers]\nkeys = root\n")
    with pytest.raises(LogConfigError, match="not valid"):
        configure_logging(Settings(port=104), logging.WARNING, bad)


def test_stderr_default_level_keeps_the_association_lines() -> None:
    """`journalctl -u wlmd` shows one line per association with the shipped configuration."""
    stream = io.StringIO()
    configure_logging(Settings(port=104), logging.WARNING, stream=stream)
    logging.getLogger("wlmd.store").info("not shown: an ordinary info line")
    logging.getLogger("wlmd.associations").info("association from 127.0.0.1:5000")
    assert stream.getvalue() == "I: association from 127.0.0.1:5000\n"


def test_the_association_line_and_where_it_comes_from() -> None:
    """The supervisor's line, word for word, from a record that names ``log_association``."""
    stream = io.StringIO()
    configure_logging(Settings(port=104), logging.WARNING, stream=stream)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger().addHandler(Keep())  # the fixture restores the root's handlers
    report = AssociationReport(Outcome.RELEASED, calling_ae="CT1", called_ae="WL", queries=2,
                               matches=3, match_counts=[1, 2], detail="peer closed")
    log_association(report, ("10.0.0.5", 4100), time.monotonic() - 0.25, worker_pid=77)
    line = stream.getvalue()
    assert line.startswith("I: association from 10.0.0.5:4100 calling='CT1' called='WL' "
                           "worker=77 outcome=released queries=2 matches=1+2 duration=0.2")
    assert line.endswith("s (peer closed)\n")
    (record,) = records
    assert (record.name, record.funcName, record.filename) == (
        "wlmd.associations", "log_association", "connection.py")


def test_no_association_line_when_its_channel_is_off() -> None:
    stream = io.StringIO()
    configure_logging(Settings(port=104), logging.WARNING, stream=stream)
    channel = logging.getLogger("wlmd.associations")
    channel.setLevel(logging.WARNING)
    try:
        log_association(AssociationReport(Outcome.CLOSED), ("10.0.0.5", 4100), time.monotonic())
    finally:
        channel.setLevel(logging.NOTSET)
    assert stream.getvalue() == ""


JOURNAL_PROBE = (
    "import logging; from wlmd.config.logs import configure_logging; "
    "from wlmd.config.commandline import parse_command_line; "
    "parsed = parse_command_line(__import__('sys').argv[1:]); "
    "configure_logging(parsed.settings, parsed.log_level); "
    "logging.getLogger('wlmd').error('bad'); logging.getLogger('wlmd').warning('odd\\nfile'); "
    "logging.getLogger('wlmd.associations').info('association'); "
    "logging.getLogger('wlmd').info('detail')"
)


def run_with_stderr_file(tmp_path: Path, journal: bool, *args: str) -> list[str]:
    """Run the probe with stderr on a file; with ``journal`` JOURNAL_STREAM names that file."""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        status = os.fstat(stderr.fileno())
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        subprocess.run([sys.executable, "-c", JOURNAL_PROBE, *args, "104"], stderr=stderr,
                       env=env, cwd=REPO, timeout=30, check=True)
    return log.read_text().splitlines()


def test_journal_stream_gets_syslog_priorities(tmp_path: Path) -> None:
    """With stderr connected to journald each line carries its priority, so -p filters."""
    assert run_with_stderr_file(tmp_path, True, "--config", "/dev/null") == [
        "<3>E: bad", "<4>W: odd", "<4>W: file", "<6>I: association"]


def test_no_priorities_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    """JOURNAL_STREAM inherited by a process whose stderr went elsewhere is ignored."""
    lines = run_with_stderr_file(tmp_path, False, "--config", "/dev/null")
    assert lines == ["E: bad", "W: odd", "W: file", "I: association"]


def test_log_level_and_json_format_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "wlmd.conf"
    config.write_text('log_level = "info"\nlog_format = "json"\n')
    lines = run_with_stderr_file(tmp_path, True, "--config", str(config))
    priorities = [line[:3] for line in lines]
    entries = [json.loads(line[3:]) for line in lines]
    assert priorities == ["<3>", "<4>", "<6>", "<6>"]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("error", "wlmd", "bad"), ("warning", "wlmd", "odd\nfile"),
        ("info", "wlmd.associations", "association"), ("info", "wlmd", "detail")]
    assert all(isinstance(e["pid"], int) and e["time"] for e in entries)


def test_command_line_level_wins_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "wlmd.conf"
    config.write_text('log_level = "debug"\n')
    parsed = parse_command_line(["--config", str(config), "-q", "104"])
    assert (parsed.log_level, parsed.settings.log_level) == (logging.CRITICAL, "fatal")
    parsed = parse_command_line(["--config", str(config), "104"])
    assert (parsed.log_level, parsed.settings.log_level) == (logging.DEBUG, "debug")
