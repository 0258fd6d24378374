"""A throw-away test PKI: one server certificate of each kind the firmware must judge.

Everything is generated at run time with ``cryptography`` on ECDSA P-256 (fast, and the curve
changes no verdict). TEST-ONLY keys: never use them for anything real. The one certificate
``cryptography`` refuses to make, a SHA-1 signed one, is produced by re-signing the
to-be-signed bytes with ECDSA-SHA1 (still through ``cryptography``), so the ``openssl`` CLI is
not needed.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phone_sim.errors import UsageError

__all__ = [
    "CA_KEY_USAGE",
    "CertKind",
    "ServerCredential",
    "TestPki",
    "generate_test_pki",
    "issue_server_certificate",
    "make_ca",
    "make_crl",
    "make_server_identity",
]

DEFAULT_SERVER_NAME = "pbx.phone-sim.test"

#: A certificate authority's key usage (critical): it signs certificates and CRLs.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CertKind(enum.Enum):
    """The certificate kinds of the issue (plus a SHA-1 signed one), by golden-table name."""

    GOOD = "good"
    GOOD_INTERMEDIATE = "good-intermediate"
    MISSING_INTERMEDIATE = "missing-intermediate"
    CN_ONLY = "cn-only"
    OTHER_HOST = "other-host"
    WILDCARD_SAN = "wildcard-san"
    WILDCARD_CN = "wildcard-cn"
    URI_SAN = "uri-san"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    SELF_SIGNED = "self-signed"
    UNKNOWN_CA = "unknown-ca"
    UNKNOWN_CA_WRONG_NAME = "unknown-ca-wrong-name"
    UNKNOWN_CA_ROOT_SENT = "unknown-ca-root-sent"
    CLIENT_AUTH_EKU = "client-auth-eku"
    ISSUER_NOT_CA = "issuer-not-ca"
    PATH_LENGTH = "path-length"
    SHA1_SIGNED = "sha1-signed"


@dataclass(frozen=True, kw_only=True)
class ServerCredential:
    """What one test server presents. TEST-ONLY key."""

    kind: CertKind
    """The kind of certificate."""
    chain: tuple[x509.Certificate, ...]
    """What the server sends, leaf first."""
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    """The leaf's private key (test-only)."""

    @property
    def leaf(self) -> x509.Certificate:
        """The server's own certificate."""
        return self.chain[0]

    def chain_pem(self) -> bytes:
        """The chain as PEM, leaf first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (test-only)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True, kw_only=True)
class TestPki:
    """The generated PKI: the roots the phone is given and one credential per kind."""

    __test__ = False  # not a pytest test class, despite the name

    server_name: str
    """The name the phone is configured with; good certificates carry it."""
    root: x509.Certificate
    """The private root CA loaded onto the phone."""
    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    """The root's key (test-only), e.g. to sign a CRL."""
    trusted: tuple[x509.Certificate, ...]
    """Every certificate the phone is loaded with (the root, and the non-CA "root")."""
    credentials: dict[CertKind, ServerCredential] = field(repr=False)
    """One server credential per kind."""

    def trust_pem(self) -> bytes:
        """The trusted certificates as PEM, for ``tls-check --ca``."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.trusted)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phone-sim test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _ca(
    cn: str,
    now: dt.datetime,
    issuer: _Issuer | None = None,
    *,
    path_length: int | None = None,
    is_ca: bool = True,
) -> _Issuer:
    key = _key()
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(CA_KEY_USAGE, critical=True)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return _Issuer(cert, key)


def _san_entries(names: Sequence[str], uris: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    entries.extend(x509.UniformResourceIdentifier(u) for u in uris)
    return entries


def _leaf(
    issuer: _Issuer | None,
    now: dt.datetime,
    *,
    cn: str,
    dns: Sequence[str] = (),
    uris: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
    sha1: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    sans = _san_entries(dns, uris)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = issuer.key if issuer else key
    if sha1:
        return _sign_ecdsa_sha1(builder, signer), key
    return builder.sign(signer, hashes.SHA256()), key


# -- SHA-1: cryptography refuses to sign certificates with it, so re-sign the TBS ourselves ----
_ECDSA_WITH_SHA1 = bytes.fromhex("300906072a8648ce3d0401")  # AlgorithmIdentifier, no params


def _der_header(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_header(len(content)) + content


def _der_children(data: bytes) -> list[bytes]:
    """Split the content of a DER SEQUENCE (given whole) into its encoded children."""
    pos = 1
    first = data[pos]
    pos += 1 + (first & 0x7F if first & 0x80 else 0)
    children: list[bytes] = []
    while pos < len(data):
        start = pos
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        pos += length
        children.append(data[start:pos])
    return children


def _sign_ecdsa_sha1(
    builder: x509.CertificateBuilder, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    tbs_children = _der_children(builder.sign(signer, hashes.SHA256()).tbs_certificate_bytes)
    tbs_children[2] = _ECDSA_WITH_SHA1  # version, serial, *signature*, issuer, ...
    tbs = _der(0x30, b"".join(tbs_children))
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA1()))  # noqa: S303 - the point of the kind
    return x509.load_der_x509_certificate(
        _der(0x30, tbs + _ECDSA_WITH_SHA1 + _der(0x03, b"\x00" + signature))
    )


def generate_test_pki(
    server_name: str = DEFAULT_SERVER_NAME, *, now: dt.datetime | None = None
) -> TestPki:
    """Generate the root, the intermediates and one server credential per :class:`CertKind`.

    ``server_name`` must be a DNS name with at least two labels, so that ``*.<parent>`` is a
    one-label wildcard for it.
    """
    first, dot, parent = server_name.partition(".")
    if not (first and dot and parent):
        raise UsageError(f"test PKI server name {server_name!r} needs a parent domain")
    now = now or dt.datetime.now(dt.UTC)
    other = f"other.{parent}"
    wildcard = f"*.{parent}"
    root = _ca("phone-sim test root CA", now)
    inter = _ca("phone-sim test intermediate CA", now, root)
    unknown = _ca("phone-sim unknown root CA", now)
    not_ca = _ca("phone-sim not-a-CA issuer", now, is_ca=False)
    limited = _ca("phone-sim path-length-0 CA", now, root, path_length=0)
    below = _ca("phone-sim CA below path-length-0", now, limited)

    good = {"cn": server_name, "dns": [server_name], "uris": [f"sip:{server_name}"]}
    creds: dict[CertKind, ServerCredential] = {}

    def add(
        kind: CertKind,
        leaf: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        *extra: x509.Certificate,
    ) -> None:
        creds[kind] = ServerCredential(kind=kind, chain=(leaf[0], *extra), key=leaf[1])

    add(CertKind.GOOD, _leaf(root, now, **good))  # type: ignore[arg-type]
    add(CertKind.GOOD_INTERMEDIATE, _leaf(inter, now, **good), inter.cert)  # type: ignore[arg-type]
    add(CertKind.MISSING_INTERMEDIATE, _leaf(inter, now, **good))  # type: ignore[arg-type]
    add(CertKind.CN_ONLY, _leaf(root, now, cn=server_name))
    add(CertKind.OTHER_HOST, _leaf(root, now, cn=other, dns=[other], uris=[f"sip:{other}"]))
    add(CertKind.WILDCARD_SAN, _leaf(root, now, cn=wildcard, dns=[wildcard]))
    add(CertKind.WILDCARD_CN, _leaf(root, now, cn=wildcard))
    add(CertKind.URI_SAN, _leaf(root, now, cn="phone-sim URI-only", uris=[f"sip:{server_name}"]))
    add(
        CertKind.EXPIRED,
        _leaf(
            root,
            now,
            **good,  # type: ignore[arg-type]
            not_before=now - dt.timedelta(days=400),
            not_after=now - dt.timedelta(days=35),
        ),
    )
    add(
        CertKind.NOT_YET_VALID,
        _leaf(
            root,
            now,
            **good,  # type: ignore[arg-type]
            not_before=now + dt.timedelta(days=35),
            not_after=now + dt.timedelta(days=400),
        ),
    )
    add(CertKind.SELF_SIGNED, _leaf(None, now, **good))  # type: ignore[arg-type]
    add(CertKind.UNKNOWN_CA, _leaf(unknown, now, **good))  # type: ignore[arg-type]
    add(
        CertKind.UNKNOWN_CA_WRONG_NAME,
        _leaf(unknown, now, cn=other, dns=[other], uris=[f"sip:{other}"]),
    )
    add(CertKind.UNKNOWN_CA_ROOT_SENT, _leaf(unknown, now, **good), unknown.cert)  # type: ignore[arg-type]
    add(
        CertKind.CLIENT_AUTH_EKU,
        _leaf(root, now, **good, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),  # type: ignore[arg-type]
    )
    add(CertKind.ISSUER_NOT_CA, _leaf(not_ca, now, **good))  # type: ignore[arg-type]
    add(CertKind.PATH_LENGTH, _leaf(below, now, **good), below.cert, limited.cert)  # type: ignore[arg-type]
    add(CertKind.SHA1_SIGNED, _leaf(root, now, **good, sha1=True))  # type: ignore[arg-type]
    return TestPki(
        server_name=server_name,
        root=root.cert,
        root_key=root.key,
        trusted=(root.cert, not_ca.cert),
        credentials=creds,
    )


def make_server_identity(
    names: Sequence[str], *, now: dt.datetime | None = None
) -> tuple[bytes, bytes, bytes]:
    """A fresh root CA and a server certificate for ``names`` (DNS names or IP addresses).

    Returns ``(ca_pem, cert_chain_pem, key_pem)``; the leaf also carries ``sip:<first name>``
    as a URI SAN. For labs and tests; TEST-ONLY key.
    """
    if not names:
        raise UsageError("make_server_identity needs at least one name")
    now = now or dt.datetime.now(dt.UTC)
    ca_pem, ca_key_pem = make_ca(now=now)
    chain_pem, key_pem = issue_server_certificate(ca_pem, ca_key_pem, names, now=now)
    return ca_pem, chain_pem, key_pem


def make_ca(
    cn: str = "phone-sim lab root CA", *, now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A fresh root CA (ECDSA P-256, ten years): ``(cert_pem, key_pem)``. TEST-ONLY key."""
    root = _ca(cn, now or dt.datetime.now(dt.UTC))
    return root.cert.public_bytes(serialization.Encoding.PEM), _key_pem(root.key)


def issue_server_certificate(
    ca_pem: bytes, ca_key_pem: bytes, names: Sequence[str], *, now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A server certificate for ``names`` signed by the CA ``ca_pem``/``ca_key_pem`` (as
    :func:`make_ca` returns them): ``(cert_chain_pem, key_pem)``, the leaf carrying
    ``sip:<first name>`` as a URI SAN too. Raises ``ValueError`` for an unreadable CA."""
    if not names:
        raise UsageError("issue_server_certificate needs at least one name")
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    issuer = _Issuer(x509.load_pem_x509_certificate(ca_pem), ca_key)
    first = names[0]
    uri_host = f"[{first}]" if ":" in first else first
    cert, key = _leaf(issuer, now or dt.datetime.now(dt.UTC), cn=first, dns=list(names),
                      uris=[f"sip:{uri_host}"])  # fmt: skip
    cred = ServerCredential(kind=CertKind.GOOD, chain=(cert,), key=key)
    return cred.chain_pem(), cred.key_pem()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked_serials: Sequence[int] = (),
    *,
    now: dt.datetime | None = None,
    next_update: dt.timedelta = dt.timedelta(days=7),
) -> bytes:
    """A PEM CRL from ``issuer`` listing ``revoked_serials`` (a negative ``next_update``
    makes an expired CRL)."""
    now = now or dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(min(now, now + next_update) - dt.timedelta(days=1))
        .next_update(now + next_update)
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(hours=1))
            .build()
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
