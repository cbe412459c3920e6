"""Test certificates made at test time: a CA, a server and a client it signed, and a rogue."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


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


def make_pki(out: Path) -> Path:
    """Write ``ca``, ``server``, ``client`` (signed by ca) and a self-signed ``rogue``, each
    as ``NAME.key`` and ``NAME.crt`` (PEM) in ``out``; returns ``out``."""
    ca_key = _key()
    ca = _cert("wlmd test CA", ca_key, None, ca_key, ca=True)
    _write(out, "ca", ca_key, ca)
    for name in ("server", "client"):
        key = _key()
        _write(out, name, key, _cert(name, key, ca, ca_key, ca=False))
    rogue_key = _key()
    _write(out, "rogue", rogue_key, _cert("rogue", rogue_key, None, rogue_key, ca=False))
    return out
