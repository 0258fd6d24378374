"""An optional revocation diagnostic, beyond the phone.

The firmware (pjsip) never turns CRL checking on, so the emulated verdict never includes
EREVOKED or ECRL_FAILURE. ``tls-check --crl FILE`` adds this separate check so a support
engineer can see whether the server's certificate is revoked; the output marks it as something
the phone would not see.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from phone_sim.errors import UsageError
from phone_sim.tls.flags import CertVerifyFlag
from phone_sim.tls.verdict import CrlDiagnostic

__all__ = ["CrlError", "check_crl", "load_crl"]


class CrlError(UsageError):
    """A CRL file that cannot be read."""


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Parse a PEM or DER CRL."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"not a CRL (PEM or DER): {exc}") from None


def check_crl(
    crl: x509.CertificateRevocationList,
    chain: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    at: dt.datetime | None = None,
) -> CrlDiagnostic:
    """Check the server certificate ``chain[0]`` against ``crl`` at time ``at`` (default now)."""
    if not chain:
        return CrlDiagnostic(flag=CertVerifyFlag(0), detail="no server certificate to check")
    leaf = chain[0]
    at = at or dt.datetime.now(dt.UTC)
    if crl.issuer != leaf.issuer:
        return CrlDiagnostic(
            flag=CertVerifyFlag.ECRL_FAILURE,
            detail=f"the CRL is from {crl.issuer.rfc4514_string()}, not from the certificate's "
            f"issuer {leaf.issuer.rfc4514_string()}",
        )
    issuers = [c for c in (*chain[1:], *trusted) if c.subject == crl.issuer]
    key = issuers[0].public_key() if issuers else None
    if not isinstance(
        key,
        (
            rsa.RSAPublicKey,
            ec.EllipticCurvePublicKey,
            dsa.DSAPublicKey,
            ed25519.Ed25519PublicKey,
            ed448.Ed448PublicKey,
        ),
    ):
        return CrlDiagnostic(
            flag=CertVerifyFlag.ECRL_FAILURE,
            detail="the CRL issuer's certificate is not in the chain or the trust store",
        )
    if not crl.is_signature_valid(key):
        return CrlDiagnostic(
            flag=CertVerifyFlag.ECRL_FAILURE, detail="the CRL signature does not verify"
        )
    next_update = crl.next_update_utc
    if crl.last_update_utc > at:
        return CrlDiagnostic(flag=CertVerifyFlag.ECRL_FAILURE, detail="the CRL is not yet valid")
    if next_update is not None and next_update < at:
        return CrlDiagnostic(
            flag=CertVerifyFlag.ECRL_FAILURE,
            detail=f"the CRL expired on {next_update.isoformat()}",
        )
    revoked = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    if revoked is not None:
        return CrlDiagnostic(
            flag=CertVerifyFlag.EREVOKED,
            detail=f"serial {leaf.serial_number:x} was revoked on "
            f"{revoked.revocation_date_utc.isoformat()}",
        )
    return CrlDiagnostic(
        flag=CertVerifyFlag(0), detail=f"serial {leaf.serial_number:x} is not on the CRL"
    )
