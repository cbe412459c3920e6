"""TLS contexts for both ends, from DCMTK's option vocabulary (profiles, +cf/+cd, CRLs, +cs).

DCMTK speaks of security profiles and IANA ciphersuite names; Python's ``ssl`` speaks of
protocol versions and OpenSSL cipher strings. This module translates once, so the findscu
client and the wlmd server build their contexts the same way. The server builds its context
once (at start-up and on SIGHUP) and shakes hands in the process that serves the association.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wlmd.config.settings import Settings, TlsProfile


class TlsError(Exception):
    """A TLS setting that cannot be honoured; the message names the file or option."""


_BCP195_SUITES = (
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
)
_PROFILE_SUITES: dict[TlsProfile, tuple[str, ...]] = {
    TlsProfile.RFC8996: _BCP195_SUITES,
    TlsProfile.RFC8996_MOD: _BCP195_SUITES,
    TlsProfile.BCP195_ND: _BCP195_SUITES,
    TlsProfile.BCP195: (
        *_BCP195_SUITES,
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA"),
    TlsProfile.BCP195_EX: ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    TlsProfile.AES: ("TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA"),
}
# DCMTK's profiles that have no TlsProfile, by DCMTK's name: why they are refused.
UNSUPPORTED_PROFILES = {
    "basic": "the Basic TLS profile needs 3DES, which Python's ssl module does not offer",
    "null": "the unencrypted (NULL cipher) TLS profile is not supported by Python's ssl",
}


def openssl_cipher_name(iana: str) -> str:
    """``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`` -> ``ECDHE-RSA-AES128-GCM-SHA256``."""
    if not iana.startswith("TLS_") or "_WITH_" not in iana:
        return iana  # already an OpenSSL name
    kx, _, rest = iana[4:].partition("_WITH_")
    parts = rest.split("_")
    if parts[0] == "CHACHA20":
        cipher, mac = "CHACHA20-POLY1305", ""
    elif parts[0] in {"AES", "CAMELLIA"}:
        cipher = parts[0] + parts[1]
        mode, mac = parts[2], parts[3]
        cipher += "-GCM" if mode == "GCM" else ""
    else:
        raise TlsError(f"ciphersuite '{iana}' is unknown")
    prefix = "" if kx == "RSA" else kx.replace("_", "-") + "-"
    if kx == "DHE_DSS":
        prefix = "DHE-DSS-"
    return prefix + cipher + (f"-{mac}" if mac else "")


@dataclass(frozen=True)
class TlsOptions:
    """Everything the TLS options of findscu(1) (and wlmd's server options) can say."""

    key_file: Path | None = None  # None with cert None: anonymous (+tla)
    cert_file: Path | None = None
    password: str | None = None  # None: prompt (client) / unencrypted key
    der: bool = False
    ca_files: Sequence[Path] = ()
    ca_dirs: Sequence[Path] = ()
    crl_files: Sequence[Path] = ()
    crl_check: str = ""  # "", "leaf" or "chain"
    profile: TlsProfile = TlsProfile.RFC8996
    ciphers: Sequence[str] = ()
    verify_peer: bool = True


def make_ssl_context(options: TlsOptions, *, server_side: bool) -> ssl.SSLContext:
    """An ``SSLContext`` for either end; raises :class:`TlsError` with a clear message."""
    purpose = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(purpose)
    context.check_hostname = False  # DICOM TLS authenticates certificates, not host names
    _set_protocol(context, options)
    _load_identity(context, options)
    _load_trust(context, options)
    context.verify_mode = ssl.CERT_REQUIRED if options.verify_peer else ssl.CERT_NONE
    return context


def _set_protocol(context: ssl.SSLContext, options: TlsOptions) -> None:
    if options.profile == TlsProfile.AES:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("AES128-SHA:AES256-SHA:@SECLEVEL=0")
        return
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    suites = list(options.ciphers) or list(_PROFILE_SUITES[options.profile])
    names = [openssl_cipher_name(name) for name in suites]
    try:
        context.set_ciphers(":".join(names))
    except ssl.SSLError as exc:
        raise TlsError(f"no usable ciphersuite in: {', '.join(suites)}") from exc


def _load_identity(context: ssl.SSLContext, options: TlsOptions) -> None:
    if options.key_file is None or options.cert_file is None:
        return
    key, cert = options.key_file, options.cert_file
    with tempfile.TemporaryDirectory(prefix="wlmd-tls-") as tmp:
        if options.der:
            key, cert = _der_to_pem(key, cert, options.password, Path(tmp))
        try:
            context.load_cert_chain(cert, key, password=options.password)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"Unable to load private TLS key from '{options.key_file}'"
                           f" or certificate from '{options.cert_file}': {exc}") from exc


def _der_to_pem(key: Path, cert: Path, password: str | None,
                tmp: Path) -> tuple[Path, Path]:
    """PEM copies of DER key and certificate, because ``load_cert_chain`` reads PEM only."""
    from cryptography.hazmat.primitives import serialization

    secret = password.encode() if password else None
    try:
        private = serialization.load_der_private_key(key.read_bytes(), secret)
        cert_pem = ssl.DER_cert_to_PEM_cert(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"Unable to load private TLS key from '{key}': {exc}") from exc
    key_out, cert_out = tmp / "key.pem", tmp / "cert.pem"
    key_out.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    os.chmod(key_out, 0o600)
    cert_out.write_text(cert_pem)
    return key_out, cert_out


def _load_trust(context: ssl.SSLContext, options: TlsOptions) -> None:
    try:
        for path in options.ca_files:
            if options.der:
                context.load_verify_locations(cadata=path.read_bytes())
            else:
                context.load_verify_locations(cafile=str(path))
        for directory in options.ca_dirs:
            _load_directory(context, directory)
        for crl in options.crl_files:
            context.load_verify_locations(cafile=str(crl))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"Unable to load certificate or CRL file: {exc}") from exc
    if options.crl_check or options.crl_files:
        flag = ssl.VERIFY_CRL_CHECK_CHAIN if options.crl_check == "chain" else \
            ssl.VERIFY_CRL_CHECK_LEAF
        context.verify_flags |= flag


def _load_directory(context: ssl.SSLContext, directory: Path) -> None:
    """Every certificate file in ``directory`` (DCMTK's +cd needs no c_rehash either)."""
    if not directory.is_dir():
        raise TlsError(f"Unable to load certificates from directory '{directory}'")
    for path in sorted(directory.iterdir()):
        if path.is_file():
            try:
                context.load_verify_locations(cafile=str(path))
            except ssl.SSLError:
                continue  # not a certificate: DCMTK skips such files too


def list_ciphers() -> list[str]:
    """The TLS 1.2 and 1.3 ciphersuites this Python's OpenSSL offers, for ``+cc``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return [cipher["name"] for cipher in context.get_ciphers()]


def seed_random(seed: Path) -> None:
    """Mix a seed file into OpenSSL's generator (``+rs``)."""
    data = seed.read_bytes()
    ssl.RAND_add(data, float(len(data)))


def write_seed(path: Path, size: int = 1024) -> None:
    """Write fresh generator output as the next seed (``+ws``/``+wf``)."""
    path.write_bytes(ssl.RAND_bytes(size))


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's context from ``--tls-*`` (None: plain TCP); raises :class:`TlsError`.

    Like DCMTK's ``+vc``, a CA file without ``--tls-require-peer-cert`` verifies a client
    certificate when one is sent and accepts clients that send none.
    """
    if settings.tls_key is None or settings.tls_cert is None:
        return None
    ca_files = [settings.tls_ca_file] if settings.tls_ca_file is not None else []
    context = make_ssl_context(TlsOptions(
        key_file=settings.tls_key, cert_file=settings.tls_cert, ca_files=ca_files,
        profile=settings.tls_profile,
        verify_peer=settings.tls_require_peer_cert), server_side=True)
    if ca_files and not settings.tls_require_peer_cert:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class HandshakeFailed(Exception):
    """The server-side handshake failed or timed out; the message is the reason."""


def accept_tls(conn: socket.socket, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """Shake hands as the server within ``timeout`` seconds in all; the socket comes back
    blocking. On failure ``conn`` is closed and :class:`HandshakeFailed` says why.

    Python's handshake timeout bounds the whole handshake, not each read, so a peer that
    trickles its ClientHello cannot hold the process longer than ``timeout``.
    """
    conn.settimeout(timeout)
    try:
        tls_conn = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
    except OSError as exc:  # the connection is already gone
        conn.close()
        raise HandshakeFailed(str(exc)) from exc
    try:
        tls_conn.do_handshake()
    except (OSError, ValueError) as exc:
        tls_conn.close()
        raise HandshakeFailed(_reason(exc)) from exc
    tls_conn.settimeout(None)
    return tls_conn


def _reason(exc: Exception) -> str:
    """The useful part of an ssl error: the verify message or OpenSSL's reason."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    if isinstance(exc, ssl.SSLEOFError) or (isinstance(exc, ssl.SSLError) and
                                            exc.reason == "UNEXPECTED_EOF_WHILE_READING"):
        return "peer closed the connection during the handshake"
    reason = getattr(exc, "reason", None)  # e.g. PEER_DID_NOT_RETURN_A_CERTIFICATE
    return str(reason).lower().replace("_", " ") if reason else str(exc) or type(exc).__name__
