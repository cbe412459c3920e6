"""wlmd serving over TLS (``--tls-*``) in fork and single-process modes.

DCMTK's findscu and ours query a real ``python -m wlmd`` on loopback with certificates made at
test time; untrusted, certificate-less, plain-TCP and silent clients are turned away while the
server keeps serving; the over-limit refusal speaks TLS; SIGHUP rebuilds the context.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from tests.support.pki import make_pki
from tests.support.processes import dcmtk_tool, free_port, start_wlmd, stop_process, wait_until
from wlmd.config.settings import Settings, TlsProfile
from wlmd.security.tls import TlsOptions, make_ssl_context, server_context

HOST = "127.0.0.1"
CALLED_AE = "OFFIS"
PATIENT = b"TLS^PATIENT"
ACSE_TIMEOUT = 2
MODES = ["fork", "single-process"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def worklist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One worklist record for called AE ``OFFIS``."""
    root = tmp_path_factory.mktemp("db")
    (root / CALLED_AE).mkdir()
    (root / CALLED_AE / "lockfile").touch()
    step = Dataset()
    step.Modality, step.ScheduledStationAETitle = "MR", CALLED_AE
    step.ScheduledProcedureStepStartDate = "20240101"
    record = Dataset()
    record.PatientName, record.PatientID = PATIENT.decode(), "TLS1"
    record.StudyInstanceUID = generate_uid()
    record.ScheduledProcedureStepSequence = [step]
    record.ensure_file_meta()
    record.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    record.file_meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    record.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    record.save_as(root / CALLED_AE / "tls.wl", enforce_file_format=True)
    return root


class TlsServer:
    """A ``python -m wlmd`` over TLS that this test started, configured by a TOML file."""

    def __init__(self, directory: Path, worklist: Path, options: dict[str, object]) -> None:
        self.port = free_port()
        self.config = directory / "wlmd.toml"
        self.log_path = directory / "wlmd.log"
        self.write_config({"data_files_path": str(worklist), "file_reject": False,
                           "acse_timeout": ACSE_TIMEOUT, **options})
        self._log = self.log_path.open("wb")
        self.proc = start_wlmd(["-v", "--config", str(self.config)], self.port,
                               stderr=self._log)
        self.wait_for_log("outcome=tls-failed")  # the readiness probe spoke plain TCP

    def write_config(self, options: dict[str, object]) -> None:
        self.config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items()))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1) -> None:
        wait_until(lambda: self.log().count(text) >= count, what=f"{text!r} in the log")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def tls_options(pki: Path, *, require: bool, **extra: object) -> dict[str, object]:
    return {"tls_key": str(pki / "server.key"), "tls_cert": str(pki / "server.crt"),
            "tls_ca_file": str(pki / "ca.crt"), "tls_require_peer_cert": require, **extra}


def trusted(pki: Path, name: str = "client") -> list[str]:
    return ["+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"), "+cf", str(pki / "ca.crt")]


def ours(port: int, *tls: str) -> subprocess.CompletedProcess[bytes]:
    return _run([sys.executable, "-m", "wlmd.findscu"], port, tls)


def theirs(port: int, *tls: str) -> subprocess.CompletedProcess[bytes]:
    return _run([dcmtk_tool("findscu")], port, tls)


def _run(program: list[str], port: int, tls: tuple[str, ...]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*program, *tls, "-aec", CALLED_AE, HOST, str(port), "-k",
                           "PatientName"], capture_output=True, timeout=60, check=False)


def assert_served(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, result.stderr
    assert PATIENT in result.stderr


def assert_refused(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 2, result.stderr
    assert PATIENT not in result.stderr


@pytest.fixture(scope="module", params=MODES)
def strict(request: pytest.FixtureRequest, pki: Path, worklist: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A server that requires a client certificate signed by the test CA."""
    server = TlsServer(tmp_path_factory.mktemp("strict"), worklist, tls_options(
        pki, require=True, single_process=request.param == "single-process"))
    yield server
    server.stop()


def test_dcmtk_findscu_over_tls(strict: TlsServer, pki: Path) -> None:
    assert_served(theirs(strict.port, *trusted(pki)))


def test_our_findscu_over_tls(strict: TlsServer, pki: Path) -> None:
    assert_served(ours(strict.port, *trusted(pki)))


@pytest.mark.parametrize(("client", "reason"), [
    ("rogue", "certificate verify failed: self-signed certificate"),
    ("anonymous", "peer did not return a certificate"),
])
def test_client_without_trusted_certificate_is_refused(strict: TlsServer, pki: Path,
                                                       client: str, reason: str) -> None:
    tls = ["+tla", "+cf", str(pki / "ca.crt")] if client == "anonymous" else trusted(pki, client)
    assert_refused(ours(strict.port, *tls))
    strict.wait_for_log(f"failed: {reason}")
    assert_served(ours(strict.port, *trusted(pki)))


def test_plain_tcp_client_fails_cleanly(strict: TlsServer, pki: Path) -> None:
    assert_refused(ours(strict.port))
    strict.wait_for_log("failed: wrong version number")
    assert_served(ours(strict.port, *trusted(pki)))


def test_silent_client_is_dropped_after_the_acse_timeout(strict: TlsServer) -> None:
    before = strict.log().count("handshake timed out")
    with socket.create_connection((HOST, strict.port), timeout=5 * ACSE_TIMEOUT) as sock:
        started = time.monotonic()
        assert sock.recv(16) == b""
        elapsed = time.monotonic() - started
    assert ACSE_TIMEOUT - 0.5 <= elapsed < 3 * ACSE_TIMEOUT
    strict.wait_for_log("handshake timed out", before + 1)


@pytest.fixture(scope="module")
def lenient(pki: Path, worklist: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """Fork mode, one association at most, CA file without --tls-require-peer-cert."""
    server = TlsServer(tmp_path_factory.mktemp("lenient"), worklist, tls_options(
        pki, require=False, max_associations=1, min_spare_workers=1, max_spare_workers=1))
    yield server
    server.stop()


def test_ca_file_alone_verifies_certificates_that_are_sent(lenient: TlsServer,
                                                           pki: Path) -> None:
    assert_served(ours(lenient.port, "+tla", "+cf", str(pki / "ca.crt")))
    assert_refused(ours(lenient.port, *trusted(pki, "rogue")))


def test_over_limit_refusal_speaks_tls(lenient: TlsServer, pki: Path) -> None:
    context = make_ssl_context(TlsOptions(ca_files=[pki / "ca.crt"]), server_side=False)
    ae = AE()
    ae.add_requested_context(Verification)
    held = ae.associate(HOST, lenient.port, ae_title=CALLED_AE, tls_args=(context, None))
    try:
        assert held.is_established
        refused = ours(lenient.port, "+tla", "+cf", str(pki / "ca.crt"))
    finally:
        held.release()
    assert_refused(refused)
    assert b"Local Limit Exceeded" in refused.stderr
    assert "outcome=refused-limit" in lenient.log()


@pytest.mark.parametrize("mode", MODES)
def test_sighup_rebuilds_the_tls_context(pki: Path, worklist: Path, tmp_path: Path,
                                         mode: str) -> None:
    options = tls_options(pki, require=False, single_process=mode == "single-process",
                          data_files_path=str(worklist), file_reject=False)
    server = TlsServer(tmp_path, worklist, options)
    anonymous = ["+tla", "+cf", str(pki / "ca.crt")]
    try:
        server.write_config({**options, "tls_cert": str(tmp_path / "missing.crt")})
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("reload failed")
        assert_served(ours(server.port, *anonymous))  # the old context is kept
        server.write_config({**options, "tls_key": str(pki / "rogue.key"),
                             "tls_cert": str(pki / "rogue.crt")})
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("reloaded")
        assert_refused(ours(server.port, *anonymous))  # the server now shows the rogue
        assert_served(ours(server.port, "+tla", "+cf", str(pki / "rogue.crt")))
    finally:
        server.stop()


@pytest.mark.parametrize("check", [True, False], ids=["check-config", "start"])
def test_unusable_key_stops_wlmd(pki: Path, worklist: Path, check: bool) -> None:
    args = ["--tls-key", str(pki / "ca.crt"), "--tls-cert", str(pki / "server.crt"),
            "-dfp", str(worklist), "--listen-address", HOST]
    args += ["--check-config"] if check else [str(free_port())]
    result = subprocess.run([sys.executable, "-m", "wlmd", *args], capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    assert b"TLS: Unable to load private TLS key from '" in result.stderr
    assert b"configuration OK" not in result.stdout


def test_profile_limits_the_tls12_ciphersuites(pki: Path) -> None:
    def suites(profile: TlsProfile) -> set[str]:
        settings = Settings(port=104, tls_key=pki / "server.key", tls_cert=pki / "server.crt",
                            tls_profile=profile)
        context = server_context(settings)
        assert context is not None
        return {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}

    strongest = suites(TlsProfile.BCP195_EX)
    assert strongest == {"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"}
    assert strongest < suites(TlsProfile.RFC8996) < suites(TlsProfile.BCP195)


@pytest.mark.parametrize(("ca", "require", "mode"), [
    (False, False, ssl.CERT_NONE), (True, False, ssl.CERT_OPTIONAL),
    (True, True, ssl.CERT_REQUIRED)])
def test_peer_verification_follows_the_options(pki: Path, ca: bool, require: bool,
                                               mode: ssl.VerifyMode) -> None:
    settings = Settings(port=104, tls_key=pki / "server.key", tls_cert=pki / "server.crt",
                        tls_ca_file=pki / "ca.crt" if ca else None,
                        tls_require_peer_cert=require)
    context = server_context(settings)
    assert context is not None and context.verify_mode == mode
    assert server_context(Settings(port=104)) is None
