"""SIP, SIPS, tel and opaque URIs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.sip import SipParseError, SipUri
from phone_sim.sip.uri import (
    HEADER_CHARS,
    PARAM_CHARS,
    PASSWORD_CHARS,
    USER_CHARS,
    escape,
    unescape,
)


@pytest.mark.parametrize(
    "text",
    [
        "sip:pbx.example.com",
        "sip:101@pbx.example.com",
        "sips:101@pbx.example.com:5061;transport=tls",
        "sip:101@192.0.2.10:5061;transport=TLS;ob",
        "sip:alice:secret@example.com;lr",
        "sip:[2001:db8::1]:5060",
        "sip:u@[::1]",
        "sip:proxy@server.example.com:5060;transport=udp",
        "sip:a@b?Subject=hello&Priority=urgent",
        "sip:I%20have%20spaces@example.net",
        "sip:%00@h",
        "tel:+1-201-555-0123;phone-context=example.com",
        "urn:service:sos",
        "soap.beep://192.0.2.103:3002",
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
    ],
)
def test_round_trip(text: str) -> None:
    uri = SipUri.parse(text)
    assert str(uri) == text
    assert SipUri.parse(str(uri)) == uri


def test_fields() -> None:
    uri = SipUri.parse("SIPS:101:pw@[2001:DB8::1]:5061;transport=TLS;lr;maddr=239.1.1.1?h=v")
    assert uri.scheme == "sips" and uri.is_secure
    assert uri.user == "101" and uri.password == "pw"
    assert uri.host == "[2001:DB8::1]" and uri.host_address == "2001:DB8::1"
    assert uri.port == 5061
    assert uri.transport == "tls"
    assert uri.param("TRANSPORT") == "TLS"
    assert uri.has_param("lr") and uri.param("lr") is None
    assert uri.param("missing", "dflt") == "dflt"
    assert uri.headers == (("h", "v"),)


def test_escaped_and_unescaped_forms_compare_equal() -> None:
    assert SipUri.parse("sip:%75se%72@example.com") == SipUri.parse("sip:user@example.com")
    assert str(SipUri.parse("sip:%75se%72@example.com")) == "sip:user@example.com"
    uri = SipUri.parse("sip:cal%6Cer@h;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.params == (("lr", None), ("name", "value%41"))
    assert str(uri) == "sip:caller@h;lr;name=value%2541"


def test_build_and_modify() -> None:
    uri = SipUri(user="101", host="pbx", port=5061).with_param("transport", "tls")
    assert str(uri) == "sip:101@pbx:5061;transport=tls"
    assert str(uri.with_param("transport", "udp")) == "sip:101@pbx:5061;transport=udp"
    assert str(uri.without_param("transport")) == "sip:101@pbx:5061"
    assert str(SipUri(host="::1", port=5060)) == "sip:[::1]:5060"
    assert str(SipUri(user="a b@c", host="h")) == "sip:a%20b%40c@h"
    assert SipUri(scheme="SIP", host="h").scheme == "sip"


def test_repr_hides_the_password() -> None:
    uri = SipUri.parse("sip:alice:hunter2@example.com")
    assert "hunter2" not in repr(uri)
    assert "alice" in repr(uri)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("example.com", "scheme"),
        ("1sip:a@b", "scheme"),
        ("sip:a b@c", "illegal character"),
        ("<sip:a@b>", "illegal character"),
        ("sip:", "missing host"),
        ("sip:@h", "empty user"),
        ("sip:a@b@c", "more than one '@'"),
        ("sip:a@h:port", "port"),
        ("sip:a@h:70000", "port"),
        ("sip:a@[::1", "unterminated IPv6"),
        ("sip:a@[::1]x", "junk after IPv6"),
        ("sip:a@[zz]", "IPv6"),
        ("sip:a@-bad-", "bad"),
        ("sip:a@h;", "empty parameter"),
        ("sip:a@h;;lr", "empty parameter"),
        ("sip:a@h;x=", "empty value"),
        ("sip:a%2@h", "%-escape"),
        ("sip:a%zz@h", "%-escape"),
        ("sip:a@h?noequals", "URI header"),
        ("tel:", "number"),
        ("foo:", "empty URI after scheme"),
    ],
)
def test_bad_uris(text: str, match: str) -> None:
    with pytest.raises(SipParseError, match=match):
        SipUri.parse(text)


def test_escape_helpers() -> None:
    assert escape("a b", USER_CHARS) == "a%20b"
    assert escape("é", USER_CHARS) == "%C3%A9"
    assert unescape("%C3%A9") == "é"
    assert unescape("%FF") == "\udcff"  # invalid UTF-8 kept octet for octet
    assert escape(unescape("%FF"), USER_CHARS) == "%FF"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_rfc3261_equivalent_uris(a: str, b: str) -> None:
    # RFC 3261 19.1.4, the examples of equivalent URIs.
    assert SipUri.parse(a).equivalent(SipUri.parse(b))
    assert SipUri.parse(b).equivalent(SipUri.parse(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:a@h;lr", "sip:a@h;lr=on"),
        ("sip:a@h", "sips:a@h"),
        ("urn:x", "urn:y"),
    ],
)
def test_rfc3261_different_uris(a: str, b: str) -> None:
    assert not SipUri.parse(a).equivalent(SipUri.parse(b))
    assert not SipUri.parse(b).equivalent(SipUri.parse(a))


@pytest.mark.parametrize(
    "text", ["sip:alice:hunter2@h:99999", "sip:alice:hunt%zzer2@h", "sip:alice:hunter2@h;;"]
)
def test_errors_never_show_the_password(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse(text)
    assert "hunter2" not in str(info.value) and "hunt%zz" not in str(info.value)


def test_errors_are_short() -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse("sip:a@h:1;" + "x" * 5000 + ";;")
    assert len(str(info.value)) < 200


@given(
    st.text(max_size=40),
    st.sampled_from([USER_CHARS, PASSWORD_CHARS, PARAM_CHARS, HEADER_CHARS]),
)
def test_escape_keeps_exactly_the_allowed_characters(text: str, allowed: frozenset[str]) -> None:
    """The set-based shortcut agrees with the per-character rule, and escaping round-trips."""
    escaped = escape(text, allowed)
    assert (escaped == text) == all(c in allowed for c in text)
    assert all(c in allowed or c in "%0123456789ABCDEF" for c in escaped)
    assert unescape(escaped) == text
