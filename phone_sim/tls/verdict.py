"""The firmware's decision, sans I/O: collected errors + name check + profile -> a verdict.

The policy (PROTOCOL-NOTES §5-§6): every verification error OpenSSL reports across the chain
adds its pjlib flag; a failed name check adds EIDENTITY_NOT_MATCH. A validating firmware
(>= 2_9_0, D80 >= 1_12_0) refuses on any set bit. An older firmware connects anyway; the
verdict then carries the mask it *would* have shown, with ``enforced`` False. A firmware
without TLS never connects.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from phone_sim.errors import RemoteError
from phone_sim.firmware import FirmwareProfile
from phone_sim.tls._openssl import openssl_version
from phone_sim.tls.flags import FLAG_INFO, CertVerifyFlag, FlagInfo, flag_for_error, flag_names
from phone_sim.tls.names import NameCheck

__all__ = [
    "CertSummary",
    "CrlDiagnostic",
    "NotTlsPeer",
    "TlsConnectError",
    "TlsError",
    "TlsHandshakeError",
    "TlsNoSharedCipher",
    "TlsNotSupported",
    "TlsRefused",
    "TlsVerdict",
    "TlsVersionMismatch",
    "VerifyError",
    "decide",
    "failed_verdict",
]


@dataclass(frozen=True, kw_only=True)
class VerifyError:
    """One error OpenSSL reported through the verify callback."""

    code: int
    """OpenSSL's number for the error (differs between OpenSSL versions)."""
    name: str | None
    """The symbolic ``X509_V_ERR_*`` name without the prefix, None if the bindings lack it."""
    message: str
    """OpenSSL's text for the error."""
    depth: int
    """Chain depth of the certificate concerned, 0 = the server's own."""
    subject: str
    """Subject of the certificate concerned."""

    @property
    def flag(self) -> CertVerifyFlag:
        """The pjlib flag this error sets."""
        return flag_for_error(self.name)


def _name_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:  # pragma: no cover - undecodable attribute
        return repr(name)


@dataclass(frozen=True, kw_only=True)
class CertSummary:
    """What ``tls-check`` shows about one certificate of the chain."""

    subject: str
    """Subject, RFC 4514."""
    issuer: str
    """Issuer, RFC 4514."""
    not_before: dt.datetime
    """Start of validity (UTC)."""
    not_after: dt.datetime
    """End of validity (UTC)."""
    sans: tuple[str, ...]
    """subjectAltName entries as ``DNS:x``, ``IP:x``, ``URI:x``."""
    signature_hash: str | None
    """The signature's digest (``sha256``, ``sha1``...)."""

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> CertSummary:
        """Summarise a cryptography certificate."""
        sans: list[str] = []
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (x509.ExtensionNotFound, ValueError):
            ext = None
        if ext is not None:
            for entry in ext:
                if isinstance(entry, x509.DNSName):
                    sans.append(f"DNS:{entry.value}")
                elif isinstance(entry, x509.IPAddress):
                    sans.append(f"IP:{entry.value}")
                elif isinstance(entry, x509.UniformResourceIdentifier):
                    sans.append(f"URI:{entry.value}")
                else:
                    sans.append(type(entry).__name__)
        try:
            algorithm = cert.signature_hash_algorithm
            sig = algorithm.name if algorithm is not None else None
        except (ValueError, TypeError):  # unsupported signature algorithms
            sig = None
        return cls(
            subject=_name_text(cert.subject),
            issuer=_name_text(cert.issuer),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sans=tuple(sans),
            signature_hash=sig,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sans": list(self.sans),
            "signature_hash": self.signature_hash,
        }


@dataclass(frozen=True, kw_only=True)
class CrlDiagnostic:
    """The optional revocation check, something the phone itself never does."""

    flag: CertVerifyFlag
    """EREVOKED, ECRL_FAILURE, or 0 when the CRL is fine and does not list the certificate."""
    detail: str
    """What was found."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "beyond_the_phone": True,
            "bitmask": int(self.flag),
            "flags": flag_names(self.flag),
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True)
class TlsVerdict:
    """What the emulated phone concluded about one TLS connection attempt."""

    profile: FirmwareProfile
    """The firmware that judged."""
    server_name: str
    """The configured server name the identity was checked against."""
    connects: bool
    """Whether the phone goes on with the connection."""
    enforced: bool
    """Whether the firmware validates (a non-zero mask then refuses)."""
    bitmask: CertVerifyFlag
    """The pjlib mask the phone shows (or would show, when not enforced)."""
    errors: tuple[VerifyError, ...] = ()
    """Every OpenSSL verification error, in the order reported."""
    name_check: NameCheck | None = None
    """The identity check, None without a certificate."""
    tls_version: str | None = None
    """Negotiated TLS version, None when no handshake completed."""
    cipher: str | None = None
    """Negotiated cipher, None when no handshake completed."""
    certificates: tuple[x509.Certificate, ...] = field(default=(), repr=False, compare=False)
    """The chain as the server sent it, leaf first."""
    reason: str | None = None
    """Why the verdict is what it is, in one sentence."""
    crl: CrlDiagnostic | None = None
    """The optional CRL diagnostic (beyond the phone)."""

    @functools.cached_property
    def chain(self) -> tuple[CertSummary, ...]:
        """Summaries of :attr:`certificates`, computed when first asked for (load tests never
        ask, and summarising costs more than the name check)."""
        return tuple(CertSummary.from_certificate(c) for c in self.certificates)

    @property
    def verdict(self) -> str:
        """``"ok"`` when the phone connects, else ``"fail"``."""
        return "ok" if self.connects else "fail"

    @property
    def flags(self) -> list[str]:
        """The names of the flags set."""
        return flag_names(self.bitmask)

    @property
    def bitmask_hex(self) -> str:
        """The mask as the phone writes it, ``0x40000022``."""
        return f"0x{int(self.bitmask):08x}"

    def explain(self) -> list[tuple[CertVerifyFlag, FlagInfo]]:
        """For each flag set, its meaning and a cause and fix specific to this connection."""
        out: list[tuple[CertVerifyFlag, FlagInfo]] = []
        for flag in CertVerifyFlag:
            if self.bitmask & flag.value:
                out.append((flag, self._specific(flag, FLAG_INFO[flag])))
        return out

    def _specific(self, flag: CertVerifyFlag, info: FlagInfo) -> FlagInfo:
        nc = self.name_check
        if flag is CertVerifyFlag.EIDENTITY_NOT_MATCH and nc is not None:
            names = ", ".join(nc.identities) or "no name at all"
            if nc.wildcard_refused:
                if self.profile.has_wildcard_setting:
                    fix = (
                        f"use a certificate naming {nc.server_name} exactly, or set "
                        "tls_allow_wildcard_certs=1 on this phone"
                    )
                else:
                    first = "1_12_1" if self.profile.model.value == "D80" else "2_9_2"
                    fix = (
                        f"use a certificate naming {nc.server_name} exactly, or upgrade to "
                        f"firmware >= {first} and enable tls_allow_wildcard_certs"
                    )
                return replace(
                    info,
                    cause=f"only a wildcard name matches ({names}); wildcards are forbidden by "
                    "RFC 5922 §7.2 and this phone does not allow them",
                    fix=fix,
                )
            return replace(
                info,
                cause=f"the phone is configured with {nc.server_name} but the certificate "
                f"names {names}",
                fix=f"issue the certificate with subjectAltName {_san_for(nc.server_name)}, "
                "or configure the phone with a name the certificate carries",
            )
        if flag is CertVerifyFlag.EVALIDITY_PERIOD:
            for error in self.errors:
                if error.name in ("CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"):
                    return replace(
                        info,
                        cause=f"{error.message} at depth {error.depth} ({error.subject}), "
                        "by the phone's clock",
                    )
        return info

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of ``tls-check``."""
        return {
            "verdict": self.verdict,
            "bitmask": int(self.bitmask),
            "bitmask_hex": self.bitmask_hex,
            "flags": self.flags,
            "enforced": self.enforced,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "reason": self.reason,
            "model": self.profile.model.value,
            "firmware": self.profile.firmware,
            "user_agent": self.profile.user_agent,
            "tls_allow_wildcard_certs": self.profile.wildcard_setting,
            "server_name": self.server_name,
            "name_matched_by": self.name_check.matched_by if self.name_check else None,
            "errors": [
                {
                    "name": e.name,
                    "code": e.code,
                    "message": e.message,
                    "depth": e.depth,
                    "flag": e.flag.name,
                }
                for e in self.errors
            ],
            "causes": [
                {"flag": flag.name, "meaning": info.meaning, "cause": info.cause, "fix": info.fix}
                for flag, info in self.explain()
            ],
            "chain": [c.to_json() for c in self.chain],
            "crl": self.crl.to_json() if self.crl else None,
            "openssl_version": openssl_version(),
        }


def _san_for(name: str) -> str:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name.strip('[]')}"


def decide(
    profile: FirmwareProfile,
    *,
    server_name: str,
    errors: Sequence[VerifyError],
    name_check: NameCheck | None,
    tls_version: str | None,
    cipher: str | None,
    certificates: Sequence[x509.Certificate] = (),
) -> TlsVerdict:
    """The firmware's verdict on a completed handshake."""
    mask = CertVerifyFlag(0)
    for error in errors:
        mask |= error.flag
    if name_check is not None and not name_check.matched:
        mask |= CertVerifyFlag.EIDENTITY_NOT_MATCH
    enforced = profile.validates_server
    connects = profile.tls_supported and (not enforced or not mask)
    if not certificates:
        reason = "anonymous cipher: the server sent no certificate, so nothing was verified"
    elif not mask:
        reason = "the certificate passes every check the firmware makes"
    elif enforced:
        reason = (
            f"firmware {profile.firmware} validates the server certificate and refuses it "
            f"({f'0x{int(mask):08x}'} {'|'.join(flag_names(mask))})"
        )
    else:
        reason = (
            f"firmware {profile.firmware} does not validate the server certificate, so it "
            f"connects; a validating firmware would show 0x{int(mask):08x}"
        )
    return TlsVerdict(
        profile=profile,
        server_name=server_name,
        connects=connects,
        enforced=enforced,
        bitmask=mask,
        errors=tuple(errors),
        name_check=name_check,
        tls_version=tls_version,
        cipher=cipher,
        certificates=tuple(certificates),
        reason=reason,
    )


def failed_verdict(profile: FirmwareProfile, *, server_name: str, reason: str) -> TlsVerdict:
    """A verdict for an attempt that never completed a handshake (no TLS, no common version)."""
    return TlsVerdict(
        profile=profile,
        server_name=server_name,
        connects=False,
        enforced=profile.validates_server,
        bitmask=CertVerifyFlag(0),
        reason=reason,
    )


class TlsError(RemoteError):
    """A TLS connection attempt that did not give a usable connection."""

    def __init__(self, message: str, *, verdict: TlsVerdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


class TlsRefused(TlsError):
    """The emulated phone refuses the server (its validation failed); ``.bitmask`` says why."""

    exit_code = 1

    def __init__(self, verdict: TlsVerdict) -> None:
        super().__init__(
            f"the phone refuses the server: {verdict.bitmask_hex} {'|'.join(verdict.flags)}",
            verdict=verdict,
        )

    @property
    def bitmask(self) -> CertVerifyFlag:
        """The pjlib mask the phone shows."""
        assert self.verdict is not None
        return self.verdict.bitmask


class TlsNotSupported(TlsError):
    """The firmware has no TLS at all."""

    exit_code = 1


class TlsHandshakeError(TlsError):
    """The TLS handshake failed; the phone cannot connect."""

    exit_code = 1


class TlsVersionMismatch(TlsHandshakeError):
    """Client and server have no TLS version in common (e.g. a TLS 1.3-only server)."""


class TlsNoSharedCipher(TlsHandshakeError):
    """Client and server have no cipher in common."""


class NotTlsPeer(TlsError):
    """The peer does not speak TLS."""

    exit_code = 2


class TlsConnectError(TlsError):
    """The TCP connection could not be made or the peer did not answer in time."""

    exit_code = 2
