"""The TEST-ONLY PKI: a CA and a server certificate that a verifying client accepts."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from phone_sim.testing.certs import (
    BAD_CERT_KINDS,
    BadCertKind,
    KeyType,
    TestPki,
    make_bad_server_pki,
    make_test_pki,
)

# OpenSSL X509_V_ERR_* codes a verifying client reports for each bad certificate.
EXPECTED_VERIFY_ERROR: dict[str, int] = {
    "expired": 10,  # CERT_HAS_EXPIRED
    "not_yet_valid": 9,  # CERT_NOT_YET_VALID
    "wrong_name": 62,  # HOSTNAME_MISMATCH
    "self_signed": 18,  # DEPTH_ZERO_SELF_SIGNED_CERT
    "untrusted_ca": 20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
}


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_server_certificate_names_the_host_and_loopback(
    tmp_path: Path, key_type: KeyType
) -> None:
    pki = make_test_pki(tmp_path, server_name="pbx.test", key_type=key_type)
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pbx.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    assert "TEST-ONLY" in ca.subject.rfc4514_string()
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True
    assert stat.S_IMODE(pki.server.key.stat().st_mode) == 0o600


def _memory_handshake(pki: TestPki) -> ssl.SSLObject:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server.cert, pki.server.key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname=pki.server_name)
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        server_in.write(client_out.read())
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            server.do_handshake()
        client_in.write(server_out.read())
    return client


def _handshake_error(pki: TestPki) -> int | None:
    try:
        _memory_handshake(pki)
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_code
    return None


def test_python_ssl_verifies_the_chain_and_name(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path, key_type="ec")
    client = _memory_handshake(pki)
    assert client.version() in ("TLSv1.3", "TLSv1.2")
    peer = client.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"] == (("DNS", "pbx.test"), ("IP Address", "127.0.0.1"))


@pytest.mark.parametrize("kind", BAD_CERT_KINDS)
def test_each_bad_server_certificate_fails_verification_for_its_reason(
    tmp_path: Path, kind: BadCertKind
) -> None:
    pki = make_test_pki(tmp_path / "good", key_type="ec")
    bad = make_bad_server_pki(pki, kind, tmp_path / "bad")
    assert bad.ca == pki.ca
    assert _handshake_error(pki) is None
    assert _handshake_error(bad) == EXPECTED_VERIFY_ERROR[kind]
