"""Issue #6 item 5: privilege drop, path confinement of ``-rfp`` and ``-dfp``, IPv4-mapped peers
under IPv4 access rules, no patient data in logs, audited dependencies."""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.support.processes import dcmtk_tool, free_port
from tests.support.server import (
    Wlmd,
    associate,
    example_files,
    find,
    fingerprint,
    make_ae_dir,
    process_ids,
    public_directory,
    wait_until,
    worklist_bytes,
)
from tests.support.wire import ASSOCIATE_AC, ASSOCIATE_RJ, request_association

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")


@pytest.fixture
def public() -> Iterator[Path]:
    with public_directory() as root:
        yield root


def _port_104_free() -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 104))
    except OSError:
        return False
    return True


@needs_root
@pytest.mark.parametrize("privileged", [False, True], ids=["high-port", "port-104"])
def test_started_as_root_binds_then_runs_as_nobody(public: Path, privileged: bool) -> None:
    if privileged and not _port_104_free():
        pytest.skip("127.0.0.1:104 is in use here")
    make_ae_dir(public / "db", "ECHO", {})
    server = Wlmd(public, ["-dfp", str(public / "db"), "--user", "nobody", "--group", "nogroup"],
                  port=104 if privileged else free_port())
    try:
        assoc = associate(server.port, "ECHO")
        assert assoc.send_c_echo().Status == 0x0000
        wait_until(lambda: server.workers(), what="workers")
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        for pid in [server.pid, *server.workers()]:
            ids = process_ids(pid)
            assert ids["Uid"] == [uid] * 4, (pid, ids)  # real, effective, saved, filesystem
            assert ids["Gid"] == [gid] * 4, (pid, ids)
            assert ids["Groups"] == [gid], (pid, ids)
            assert ids["CapEff"] == [0], (pid, ids)
        assoc.release()
    finally:
        server.stop()


PATIENT_IDS = ["../../escape-rel", "../../../../../../../../tmp/escape-deep", "..", ".", "",
               "a/../../escape-mixed", "..\\..\\escape-backslash", "esc\0/../../nul",
               "\x1b[2J/../escape-ctl", "sub/dir/escape-sub"]


@pytest.mark.parametrize("fmt", ["#p.dump", "#p", "#a#p.dump"])
def test_request_file_names_never_leave_rfp(public: Path, fmt: str) -> None:
    """Whatever a Patient ID (or calling AE title) says, the request file lands in -rfp or
    nowhere."""
    db, requests = public / "db", public / "a" / "b" / "requests"
    requests.mkdir(parents=True)
    make_ae_dir(db, "RFP", {"e.wl": worklist_bytes("RFP-1")})
    absolute = public / "abs" / "escape-abs"
    absolute.parent.mkdir()
    ids = [*PATIENT_IDS, str(absolute)]
    if fmt.endswith(".dump"):
        assert not Path("/etc/passwd.dump").exists()
        ids.append("/etc/passwd")
    before = {p for p in public.rglob("*") if not p.is_relative_to(requests)}
    server = Wlmd(public, ["-dfp", str(db), "-rfp", str(requests), "-rff", fmt])
    try:
        assoc = associate(server.port, "RFP", calling="../../CA")
        statuses: dict[str, int] = {}
        for patient_id in ids:
            statuses[patient_id] = find(assoc, PatientID=patient_id)[1]
        assoc.release()
        print(fmt, {k: hex(v) for k, v in statuses.items() if v})
        assert set(statuses.values()) <= {0x0000, 0xA900}
        assert server.proc.poll() is None
    finally:
        server.stop()
    after = {p for p in public.rglob("*") if not p.is_relative_to(requests)}
    created = after - before - {server.log_path}
    assert not created, created
    assert not Path("/etc/passwd.dump").exists()
    written = list(requests.iterdir())
    assert written and all(p.parent == requests and p.is_file() for p in written)


@pytest.mark.parametrize("called", ["../outside", " ../outside", ".", "..", "a/b", "LINK",
                                    b"STA\0BLE", "STABLE/../..", "/tmp"])
def test_called_ae_titles_never_escape_dfp(public: Path, called: str | bytes) -> None:
    """Each title names a directory that holds worklists (that wlmscpfs 3.6.7 would serve)."""
    outside_file = {"x.wl": worklist_bytes("OUTSIDE")}
    db = public / "db"
    make_ae_dir(public, "outside", outside_file)
    make_ae_dir(db, "STABLE", {"s.wl": worklist_bytes("STABLE")})
    make_ae_dir(db / "a", "b", outside_file)
    for directory in (db, public):
        (directory / "lockfile").touch()
        (directory / "x.wl").write_bytes(worklist_bytes("OUTSIDE"))
    (db / "LINK").symlink_to(public / "outside")
    before = fingerprint(db)
    outside = fingerprint(public / "outside")
    logs = public / "logs"
    logs.mkdir()
    server = Wlmd(logs, ["-dfp", str(db)])
    try:
        assert request_association("127.0.0.1", server.port, "STABLE").pdu_type == ASSOCIATE_AC
        answer = request_association("127.0.0.1", server.port, called)
        assert (answer.pdu_type, answer.reason) == (ASSOCIATE_RJ, (1, 1, 7))
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert fingerprint(db) == before and fingerprint(public / "outside") == outside


ODD_TITLES = ["A\\B", "\\", "A\x01B", "A\tB", "A\x1bB", "A\x7fB"]


def test_called_ae_titles_with_backslash_or_control_are_unknown(public: Path) -> None:
    """A directory of that name exists and holds a worklist, yet the title is refused 1/1/7,
    both on a raw request and from DCMTK's findscu."""
    db = public / "db"
    for title in ["STABLE", *ODD_TITLES]:
        make_ae_dir(db, title, {"s.wl": worklist_bytes("ODD")})
    logs = public / "logs"
    logs.mkdir()
    server = Wlmd(logs, ["-dfp", str(db)])
    try:
        assert request_association("127.0.0.1", server.port, "STABLE").pdu_type == ASSOCIATE_AC
        for title in ODD_TITLES:
            answer = request_association("127.0.0.1", server.port, title)
            assert (answer.pdu_type, answer.reason) == (ASSOCIATE_RJ, (1, 1, 7)), title
        findscu = subprocess.run(
            [dcmtk_tool("findscu"), "-aec", "A\\B", "-k", "PatientID", "127.0.0.1",
             str(server.port)], capture_output=True, timeout=30, check=False)
        assert findscu.returncode == 2
        assert b"Called AE Title Not Recognized" in findscu.stderr
        assert server.proc.poll() is None
    finally:
        server.stop()


def _rules(public: Path, allow: str, deny: str) -> list[str]:
    (public / "hosts.allow").write_text(allow)
    (public / "hosts.deny").write_text(deny)
    return ["+ac", "--hosts-allow", str(public / "hosts.allow"),
            "--hosts-deny", str(public / "hosts.deny")]


@pytest.mark.parametrize(("allow", "deny", "admitted"), [
    ("", "ALL: 127.0.0.1\n", {"127.0.0.2"}),
    ("ALL: 127.0.0.1\n", "ALL: ALL\n", {"127.0.0.1"}),
    ("ALL: 127.0.0.0/255.255.255.254\n", "ALL: ALL\n", {"127.0.0.1"}),
], ids=["deny-v4", "allow-v4-only", "allow-v4-network"])
def test_ipv4_mapped_peers_are_judged_by_ipv4_rules(public: Path, allow: str, deny: str,
                                                    admitted: set[str]) -> None:
    """A dual-stack socket (``-i0``) sees IPv4 clients as ``::ffff:a.b.c.d``."""
    make_ae_dir(public / "db", "ECHO", {})
    server = Wlmd(public, ["-i0", "-dfp", str(public / "db"), *_rules(public, allow, deny)],
                  host="::ffff:127.0.0.1", verbose=False)
    try:
        for source in ("127.0.0.1", "127.0.0.2"):
            refused = f"refused connection from ::ffff:{source} "
            earlier = server.count(refused)  # the readiness probe came from 127.0.0.1 too
            answer = request_association("127.0.0.1", server.port, "ECHO", source=source)
            if source in admitted:
                assert answer.pdu_type == ASSOCIATE_AC
            else:
                assert answer.pdu_type is None  # closed without a DICOM answer
                wait_until(lambda r=refused, n=earlier: server.count(r) >= n + 1, what=refused)
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_logs_carry_no_patient_data(tmp_path: Path) -> None:
    """At the default level. (-v dumps identifiers and responses, as wlmscpfs -v does.)"""
    entries = {f"e{i}.wl": t.read_bytes() for i, t in enumerate(example_files())}
    db = tmp_path / "db"
    make_ae_dir(db, "PHI", {**entries, "broken.wl": b"junk"})
    secrets = _patient_strings(example_files())
    server = Wlmd(tmp_path, ["-dfp", str(db)], verbose=False)
    try:
        assoc = associate(server.port, "PHI")
        assert len(find(assoc)[0]) == len(entries)
        find(assoc, PatientName="SMITH*")
        find(assoc, PatientID="PID107919", PatientBirthDate="20100214")
        assoc.release()
    finally:
        server.stop()
    log = server.log()
    assert "broken.wl" in log  # the log is not simply empty
    leaked = sorted(s for s in secrets if s in log)
    assert not leaked, leaked


def _patient_strings(files: list[Path]) -> set[str]:
    """Names (each component), IDs, birth dates and accession numbers in ``files``."""
    from pydicom import dcmread

    found: set[str] = {"SMITH", "PID107919", "20100214"}
    for path in files:
        ds = dcmread(path, force=True)
        for keyword in ("PatientID", "PatientBirthDate", "AccessionNumber"):
            if ds.get(keyword):
                found.add(str(ds.get(keyword)))
        for part in str(ds.get("PatientName", "")).replace("=", "^").split("^"):
            if len(part) >= 3:
                found.add(part)
    return found


def test_dependencies_have_no_known_vulnerabilities(tmp_path: Path) -> None:
    if importlib.util.find_spec("pip_audit") is None:
        pytest.skip("pip-audit is not installed (pip install pip-audit)")
    pins = [f"{name}=={metadata.version(name)}"
            for name in ("pydicom", "pynetdicom", "psutil", "netaddr", "python-daemon",
                         "lockfile")]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pins) + "\n")
    result = subprocess.run([sys.executable, "-m", "pip_audit", "--strict", "--no-deps",
                             "--desc", "off", "--timeout", "5", "-r", str(requirements)],
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    if result.returncode and ("could not be audited" in output or "ConnectionError" in output):
        pytest.skip(f"no vulnerability database reachable: {output.strip().splitlines()[-1]}")
    assert result.returncode == 0, output
