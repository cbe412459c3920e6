"""Our findscu and DCMTK's, side by side against DCMTK's wlmscpfs and against wlmd."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement

from tests.support.processes import (
    DCMTK_EXAMPLES,
    dump2dcm,
    free_port,
    require_dcmtk,
    start_wlmd,
    start_wlmscpfs,
    stop_process,
)

pytestmark = pytest.mark.interop
HOST = "127.0.0.1"


def dcmtk_findscu() -> str:
    """DCMTK's findscu, found next to wlmscpfs (pynetdicom also installs a 'findscu')."""
    require_dcmtk("wlmscpfs", "findscu", "dump2dcm")
    return str(Path(shutil.which("wlmscpfs") or "").with_name("findscu"))


def ours(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "wlmd.findscu", *args], capture_output=True,
                          timeout=60, cwd=cwd, check=False)


def theirs(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([dcmtk_findscu(), *args], capture_output=True, timeout=60, cwd=cwd,
                          check=False)


@pytest.fixture(scope="module")
def worklist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DCMTK example worklist (AE OFFIS), converted with dump2dcm."""
    require_dcmtk("dump2dcm")
    root = tmp_path_factory.mktemp("wlistdb")
    source = DCMTK_EXAMPLES / "wlistdb" / "OFFIS"
    (root / "OFFIS").mkdir()
    shutil.copy(source / "lockfile", root / "OFFIS" / "lockfile")
    for dump in sorted(source.glob("*.dump")):
        dump2dcm(dump, root / "OFFIS" / f"{dump.stem}.wl")
    return root


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DCMTK example queries as DICOM files."""
    out = tmp_path_factory.mktemp("wlistqry")
    for dump in sorted((DCMTK_EXAMPLES / "wlistqry").glob("*.dump")):
        dump2dcm(dump, out / f"{dump.stem}.dcm")
    return out


@pytest.fixture(scope="module")
def wlmscpfs(worklist: Path) -> str:
    port = free_port()
    proc = start_wlmscpfs(["-dfp", str(worklist)], port)
    yield str(port)
    stop_process(proc)


@pytest.fixture(scope="module")
def wlmd_port(worklist: Path) -> str:
    port = free_port()
    try:
        proc = start_wlmd(["--single-process", "-dfp", str(worklist)], port)
    except (RuntimeError, TimeoutError) as exc:
        pytest.skip(f"wlmd does not start yet: {exc}")
    yield str(port)
    stop_process(proc)


KEY_SETS = [
    ["-k", "PatientName=VIV*", "-k", "PatientID", "-k", "(0040,0100)[0].Modality",
     "-k", "(0040,0100)[0].ScheduledStationAETitle", "-k", "StudyInstanceUID"],
    ["-v", "-k", "(0040,0100)[0].Modality=XX", "-k", "(0040,0100)[1].Modality=YY",
     "-k", "(0040,0100)[0].(0008,1110)[0].ReferencedSOPClassUID", "-k", "Columns=5",
     "-k", "0010,0020", "-k", "(0011,0010)=X"],
    ["-v", "-xi", "-k", "PatientName=MOZ*", "-k", "InstitutionalDepartmentName"],
    ["-v", "-k", "PatientName=BEET*", "--repeat", "2", "-sr"],
    ["-v", "-k", "PatientName", "--cancel", "2"],
    ["-v", "-k", "PatientName=BEET*", "--abort"],
    ["-v", "-k", "Foo=1"],
    ["-v", "-k", "(0040,0100).Modality"],
    ["-q", "-k", "PatientName"],
]


@pytest.mark.parametrize("keys", KEY_SETS, ids=lambda k: " ".join(k))
def test_same_log_and_exit_code_against_wlmscpfs(wlmscpfs: str, keys: list[str]) -> None:
    args = ["-aec", "OFFIS", HOST, wlmscpfs, *keys]
    mine, reference = ours(*args), theirs(*args)
    assert mine.stderr.decode() == reference.stderr.decode()
    assert mine.returncode == reference.returncode


@pytest.mark.parametrize("name", ["wlistqry0", "wlistqry1", "wlistqry3", "wlistqry10",
                                  "wlistqry11"])
def test_same_output_for_query_files(wlmscpfs: str, queries: Path, name: str) -> None:
    args = ["-aec", "OFFIS", HOST, wlmscpfs, str(queries / f"{name}.dcm")]
    mine, reference = ours(*args), theirs(*args)
    assert reference.stderr.count(b"Find Response:") > 0
    assert mine.stderr == reference.stderr


# Entries whose values hold non-ASCII bytes: (SpecificCharacterSet, PatientName, description).
# DCMTK prints the bytes as they are and pads the value column by bytes, not characters.
NON_ASCII_ENTRIES = [
    ("ISO_IR 100", "M\xdcLLER^J\xdcRGEN ".encode("latin-1"), b"\xc1RBOL "),
    ("ISO_IR 192", "M\u00dcLLER^J\u00dcRGEN".encode(), "\u00c9" * 30 + "x"),  # over 40 bytes
    ("ISO_IR 144", "\u0418\u0432\u0430\u043d\u043e\u0432^\u0418\u0432\u0430\u043d"
     .encode("iso8859_5"), "\u0413\u041e\u041b\u041e\u0412\u0410 ".encode("iso8859_5")),
    (None, b"UNDEFINED^\x81\xff ", b"\x7f\x9b\xc3\x1b "),  # no charset: undefined bytes
    ("ISO_IR 192", b"BROKEN^\xc3\x28\xe2\x82", b"\xf0\x9f\x98\x80 "),  # bad UTF-8, emoji
]


@pytest.fixture(scope="module")
def non_ascii_server(worklist: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """wlmscpfs serving AE CHARSETS: the example entry once per NON_ASCII_ENTRIES row."""
    root = tmp_path_factory.mktemp("charsets")
    directory = root / "CHARSETS"
    directory.mkdir()
    (directory / "lockfile").touch()
    template = sorted((worklist / "OFFIS").glob("*.wl"))[0]
    for number, (charset, name, description) in enumerate(NON_ASCII_ENTRIES):
        ds = dcmread(template)
        if charset is None:
            ds.pop(0x00080005, None)
        else:
            ds.SpecificCharacterSet = charset
        ds.PatientID = f"CHARSET{number}"
        raw = description if isinstance(description, bytes) else description.encode()
        ds[0x00100010] = DataElement(0x00100010, "PN", name)
        ds[0x00321060] = DataElement(0x00321060, "LO", raw)
        ds.save_as(directory / f"entry{number}.wl")
    port = free_port()
    proc = start_wlmscpfs(["-dfp", str(root)], port)
    yield str(port)
    stop_process(proc)


def _non_ascii_query(port: str, *options: str) -> tuple[bytes, bytes]:
    """Both findscu programs' stderr for one query of every NON_ASCII_ENTRIES entry."""
    args = ["-aec", "CHARSETS", *options, HOST, port, "-k", "PatientName", "-k", "PatientID",
            "-k", "RequestedProcedureDescription", "-k", "SpecificCharacterSet"]
    mine, reference = ours(*args), theirs(*args)
    assert mine.returncode == reference.returncode == 0
    for _, name, _ in NON_ASCII_ENTRIES:
        assert name in reference.stderr  # DCMTK prints the raw bytes
    assert b"\xef\xbf\xbd" not in mine.stderr  # never U+FFFD
    return mine.stderr, reference.stderr


@pytest.mark.parametrize("level", [(), ("-v",)], ids=["default", "v"])
def test_non_ascii_responses_are_printed_byte_for_byte(non_ascii_server: str,
                                                       level: tuple[str, ...]) -> None:
    mine, reference = _non_ascii_query(non_ascii_server, *level)
    assert reference.count(b"Find Response:") == len(NON_ASCII_ENTRIES)
    assert mine == reference


DUMP_LINE = re.compile(rb"^[DI]: ( *\([0-9a-f]{4},[0-9a-f]{4}\) .* # +\d+, *\d+ .*)$")


def test_non_ascii_debug_dumps_are_byte_for_byte(non_ascii_server: str) -> None:
    """At -d the rest of the log differs (implementation UID, pynetdicom's own debug lines,
    the level letter of response dumps); every dumped dataset line does not."""
    mine, reference = _non_ascii_query(non_ascii_server, "-d")

    def dumps(log: bytes) -> list[bytes]:
        return [match.group(1) for line in log.splitlines() if (match := DUMP_LINE.match(line))]

    assert len(dumps(reference)) == 4 + 3 * len(NON_ASCII_ENTRIES)  # request, responses
    assert dumps(mine) == dumps(reference)


def _extract_both(port: str, tmp_path: Path, *mode: str) -> tuple[Path, Path]:
    args = ["-aec", "OFFIS", HOST, port, *KEY_SETS[0]]
    mine, reference = tmp_path / "ours", tmp_path / "theirs"
    mine.mkdir()
    reference.mkdir()
    assert ours(*args, *mode, "-od", str(mine)).returncode == 0
    assert theirs(*args, *mode, "-od", str(reference)).returncode == 0
    return mine, reference


def _datasets(directory: Path) -> list[object]:
    return [dcmread(path) for path in sorted(directory.glob("rsp*.dcm"))]


def _assert_same_datasets(mine: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert names and sorted(p.name for p in mine.iterdir()) == names
    for a, b in zip(_datasets(mine), _datasets(reference), strict=True):
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
        assert a.file_meta.MediaStorageSOPClassUID == b.file_meta.MediaStorageSOPClassUID
        assert a == b


def test_extracted_dicom_files_match(wlmscpfs: str, tmp_path: Path) -> None:
    _assert_same_datasets(*_extract_both(wlmscpfs, tmp_path, "-X"))


def test_limit_output_counts_responses(wlmscpfs: str, tmp_path: Path) -> None:
    mine, reference = _extract_both(wlmscpfs, tmp_path, "-X", "-Xlo", "2")
    assert sorted(p.name for p in mine.iterdir()) == ["rsp0001.dcm", "rsp0002.dcm"]
    _assert_same_datasets(mine, reference)


@pytest.mark.parametrize("mode", [("-Xx",), ("-Xs", "all.xml")], ids=["Xx", "Xs"])
def test_xml_files_identical(wlmscpfs: str, tmp_path: Path, mode: tuple[str, ...]) -> None:
    mine, reference = _extract_both(wlmscpfs, tmp_path, *mode)
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in mine.iterdir()) == names
    for name in names:
        assert (mine / name).read_bytes() == (reference / name).read_bytes()


def test_xml_single_spans_repeats(wlmscpfs: str, tmp_path: Path) -> None:
    args = ["-aec", "OFFIS", HOST, wlmscpfs, "-k", "PatientName=VIV*", "--repeat", "2",
            "-Xs", "s.xml", "-od", str(tmp_path)]
    assert ours(*args).returncode == 0
    text = (tmp_path / "s.xml").read_text()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<responses type="C-FIND">')
    assert text.count("<data-set ") == 6 and text.endswith("</responses>\n")


@pytest.mark.parametrize("args", [
    ["--bogus", HOST, "104", "-k", "PatientName"],
    [HOST],
    [HOST, "104"],
    [HOST, "99999", "-k", "PatientName"],
    [HOST, "104", "nonexistent.dcm"],
    [HOST, "104", "-k", "PatientName", "--repeat", "0"],
    [HOST, "104", "-k", "PatientName", "--repeat", "x"],
    [HOST, "104", "-k", "PatientName", "-pdu", "100"],
    [HOST, "104", "-k", "PatientName", "-Xlo", "1"],
    [HOST, "104", "-k", "PatientName", "+cl", "5"],
    [HOST, "104", "-k", "PatientName", "+pw", "secret"],
    [HOST, "104", "-k", "PatientName", "-X", "-od", "/nonexistent/dir"],
    # the shared DCMTK engine: sscanf numbers, "-<digit>" is a parameter, @file, -ll
    [HOST, "0x5", "-k", "PatientName"],
    [HOST, "-5", "-k", "PatientName"],
    ["-5x", HOST],
    [HOST, "104", "-k", "PatientName", "--repeat", "-3"],
    [HOST, "104", "-k", "PatientName", "--repeat", " 0"],
    ["-ll", "bogus", HOST, "104", "-k", "PatientName"],
    ["@/nonexistent/args.txt"],
], ids=lambda a: " ".join(a))
def test_command_line_errors_match(args: list[str]) -> None:
    mine, reference = ours(*args), theirs(*args)
    assert mine.returncode == reference.returncode == 1
    assert _last_line(mine.stderr) == _last_line(reference.stderr)


def _last_line(data: bytes) -> str:
    return data.decode().strip().splitlines()[-1]


def test_rejected_association(wlmscpfs: str) -> None:
    args = ["-aec", "NOSUCHAE", HOST, wlmscpfs, "-k", "PatientName"]
    mine, reference = ours(*args), theirs(*args)
    assert reference.returncode == 2 and b"Called AE Title Not Recognized" in reference.stderr
    assert (mine.returncode, mine.stderr) == (reference.returncode, reference.stderr)


def test_unreachable_peer() -> None:
    args = [HOST, str(free_port()), "-k", "PatientName"]
    mine, reference = ours(*args), theirs(*args)
    assert reference.returncode == 2
    assert (mine.returncode, mine.stderr) == (reference.returncode, reference.stderr)


def test_unknown_host() -> None:
    args = ["no-such-host.invalid", "104", "-k", "PatientName"]
    mine, reference = ours(*args), theirs(*args)
    assert (mine.returncode, mine.stderr) == (2, reference.stderr)


def test_arguments_from_command_file(wlmscpfs: str, tmp_path: Path) -> None:
    (tmp_path / "args.txt").write_text('-aec OFFIS -k "PatientName=HAY*"\n')
    args = [f"@{tmp_path / 'args.txt'}", HOST, wlmscpfs]
    mine, reference = ours(*args), theirs(*args)
    assert mine.stderr.count(b"Find Response:") == 3
    assert mine.stderr == reference.stderr


@pytest.mark.parametrize("level", [[], ["-q"], ["-ll", "fatal"]], ids=["default", "q", "ll"])
def test_arguments_are_printed_whatever_the_level(level: list[str]) -> None:
    args = [*level, "--arguments", HOST, str(free_port()), "-k", "PatientName=A B"]
    program = re.compile(rb"^I: calling '[^']*'")  # argv[0] differs: a path either way

    def first_lines(stderr: bytes) -> list[bytes]:
        return [program.sub(b"I: calling 'findscu'", line) for line in stderr.splitlines()[:2]]

    mine = first_lines(ours(*args).stderr)
    assert mine[0].startswith(b"I: calling 'findscu' with %d arguments: " % len(args))
    assert mine == first_lines(theirs(*args).stderr)


def test_help_headings_match_dcmtk() -> None:
    """Same usage line, parameters and (sub)group headings, in the same order and layout."""
    def headings(text: bytes) -> list[str]:
        lines = text.decode().splitlines()[1:]  # the identification line names the vendor
        return [line for line in lines if not line.lstrip().startswith(("-", "+"))
                and not line.startswith(" " * 10)]

    mine = headings(ours("-h").stdout)
    reference = headings(theirs("-h").stdout)
    assert [h for h in mine if h != "  server name indication:"] == reference


def test_help_lists_every_option_of_dcmtk() -> None:
    reference = [line.rstrip() for line in theirs("-h").stdout.decode().splitlines()]
    mine = ours("-h").stdout.decode().splitlines()
    assert ours("-h").returncode == 0
    dcmtk_options = [line for line in reference if line.lstrip().startswith(("-", "+"))]
    missing = [line for line in dcmtk_options if line not in mine and
               "profile" not in line and line.split()[-1] not in {"(default)", "Profile"}]
    assert not missing


def test_same_extracted_datasets_from_wlmd(wlmd_port: str, tmp_path: Path) -> None:
    mine, reference = _extract_both(wlmd_port, tmp_path, "-X")
    _assert_same_datasets(mine, reference)


def test_same_xml_from_wlmd(wlmd_port: str, tmp_path: Path) -> None:
    mine, reference = _extract_both(wlmd_port, tmp_path, "-Xs", "all.xml")
    assert (mine / "all.xml").read_text() == (reference / "all.xml").read_text()
