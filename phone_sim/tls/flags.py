"""The pjlib certificate verification bitmask (``pj_ssl_cert_verify_flag_t``) the phone shows.

The mapping from OpenSSL's ``X509_V_ERR_*`` errors is by *symbolic* name (PROTOCOL-NOTES §6):
OpenSSL renumbers its errors between releases, so numbers are turned into names by
:mod:`phone_sim.tls._openssl` with the running library's own constants, and only then mapped
here. A name with no mapping is :attr:`CertVerifyFlag.EUNKNOWN`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from phone_sim.errors import UsageError

__all__ = [
    "FLAG_INFO",
    "OPENSSL_ERROR_FLAGS",
    "BitmaskParseError",
    "CertVerifyFlag",
    "DecodedBitmask",
    "FlagInfo",
    "decode_bitmask",
    "flag_for_error",
    "flag_names",
    "mask_for_errors",
]


class CertVerifyFlag(enum.IntFlag):
    """pjlib's ``pj_ssl_cert_verify_flag_t``: the bits of the phone's TLS error."""

    EISSUER_NOT_FOUND = 0x00000001
    EUNTRUSTED = 0x00000002
    EVALIDITY_PERIOD = 0x00000004
    EINVALID_FORMAT = 0x00000008
    EINVALID_PURPOSE = 0x00000010
    EISSUER_MISMATCH = 0x00000020
    ECRL_FAILURE = 0x00000040
    EREVOKED = 0x00000080
    ECHAIN_TOO_LONG = 0x00000100
    EWEAK_SIGNATURE = 0x00000200
    EIDENTITY_NOT_MATCH = 0x40000000
    EUNKNOWN = 0x80000000


F = CertVerifyFlag

#: PROTOCOL-NOTES §6: OpenSSL ``X509_V_ERR_<name>`` -> pjlib flag. EWEAK_SIGNATURE is defined by
#: pjlib but never set by its OpenSSL backend; EIDENTITY_NOT_MATCH comes from the name check.
OPENSSL_ERROR_FLAGS: dict[str, CertVerifyFlag] = {
    "UNABLE_TO_GET_ISSUER_CERT": F.EISSUER_NOT_FOUND,
    "DEPTH_ZERO_SELF_SIGNED_CERT": F.EUNTRUSTED,
    "SELF_SIGNED_CERT_IN_CHAIN": F.EUNTRUSTED,
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": F.EUNTRUSTED,
    "CERT_UNTRUSTED": F.EUNTRUSTED,
    "CERT_NOT_YET_VALID": F.EVALIDITY_PERIOD,
    "CERT_HAS_EXPIRED": F.EVALIDITY_PERIOD,
    "ERROR_IN_CERT_NOT_BEFORE_FIELD": F.EINVALID_FORMAT,
    "ERROR_IN_CERT_NOT_AFTER_FIELD": F.EINVALID_FORMAT,
    "UNABLE_TO_DECRYPT_CERT_SIGNATURE": F.EINVALID_FORMAT,
    "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY": F.EINVALID_FORMAT,
    "INVALID_PURPOSE": F.EINVALID_PURPOSE,
    "CERT_REJECTED": F.EINVALID_PURPOSE,
    "INVALID_CA": F.EINVALID_PURPOSE,
    "CERT_SIGNATURE_FAILURE": F.EISSUER_MISMATCH,
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE": F.EISSUER_MISMATCH,
    "SUBJECT_ISSUER_MISMATCH": F.EISSUER_MISMATCH,
    "AKID_SKID_MISMATCH": F.EISSUER_MISMATCH,
    "AKID_ISSUER_SERIAL_MISMATCH": F.EISSUER_MISMATCH,
    "KEYUSAGE_NO_CERTSIGN": F.EISSUER_MISMATCH,
    "UNABLE_TO_GET_CRL": F.ECRL_FAILURE,
    "CRL_NOT_YET_VALID": F.ECRL_FAILURE,
    "CRL_HAS_EXPIRED": F.ECRL_FAILURE,
    "UNABLE_TO_DECRYPT_CRL_SIGNATURE": F.ECRL_FAILURE,
    "CRL_SIGNATURE_FAILURE": F.ECRL_FAILURE,
    "ERROR_IN_CRL_LAST_UPDATE_FIELD": F.ECRL_FAILURE,
    "ERROR_IN_CRL_NEXT_UPDATE_FIELD": F.ECRL_FAILURE,
    "CERT_REVOKED": F.EREVOKED,
    "CERT_CHAIN_TOO_LONG": F.ECHAIN_TOO_LONG,
    "PATH_LENGTH_EXCEEDED": F.ECHAIN_TOO_LONG,
}


def flag_for_error(name: str | None) -> CertVerifyFlag:
    """The flag for OpenSSL error ``name`` (``X509_V_ERR_`` prefix optional); else EUNKNOWN."""
    if name is None:
        return F.EUNKNOWN
    return OPENSSL_ERROR_FLAGS.get(name.removeprefix("X509_V_ERR_"), F.EUNKNOWN)


def mask_for_errors(names: Iterable[str | None]) -> CertVerifyFlag:
    """OR together the flags of every error name."""
    mask = CertVerifyFlag(0)
    for name in names:
        mask |= flag_for_error(name)
    return mask


def flag_names(mask: int) -> list[str]:
    """The names of the known flags set in ``mask``, lowest bit first."""
    return [f.name for f in CertVerifyFlag if f.name is not None and mask & f.value]


@dataclass(frozen=True, kw_only=True)
class FlagInfo:
    """What a flag means and what to do about it."""

    meaning: str
    """The vendor page's definition."""
    cause: str
    """Plain-English causes."""
    fix: str
    """How to fix it."""


FLAG_INFO: dict[CertVerifyFlag, FlagInfo] = {
    F.EISSUER_NOT_FOUND: FlagInfo(
        meaning="Issuer cert not found",
        cause="a certificate the server sent names an issuer that is neither sent nor trusted",
        fix="send the full chain (leaf and intermediates) from the server",
    ),
    F.EUNTRUSTED: FlagInfo(
        meaning="Cert untrusted",
        cause="the chain does not end at a root CA the phone trusts (self-signed, private or "
        "unknown CA, or a missing intermediate)",
        fix="use a publicly-signed certificate, or load the private root CA onto the phone; "
        "if an intermediate is missing, send it from the server",
    ),
    F.EVALIDITY_PERIOD: FlagInfo(
        meaning="Cert expired or not yet valid",
        cause="the certificate has expired or is not valid yet, or the phone's clock is wrong",
        fix="renew the certificate, or set the phone's NTP server so its clock is right",
    ),
    F.EINVALID_FORMAT: FlagInfo(
        meaning="Some cert fields have invalid format",
        cause="a date field or the signature of a certificate cannot be decoded",
        fix="re-issue the certificate with a standard tool",
    ),
    F.EINVALID_PURPOSE: FlagInfo(
        meaning="Cert can't be used for specified purpose",
        cause="the leaf is not for TLS servers (e.g. clientAuth-only extendedKeyUsage), or an "
        "issuer is not a CA (basicConstraints CA:FALSE)",
        fix="issue the server certificate with extendedKeyUsage serverAuth from a real CA",
    ),
    F.EISSUER_MISMATCH: FlagInfo(
        meaning="Issuer info in cert does not match candidate issuer",
        cause="the leaf's signature could not be checked against any issuer (often with "
        "EUNTRUSTED: an unknown CA or a missing intermediate), or an issuer lacks keyCertSign",
        fix="send the intermediate certificates and load the root CA onto the phone",
    ),
    F.ECRL_FAILURE: FlagInfo(
        meaning="CRL cert could not be found or read",
        cause="a certificate revocation list is missing, expired or badly signed",
        fix="publish a current CRL signed by the issuing CA",
    ),
    F.EREVOKED: FlagInfo(
        meaning="Cert has been revoked",
        cause="the certificate's serial number is on its CA's revocation list",
        fix="issue and install a new certificate",
    ),
    F.ECHAIN_TOO_LONG: FlagInfo(
        meaning="Cert chain length too long",
        cause="the chain is longer than a CA's pathLenConstraint allows",
        fix="issue the server certificate from a CA whose path length allows it",
    ),
    F.EWEAK_SIGNATURE: FlagInfo(
        meaning="Weak signature",
        cause="pjlib defines this bit, but its OpenSSL backend never sets it",
        fix="re-issue the certificate with SHA-256 or better",
    ),
    F.EIDENTITY_NOT_MATCH: FlagInfo(
        meaning="Server identity mismatch",
        cause="no subjectAltName DNS/IP/sip: URI entry nor the subject CN equals the server "
        "name the phone is configured with; a wildcard (*.) name is forbidden by RFC 5922 "
        "§7.2 unless tls_allow_wildcard_certs is on",
        fix="use a certificate naming the server exactly as the phone dials it, or enable "
        "tls_allow_wildcard_certs on firmware >= 2_9_2 (D80 >= 1_12_1) for a wildcard",
    ),
    F.EUNKNOWN: FlagInfo(
        meaning="Unknown verification error",
        cause="an OpenSSL verification error pjlib does not map (e.g. a signature digest "
        "too weak for the OpenSSL in use)",
        fix="see the OpenSSL error names reported with the verdict",
    ),
}


class BitmaskParseError(UsageError):
    """Text that is not a TLS error bitmask."""


@dataclass(frozen=True, kw_only=True)
class DecodedBitmask:
    """A bitmask decoded for ``phone-sim tls-error``."""

    value: int
    """The 32-bit mask decoded."""
    flags: tuple[CertVerifyFlag, ...]
    """The known flags set, lowest bit first."""
    unknown_bits: int
    """Bits set that pjlib does not define."""
    note: str | None = None
    """A remark about the input, e.g. the vendor page's typo."""


_VENDOR_TYPO = 0x400000022


#: ASCII only: ``int()`` takes fullwidth and Arabic-Indic digits, which no phone shows.
_MASK = re.compile(r"(0[xX])?([0-9a-fA-F]+)")


def decode_bitmask(text: str) -> DecodedBitmask:
    """Decode ``0x40000022``, ``0x4000 0022`` (the vendor's spacing) or ``40000022``.

    The phone shows its bitmask in hex, so bare digits are read as hex too, with a note
    saying so and what they would be as a decimal number. The vendor page's example
    ``0x400000022`` has one digit too many; it is decoded as ``0x40000022`` with a note
    saying so. Other values wider than 32 bits are refused.
    """
    cleaned = re.sub(r"[ \t_]", "", text)
    match = _MASK.fullmatch(cleaned)
    if match is None:
        raise BitmaskParseError(
            f"{text!r} is not a bitmask: give a hex number like 0x40000022 (the 0x may be "
            "left out)"
        )
    value = int(match.group(2), 16)
    note = None
    if match.group(1) is None and re.fullmatch(r"[0-9]+", match.group(2)):
        as_decimal = int(match.group(2), 10)
        other = (f"0x{as_decimal:08x}" if as_decimal <= 0xFFFFFFFF
                 else "wider than 32 bits")
        note = (f"{cleaned} has no 0x: read as hex, as the phone shows it (as a decimal number "
                f"it would be {other})")
    if value == _VENDOR_TYPO:
        note = "0x400000022 (the vendor page's example) has one digit too many; decoding 0x40000022"
        value = 0x40000022
    elif value > 0xFFFFFFFF:
        raise BitmaskParseError(f"{text!r} is wider than 32 bits; pjlib's bitmask is 32 bits")
    flags = tuple(f for f in CertVerifyFlag if value & f.value)
    known = 0
    for f in flags:
        known |= f.value
    return DecodedBitmask(value=value, flags=flags, unknown_bits=value & ~known, note=note)
