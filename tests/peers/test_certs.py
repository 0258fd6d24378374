"""The TEST-ONLY PKI: a CA and a server certificate that a verifying client accepts."""

from __future__ import annotations

import contextlib
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from tests.peers.certs import make_test_pki


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_server_certificate_names_the_host_and_loopback(tmp_path: Path, key_type: str) -> None:
    pki = make_test_pki(tmp_path, server_name="pbx.test", key_type=key_type)  # type: ignore[arg-type]
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


def test_python_ssl_verifies_the_chain_and_name(tmp_path: Path) -> None:
    import ssl

    pki = make_test_pki(tmp_path, key_type="ec")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server.cert, pki.server.key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname=pki.server_name)
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert client.version() in ("TLSv1.3", "TLSv1.2")
    peer = client.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"] == (
        ("DNS", "pbx.test"), ("IP Address", "127.0.0.1")
    )
