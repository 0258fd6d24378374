"""The test PKI: every certificate kind has the property its name promises."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from phone_sim.errors import UsageError
from phone_sim.tls.pki import CertKind, TestPki, generate_test_pki, make_server_identity


def test_every_kind_is_generated(pki: TestPki) -> None:
    assert set(pki.credentials) == set(CertKind)
    assert all(isinstance(c.key, ec.EllipticCurvePrivateKey) for c in pki.credentials.values())


def test_only_three_kinds_send_more_than_the_leaf(pki: TestPki) -> None:
    longer = {k: len(c.chain) for k, c in pki.credentials.items() if len(c.chain) > 1}
    assert longer == {
        CertKind.GOOD_INTERMEDIATE: 2,
        CertKind.PATH_LENGTH: 3,
        CertKind.UNKNOWN_CA_ROOT_SENT: 2,
    }


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(getattr(e, "value", e)) for e in ext]


def test_names(pki: TestPki) -> None:
    c = pki.credentials
    assert _sans(c[CertKind.GOOD].leaf) == ["pbx.phone-sim.test", "sip:pbx.phone-sim.test"]
    assert _sans(c[CertKind.CN_ONLY].leaf) == []
    assert _sans(c[CertKind.WILDCARD_SAN].leaf) == ["*.phone-sim.test"]
    assert _sans(c[CertKind.WILDCARD_CN].leaf) == []
    assert _sans(c[CertKind.URI_SAN].leaf) == ["sip:pbx.phone-sim.test"]
    assert _sans(c[CertKind.OTHER_HOST].leaf)[0] == "other.phone-sim.test"


def test_validity(pki: TestPki) -> None:
    now = dt.datetime.now(dt.UTC)
    assert pki.credentials[CertKind.EXPIRED].leaf.not_valid_after_utc < now
    assert pki.credentials[CertKind.NOT_YET_VALID].leaf.not_valid_before_utc > now


def test_issuers(pki: TestPki) -> None:
    c = pki.credentials
    self_signed = c[CertKind.SELF_SIGNED].leaf
    assert self_signed.issuer == self_signed.subject
    assert c[CertKind.UNKNOWN_CA].leaf.issuer != pki.root.subject
    assert c[CertKind.GOOD].leaf.issuer == pki.root.subject
    not_ca = next(t for t in pki.trusted if t.subject == c[CertKind.ISSUER_NOT_CA].leaf.issuer)
    assert not not_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    path = c[CertKind.PATH_LENGTH].chain
    assert path[2].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_client_auth_only(pki: TestPki) -> None:
    eku = (
        pki.credentials[CertKind.CLIENT_AUTH_EKU]
        .leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        .value
    )
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_sha1_certificate_is_really_sha1_signed_and_verifies(pki: TestPki) -> None:
    leaf = pki.credentials[CertKind.SHA1_SIGNED].leaf
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha1"
    key = pki.root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))


def test_server_name_needs_a_parent() -> None:
    with pytest.raises(UsageError, match="needs a parent domain"):
        generate_test_pki("localhost")


def test_make_server_identity() -> None:
    ca_pem, chain_pem, key_pem = make_server_identity(["pbx.lab.test", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    (leaf,) = x509.load_pem_x509_certificates(chain_pem)
    assert leaf.issuer == ca.subject
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["pbx.lab.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:pbx.lab.test"]
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(UsageError):
        make_server_identity([])


def test_keys_stay_out_of_repr(pki: TestPki) -> None:
    assert "key" not in repr(pki.credentials[CertKind.GOOD]).replace("kind", "")
    assert "root_key" not in repr(pki)


def test_fresh_pki_each_call() -> None:
    a, b = generate_test_pki(), generate_test_pki()
    assert a.root.serial_number != b.root.serial_number
