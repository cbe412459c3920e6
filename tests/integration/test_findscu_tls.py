"""TLS both ways: our findscu and DCMTK's findscu against a TLS worklist SCP built on
wlmd.tls.make_ssl_context, with certificates made at test time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.support.pki import make_pki
from tests.support.processes import dcmtk_tool, free_port
from wlmd.security.tls import TlsOptions, make_ssl_context

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server and a trusted client certificate, plus an untrusted self-signed one."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_scp(pki: Path) -> Iterator[str]:
    """A worklist SCP over TLS that requires a client certificate signed by the test CA."""
    context = make_ssl_context(TlsOptions(
        key_file=pki / "server.key", cert_file=pki / "server.crt", ca_files=[pki / "ca.crt"],
        verify_peer=True), server_side=True)

    def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        match = Dataset()
        match.PatientName = "TLS^PATIENT"
        yield 0xFF00, match

    ae = AE(ae_title="TLSSCP")
    ae.add_supported_context(ModalityWorklistInformationFind)
    port = free_port()
    server = ae.start_server((HOST, port), block=False, ssl_context=context,
                             evt_handlers=[(evt.EVT_C_FIND, on_find)])
    yield str(port)
    server.shutdown()


def _ours(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "wlmd.findscu", *args], capture_output=True,
                          timeout=60, check=False)


def _client_args(pki: Path, port: str, name: str = "client") -> list[str]:
    return ["+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"),
            "+cf", str(pki / "ca.crt"), HOST, port, "-k", "PatientName"]


def test_our_findscu_over_tls(pki: Path, tls_scp: str) -> None:
    result = _ours(*_client_args(pki, tls_scp))
    assert result.returncode == 0, result.stderr
    assert b"TLS^PATIENT" in result.stderr


def test_dcmtk_findscu_over_tls(pki: Path, tls_scp: str) -> None:
    result = subprocess.run([dcmtk_tool("findscu"), *_client_args(pki, tls_scp)],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert b"TLS^PATIENT" in result.stderr


def test_untrusted_client_certificate_is_refused(pki: Path, tls_scp: str) -> None:
    result = _ours(*_client_args(pki, tls_scp, "rogue"))
    assert result.returncode == 2
    assert b"TLS^PATIENT" not in result.stderr
    assert b"Association Request Failed" in result.stderr


def test_client_refuses_server_it_does_not_trust(pki: Path, tls_scp: str) -> None:
    args = _client_args(pki, tls_scp)
    args[args.index("+cf") + 1] = str(pki / "rogue.crt")
    result = _ours(*args)
    assert result.returncode == 2
    assert b"TLS^PATIENT" not in result.stderr


def test_refused_profile_is_a_clear_fatal_error(pki: Path) -> None:
    result = _ours("+pn", *_client_args(pki, "104"))
    assert result.returncode == 1
    assert result.stderr.startswith(b"F: ") and b"not supported" in result.stderr
