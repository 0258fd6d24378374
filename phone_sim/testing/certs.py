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

from phone_sim.testing.errors import PeerUsageError
from phone_sim.tls.pki import CA_KEY_USAGE

__all__ = [
    "BAD_CERT_KINDS",
    "BadCertKind",
    "CertFiles",
    "KeyType",
    "TestPki",
    "make_bad_server_pki",
    "make_test_pki",
]

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


BadCertKind = Literal["expired", "not_yet_valid", "wrong_name", "self_signed", "untrusted_ca"]
BAD_CERT_KINDS: tuple[BadCertKind, ...] = (
    "expired", "not_yet_valid", "wrong_name", "self_signed", "untrusted_ca",
)


def _server_cert(
    *,
    subject_key: PrivateKey,
    issuer_name: x509.Name,
    issuer_key: PrivateKey,
    server_name: str,
    ip_addresses: tuple[str, ...],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    san: list[x509.GeneralName] = [x509.DNSName(server_name)]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return (
        x509.CertificateBuilder()
        .subject_name(_name(server_name))
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
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
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def make_bad_server_pki(pki: TestPki, kind: BadCertKind, directory: Path) -> TestPki:
    """A copy of ``pki`` whose server certificate is wrong in one way (TEST-ONLY).

    The CA stays ``pki.ca``, the one clients trust, so exactly one thing fails:
    ``expired`` (notAfter in the past), ``not_yet_valid`` (notBefore in the future),
    ``wrong_name`` (for ``wrong.<server_name>``, no IP), ``self_signed`` (the leaf signs
    itself), ``untrusted_ca`` (issued by another CA nobody trusts).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError("test CA key must be RSA or EC")
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    key = _new_key("ec")
    issuer_name, issuer_key = ca_cert.subject, ca_key
    server_name = pki.server_name
    ips: tuple[str, ...] = ("127.0.0.1",)
    not_before, not_after = now - day, now + 30 * day
    if kind == "expired":
        not_before, not_after = now - 60 * day, now - day
    elif kind == "not_yet_valid":
        not_before, not_after = now + day, now + 60 * day
    elif kind == "wrong_name":
        server_name, ips = f"wrong.{pki.server_name}", ()
    elif kind == "self_signed":
        issuer_name, issuer_key = _name(pki.server_name), key
    elif kind == "untrusted_ca":
        issuer_key = _new_key("ec")
        issuer_name = _name(f"{_TEST_ONLY} untrusted CA")
    else:
        raise PeerUsageError(f"unknown bad certificate kind {kind!r}")
    cert = _server_cert(
        subject_key=key, issuer_name=issuer_name, issuer_key=issuer_key,
        server_name=server_name, ip_addresses=ips, not_before=not_before, not_after=not_after,
    )
    return TestPki(
        ca=pki.ca,
        server=_write(directory, f"test-only-server-{kind}", cert, key),
        server_name=pki.server_name,
        directory=directory,
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
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = _new_key(key_type)
    server_cert = _server_cert(
        subject_key=server_key, issuer_name=ca_name, issuer_key=ca_key,
        server_name=server_name, ip_addresses=ip_addresses,
        not_before=not_before, not_after=not_after,
    )

    return TestPki(
        ca=_write(directory, "test-only-ca", ca_cert, ca_key),
        server=_write(directory, "test-only-server", server_cert, server_key),
        server_name=server_name,
        directory=directory,
    )
