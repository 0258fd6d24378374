"""TEST-ONLY PKI: a throwaway CA and the certificates the test peers present.

Everything here is generated at test time into a temporary directory and thrown away with
it. These keys protect nothing; never reuse this module for a real deployment.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_TEST_ONLY = "phone-sim TEST-ONLY"


@dataclass(frozen=True, kw_only=True)
class CertFiles:
    """A PEM certificate and its TEST-ONLY private key on disk."""

    cert: Path
    """The certificate (leaf first, no chain)."""
    key: Path
    """The unencrypted TEST-ONLY private key."""


@dataclass(frozen=True, kw_only=True)
class TestPki:
    """A TEST-ONLY CA and the server certificate issued by it."""

    ca: CertFiles
    """The CA certificate and key; give ``ca.cert`` to clients as their trust store."""
    server: CertFiles
    """The server certificate for ``server_name`` and 127.0.0.1."""
    server_name: str
    """The DNS name in the server certificate (CN and subjectAltName)."""
    directory: Path
    """Where the files live."""

    __test__ = False  # not a pytest test class, despite the name


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, stem: str, cert: x509.Certificate, key: PrivateKey) -> CertFiles:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return CertFiles(cert=cert_path, key=key_path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _TEST_ONLY),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_test_pki(
    directory: Path,
    *,
    server_name: str = "pbx.test",
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    key_type: KeyType = "rsa",
    valid_days: int = 30,
) -> TestPki:
    """Create a TEST-ONLY CA and a server certificate for ``server_name`` and the IPs."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=valid_days)

    ca_key = _new_key(key_type)
    ca_name = _name(f"{_TEST_ONLY} CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = _new_key(key_type)
    san: list[x509.GeneralName] = [x509.DNSName(server_name)]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(server_name))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    return TestPki(
        ca=_write(directory, "test-only-ca", ca_cert, ca_key),
        server=_write(directory, "test-only-server", server_cert, server_key),
        server_name=server_name,
        directory=directory,
    )
