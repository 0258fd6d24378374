"""The pjsip-style server identity check (PROTOCOL-NOTES §6), against the configured name.

The phone compares the host of the URI it dials (its configured server, never the resolved
IP), case-insensitively, with each subjectAltName DNS and IP entry and the host of each
``sip:``/``sips:`` URI entry; when none matches it also tries the subject CN, even when DNS
SANs exist. A ``*.`` name matches only when the firmware has ``tls_allow_wildcard_certs`` and
it is on, and then only for exactly one leading label (RFC 5922 §7.2 forbids wildcards).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["NameCheck", "check_server_name", "sip_uri_host"]


@dataclass(frozen=True, kw_only=True)
class NameCheck:
    """The outcome of the name check."""

    server_name: str
    """The configured name checked."""
    matched: bool
    """Whether an identity in the certificate matched."""
    matched_by: str | None
    """The identity that matched, as ``DNS:name``, ``IP:addr``, ``URI:uri`` or ``CN:name``."""
    identities: tuple[str, ...]
    """Every identity the certificate presents, in the order they were tried."""
    wildcard_refused: bool
    """True when a ``*.`` identity would have matched had wildcards been allowed."""


def sip_uri_host(uri: str) -> str | None:
    """The host of a ``sip:``/``sips:`` URI (``sip:user@host:port;params``), else None."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        return None
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    hostport = rest.rsplit("@", 1)[-1]
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else None
    host = hostport.split(":", 1)[0]
    return host or None


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _name_matches(pattern: str, host: str, *, allow_wildcard: bool) -> tuple[bool, bool]:
    """Return (matched, matched-only-as-a-refused-wildcard)."""
    pattern = _normalise(pattern)
    if pattern == host:
        return True, False
    if pattern.startswith("*."):
        first, dot, parent = host.partition(".")
        one_label = bool(first) and bool(dot) and parent == pattern[2:]
        return (allow_wildcard and one_label), (one_label and not allow_wildcard)
    return False, False


def _ip_equal(text: str, host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    if host_ip is None:
        return False
    try:
        return ipaddress.ip_address(text.strip("[]")) == host_ip
    except ValueError:
        return False


def check_server_name(
    cert: x509.Certificate, server_name: str, *, allow_wildcard: bool = False
) -> NameCheck:
    """Check ``cert`` against ``server_name`` the way the firmware's pjsip does."""
    host = _normalise(server_name.strip().strip("[]"))
    try:
        host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        host_ip = None
    identities: list[str] = []
    candidates: list[tuple[str, bool, bool]] = []  # (label, matched, wildcard refused)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError:  # a malformed extension: no identity can come from it
        san = None
    if san is not None:
        for entry in san:
            if isinstance(entry, x509.DNSName):
                label = f"DNS:{entry.value}"
                ok, refused = _name_matches(entry.value, host, allow_wildcard=allow_wildcard)
                ok = ok or _ip_equal(entry.value, host_ip)
            elif isinstance(entry, x509.IPAddress):
                label = f"IP:{entry.value}"
                ok, refused = (
                    host_ip is not None and entry.value == host_ip,
                    False,
                )
            elif isinstance(entry, x509.UniformResourceIdentifier):
                label = f"URI:{entry.value}"
                uri_host = sip_uri_host(entry.value)
                if uri_host is None:
                    ok, refused = False, False
                else:
                    ok, refused = _name_matches(uri_host, host, allow_wildcard=allow_wildcard)
                    ok = ok or _ip_equal(uri_host, host_ip)
            else:
                continue
            identities.append(label)
            candidates.append((label, ok, refused))
    # pjsip tries the CN whenever no SAN matched, even when DNS SANs exist.
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
        label = f"CN:{value}"
        ok, refused = _name_matches(value, host, allow_wildcard=allow_wildcard)
        ok = ok or _ip_equal(value, host_ip)
        identities.append(label)
        candidates.append((label, ok, refused))
    for label, ok, _ in candidates:
        if ok:
            return NameCheck(
                server_name=server_name,
                matched=True,
                matched_by=label,
                identities=tuple(identities),
                wildcard_refused=False,
            )
    return NameCheck(
        server_name=server_name,
        matched=False,
        matched_by=None,
        identities=tuple(identities),
        wildcard_refused=any(refused for _, _, refused in candidates),
    )
