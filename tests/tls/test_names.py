"""The pjsip-style name check against the configured server name."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.tls.names import check_server_name, sip_uri_host

_KEY = ec.generate_private_key(ec.SECP256R1())


def _cert(cn: str | None = None, sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    name = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(_KEY, hashes.SHA256())


DNS = x509.DNSName
URI = x509.UniformResourceIdentifier


def test_dns_san_matches_case_insensitively() -> None:
    r = check_server_name(_cert(sans=[DNS("PBX.Example.com")]), "pbx.example.COM")
    assert r.matched and r.matched_by == "DNS:PBX.Example.com"


def test_cn_is_tried_even_when_dns_sans_exist() -> None:
    r = check_server_name(_cert("pbx.example.com", [DNS("other.example.com")]), "pbx.example.com")
    assert r.matched and r.matched_by == "CN:pbx.example.com"


def test_no_match_anywhere() -> None:
    r = check_server_name(_cert("a.example.com", [DNS("b.example.com")]), "pbx.example.com")
    assert not r.matched and r.identities == ("DNS:b.example.com", "CN:a.example.com")
    assert not r.wildcard_refused


@pytest.mark.parametrize(
    "uri",
    ["sip:pbx.example.com", "sips:pbx.example.com:5061;transport=tls", "sip:u@pbx.example.com"],
)
def test_sip_uri_host_matches(uri: str) -> None:
    assert check_server_name(_cert(sans=[URI(uri)]), "pbx.example.com").matched


def test_http_uri_does_not_match() -> None:
    assert not check_server_name(
        _cert(sans=[URI("https://pbx.example.com/")]), "pbx.example.com"
    ).matched


def test_ip_san_matches_a_configured_ip_not_a_name() -> None:
    cert = _cert(sans=[x509.IPAddress(ipaddress.ip_address("192.0.2.7"))])
    assert check_server_name(cert, "192.0.2.7").matched
    assert not check_server_name(cert, "192.0.2.8").matched
    cert6 = _cert(sans=[x509.IPAddress(ipaddress.ip_address("::1"))])
    assert check_server_name(cert6, "[::1]").matched


def test_wildcards_refused_unless_allowed() -> None:
    cert = _cert(sans=[DNS("*.example.com")])
    refused = check_server_name(cert, "pbx.example.com")
    assert not refused.matched and refused.wildcard_refused
    assert check_server_name(cert, "pbx.example.com", allow_wildcard=True).matched


@pytest.mark.parametrize("host", ["a.b.example.com", "example.com", ".example.com"])
def test_wildcard_covers_exactly_one_leading_label(host: str) -> None:
    cert = _cert(sans=[DNS("*.example.com")])
    assert not check_server_name(cert, host, allow_wildcard=True).matched


def test_wildcard_in_cn_only() -> None:
    cert = _cert("*.example.com")
    assert not check_server_name(cert, "pbx.example.com").matched
    assert (
        check_server_name(cert, "pbx.example.com", allow_wildcard=True).matched_by
        == "CN:*.example.com"
    )


def test_partial_wildcards_never_match() -> None:
    cert = _cert(sans=[DNS("pbx*.example.com"), DNS("*bx.example.com")])
    assert not check_server_name(cert, "pbx1.example.com", allow_wildcard=True).matched


def test_trailing_dot_is_ignored() -> None:
    assert check_server_name(_cert(sans=[DNS("pbx.example.com.")]), "pbx.example.com").matched


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("sip:pbx.example.com", "pbx.example.com"),
        ("SIPS:alice@[2001:db8::1]:5061", "2001:db8::1"),
        ("sip:h:5061;transport=tls", "h"),
        ("sip:h?x=y", "h"),
        ("http://h/", None),
        ("sip:", None),
        ("tel:+123", None),
    ],
)
def test_sip_uri_host(uri: str, host: str | None) -> None:
    assert sip_uri_host(uri) == host


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(_LABEL, min_size=2, max_size=4), st.booleans())
def test_exact_names_always_match_and_wildcards_follow_the_setting(
    labels: list[str], allow: bool
) -> None:
    host = ".".join(labels)
    assert check_server_name(_cert(sans=[DNS(host.upper())]), host, allow_wildcard=allow).matched
    wildcard = _cert(sans=[DNS("*." + ".".join(labels[1:]))])
    assert check_server_name(wildcard, host, allow_wildcard=allow).matched is allow
    deeper = "x." + host
    assert not check_server_name(wildcard, deeper, allow_wildcard=True).matched


@given(st.text(max_size=30))
def test_any_configured_name_gives_a_verdict(name: str) -> None:
    r = check_server_name(_cert("pbx.example.com", [DNS("pbx.example.com")]), name)
    assert r.matched is (name.strip().strip("[]").rstrip(".").lower() == "pbx.example.com")
