"""The phone's wire signature (PROTOCOL-NOTES §5)."""

from __future__ import annotations

import random

import pytest

from phone_sim.errors import UsageError
from phone_sim.firmware import FIRMWARE_CLASSES, profile_for
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.message import parse_message
from phone_sim.sip.signature import (
    D40_ALLOW,
    PhoneSignature,
    new_branch,
    new_call_id,
    new_tag,
    stamp_via,
    trimmed_allow,
)
from phone_sim.sip.uri import SipUri


def test_branch_is_pjsip_style_and_random() -> None:
    rng = random.Random(7)
    branches = {new_branch(rng) for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bKPj") and len(b) == 9 + 32 for b in branches)
    assert new_tag(random.Random(1)) == new_tag(random.Random(1))
    assert len(new_call_id(rng)) == 32


def test_default_signature_is_a_d40_trimmed_to_what_is_implemented() -> None:
    sig = PhoneSignature()
    assert sig.user_agent == "Digium D40 1_4_0_0_57389"
    assert sig.allow == ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
    assert set(sig.allow) < set(D40_ALLOW)
    assert sig.supported == ()  # no 100rel, no timer until they are implemented
    assert sig.digest_algorithms == ("MD5",)


def test_for_phone_keeps_the_d40_order_with_extra_methods() -> None:
    sig = PhoneSignature.for_phone("D65", "2_9_22", extra_methods=["MESSAGE", "NOTIFY"])
    assert sig.user_agent == "Digium D65 2_9_22"
    assert sig.allow_header == "INVITE, ACK, BYE, CANCEL, NOTIFY, MESSAGE, OPTIONS"
    assert trimmed_allow(["OPTIONS", "INFO", "INVITE"]) == ("INVITE", "OPTIONS", "INFO")
    with pytest.raises(UsageError):
        PhoneSignature.for_phone("D 40", "x")
    with pytest.raises(UsageError, match="Supported"):
        PhoneSignature(supported=("100rel, timer",))


@pytest.mark.parametrize(
    ("model", "firmware", "wildcard", "user_agent"),
    [
        ("D40", "1_4_0_0_57389", False, "Digium D40 1_4_0_0_57389"),
        ("D65", "2_0_2_0_78957", False, "Digium D65 2_0_2_0_78957"),
        ("D65", "2_9_22", False, "Digium D65 2_9_22"),
        ("D70", "2_9_2", True, "Digium D70 2_9_2"),
        ("D80", "1_12_0", False, "Digium D80 1_12_0"),
        ("D80", "1_12_1", True, "Digium D80 1_12_1"),
    ],
)
def test_for_profile_of_the_real_firmware_profiles(
    model: str, firmware: str, wildcard: bool, user_agent: str
) -> None:
    sig = PhoneSignature.for_profile(profile_for(model, firmware, allow_wildcard=wildcard))
    assert sig.user_agent == user_agent  # what the phone writes (PROTOCOL-NOTES §5)
    assert sig.digest_algorithms == ("MD5",)  # every firmware answers MD5 digests only
    assert sig.allow == ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
    messaging = PhoneSignature.for_profile(profile_for(model, firmware),
                                           extra_methods=["MESSAGE", "NOTIFY"])
    assert messaging.allow_header == "INVITE, ACK, BYE, CANCEL, NOTIFY, MESSAGE, OPTIONS"


def test_for_profile_covers_every_firmware_class() -> None:
    for cls in FIRMWARE_CLASSES:
        sig = PhoneSignature.for_profile(cls.profile)
        assert sig.user_agent == f"Digium {cls.profile.model.value} {cls.profile.firmware}"
        assert sig.digest_algorithms == cls.profile.digest_algorithms == ("MD5",)


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        ("UDP", "<sip:101@192.0.2.10:5060;ob>"),
        ("tls", "<sip:101@192.0.2.10:5060;transport=TLS;ob>"),
        ("TCP", "<sip:101@192.0.2.10:5060;transport=TCP;ob>"),
    ],
)
def test_contact_has_ob(transport: str, expected: str) -> None:
    assert str(PhoneSignature().contact("101", "192.0.2.10", 5060, transport)) == expected
    no_ob = PhoneSignature(outbound=False).contact("101", "192.0.2.10", 5060, "UDP")
    assert str(no_ob) == "<sip:101@192.0.2.10:5060>"


def test_build_request_in_pjsip_order_and_round_trips() -> None:
    sig = PhoneSignature(supported=("path",))
    aor = NameAddr(SipUri("sip", "101", None, "pbx.example.com"))
    request = sig.build_request(
        "REGISTER", SipUri("sip", None, None, "pbx.example.com"),
        from_=aor.with_tag("abc"), to=aor, call_id="cid", cseq=42,
        contact=sig.contact("101", "192.0.2.10", 5060, "UDP"),
        routes=[NameAddr(SipUri("sip", None, None, "proxy", None, (("lr", None),)))],
        headers=[("Expires", "300")],
    )
    stamp_via(request, transport="udp", host="192.0.2.10", port=5060,
              branch="z9hG4bKPjabc")
    names = [name for name, _ in request.headers]
    assert names == ["Via", "Route", "Max-Forwards", "From", "To", "Call-ID", "CSeq",
                     "User-Agent", "Contact", "Expires", "Allow", "Supported"]
    wire = bytes(request)
    assert b"Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPjabc\r\n" in wire
    assert bytes(parse_message(wire)) == wire


def test_build_request_checks() -> None:
    sig = PhoneSignature()
    aor = NameAddr(SipUri("sip", "101", None, "pbx"))
    with pytest.raises(UsageError, match="CSeq"):
        sig.build_request("OPTIONS", aor.uri, from_=aor, to=aor, call_id="c", cseq=2**31)
    with pytest.raises(UsageError, match="Content-Type"):
        sig.build_request("MESSAGE", aor.uri, from_=aor, to=aor, call_id="c", cseq=1,
                          body=b"x")
    ack = sig.build_request("ACK", aor.uri, from_=aor, to=aor, call_id="c", cseq=1)
    assert "Allow" not in ack.headers
