"""DCMTK's TLS vocabulary translated to Python's ssl: cipher names, profiles, refusals."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from wlmd.config.settings import TlsProfile
from wlmd.security.tls import TlsError, TlsOptions, make_ssl_context, openssl_cipher_name


@pytest.mark.parametrize(("iana", "openssl"), [
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
    ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", "DHE-RSA-AES256-SHA256"),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
])
def test_cipher_names(iana: str, openssl: str) -> None:
    assert openssl_cipher_name(iana) == openssl


def test_default_profile_is_tls12_or_later_with_verification() -> None:
    context = make_ssl_context(TlsOptions(), server_side=False)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert all(c["protocol"] in {"TLSv1.2", "TLSv1.3"} for c in context.get_ciphers())


def test_cipher_option_restricts_the_list() -> None:
    context = make_ssl_context(TlsOptions(ciphers=["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]),
                               server_side=False)
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-RSA-AES256-GCM-SHA384"]


@pytest.mark.parametrize("profile", list(TlsProfile))
def test_every_profile_gives_a_context_for_both_ends(profile: TlsProfile) -> None:
    """One profile type for the server's --tls-profile and findscu's +pg ... +pa."""
    for server_side in (False, True):
        context = make_ssl_context(TlsOptions(profile=profile), server_side=server_side)
        names = {c["name"] for c in context.get_ciphers()}
        expected = "AES128-SHA" if profile is TlsProfile.AES else "ECDHE-RSA-AES256-GCM-SHA384"
        assert expected in names


def test_unknown_cipher_is_refused() -> None:
    with pytest.raises(TlsError, match="FOO"):
        make_ssl_context(TlsOptions(ciphers=["FOO"]), server_side=False)


def test_missing_key_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"nokey\.pem"):
        make_ssl_context(TlsOptions(key_file=tmp_path / "nokey.pem",
                                    cert_file=tmp_path / "nocert.pem"), server_side=True)
