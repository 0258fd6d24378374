"""The CRL diagnostic (beyond the phone)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from phone_sim.tls.crl import CrlError, check_crl, load_crl
from phone_sim.tls.flags import CertVerifyFlag
from phone_sim.tls.pki import CertKind, TestPki, make_crl


def _crl(pki: TestPki, serials: list[int], **kw: object) -> x509.CertificateRevocationList:
    return load_crl(make_crl(pki.root, pki.root_key, serials, **kw))  # type: ignore[arg-type]


def test_revoked(pki: TestPki) -> None:
    leaf = pki.credentials[CertKind.GOOD].leaf
    diag = check_crl(_crl(pki, [leaf.serial_number]), [leaf], pki.trusted)
    assert diag.flag == CertVerifyFlag.EREVOKED and "revoked" in diag.detail
    assert diag.to_json()["beyond_the_phone"] is True


def test_not_revoked(pki: TestPki) -> None:
    leaf = pki.credentials[CertKind.GOOD].leaf
    assert check_crl(_crl(pki, [12345]), [leaf], pki.trusted).flag == 0


def test_expired_crl(pki: TestPki) -> None:
    leaf = pki.credentials[CertKind.GOOD].leaf
    crl = _crl(pki, [], next_update=dt.timedelta(days=-1))
    diag = check_crl(crl, [leaf], pki.trusted)
    assert diag.flag == CertVerifyFlag.ECRL_FAILURE and "expired" in diag.detail


def test_crl_from_another_issuer(pki: TestPki) -> None:
    leaf = pki.credentials[CertKind.GOOD_INTERMEDIATE].leaf
    diag = check_crl(_crl(pki, []), [leaf], pki.trusted)
    assert (
        diag.flag == CertVerifyFlag.ECRL_FAILURE
        and "not from the certificate's issuer" in diag.detail
    )


def test_crl_issuer_unknown(pki: TestPki) -> None:
    leaf = pki.credentials[CertKind.GOOD].leaf
    diag = check_crl(_crl(pki, []), [leaf], [])
    assert diag.flag == CertVerifyFlag.ECRL_FAILURE


def test_garbage_crl() -> None:
    with pytest.raises(CrlError, match="not a CRL"):
        load_crl(b"garbage")
    with pytest.raises(CrlError):
        load_crl(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
