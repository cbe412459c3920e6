"""TLS both ways: our findscu and DCMTK's findscu against a TLS worklist SCP built on
wlmd.findscu.tls.make_ssl_context, with certificates made at test time."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.helpers import free_port, require_dcmtk
from wlmd.findscu.tls import TlsOptions, make_ssl_context

HOST = "127.0.0.1"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(name: str, key: rsa.RSAPrivateKey, issuer: x509.Certificate | None,
          issuer_key: rsa.RSAPrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def _write(directory: Path, name: str, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server and a trusted client certificate, plus an untrusted self-signed one."""
    out = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("wlmd test CA", ca_key, None, ca_key, ca=True)
    _write(out, "ca", ca_key, ca)
    for name in ("server", "client"):
        key = _key()
        _write(out, name, key, _cert(name, key, ca, ca_key, ca=False))
    rogue_key = _key()
    _write(out, "rogue", rogue_key, _cert("rogue", rogue_key, None, rogue_key, ca=False))
    return out


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
    require_dcmtk("wlmscpfs", "findscu")
    findscu = str(Path(shutil.which("wlmscpfs") or "").with_name("findscu"))
    result = subprocess.run([findscu, *_client_args(pki, tls_scp)], capture_output=True,
                            timeout=60, check=False)
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
