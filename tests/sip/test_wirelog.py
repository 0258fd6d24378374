"""The SIP wire log: off unless asked for, and never carrying keys or digest responses."""

from __future__ import annotations

import logging

import pytest

from phone_sim.sip.headers import NameAddr
from phone_sim.sip.ua import UaConfig, UserAgent
from phone_sim.sip.uri import SipUri
from phone_sim.sip.wirelog import REDACTED, WIRE_LOGGER, log_wire, redact_sip, wire_enabled

KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
OFFER = (
    "INVITE sip:600@pbx SIP/2.0\r\n"
    'Authorization: Digest username="101", realm="asterisk", nonce="n1", uri="sip:600@pbx", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5\r\n'
    "Proxy-Authorization: Digest username=\"101\", response=deadbeef, nc=00000001\r\n"
    "Content-Type: application/sdp\r\n\r\n"
    "v=0\r\n"
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4\r\n"
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY[::-1]};inline:{KEY.lower()}\r\n"
)


def test_inline_keys_and_digest_responses_are_redacted() -> None:
    text = redact_sip(OFFER)
    for secret in (KEY, KEY[::-1], KEY.lower(), "0123456789abcdef0123456789abcdef",
                   "deadbeef"):
        assert secret not in text
    assert f"inline:{REDACTED}|2^20|1:4" in text
    assert text.count(f"inline:{REDACTED}") == 3
    assert f'response="{REDACTED}"' in text
    # Everything else is kept: the nonce is no secret, and the trace must stay readable.
    assert 'nonce="n1"' in text and "AES_CM_128_HMAC_SHA1_80" in text and "nc=00000001" in text


def test_a_body_word_response_outside_authorization_is_kept() -> None:
    text = redact_sip('Subject: response="yes"\r\n')
    assert 'response="yes"' in text


def test_nothing_is_formatted_while_nobody_listens(caplog: pytest.LogCaptureFixture) -> None:
    assert WIRE_LOGGER.level == logging.NOTSET or not wire_enabled()
    with caplog.at_level(logging.INFO, logger="phone_sim.sip.wire"):
        assert not wire_enabled()
        log_wire("sent", "sip:101@127.0.0.1:5060", ("127.0.0.1", 5061), OFFER.encode())
    assert caplog.records == []


def test_a_user_agent_logs_what_it_sends_redacted(caplog: pytest.LogCaptureFixture) -> None:
    ua = UserAgent(UaConfig(local_host="127.0.0.1", local_port=5070, user="101"))
    with caplog.at_level(logging.DEBUG, logger="phone_sim.sip.wire"):
        request = ua.create_request(
            "OPTIONS", SipUri.parse("sip:600@127.0.0.1:5060"),
            from_=NameAddr(uri=SipUri.parse("sip:101@127.0.0.1")),
        )
        ua.send_request(request, 0.0)
        ua.receive_datagram(
            b"OPTIONS sip:101@127.0.0.1:5070 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\n"
            b"From: <sip:pbx@127.0.0.1>;tag=1\r\nTo: <sip:101@127.0.0.1>\r\n"
            b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", 5060), 0.0,
        )
    records = [r for r in caplog.records if r.name == "phone_sim.sip.wire"]
    directions = [getattr(r, "sip_direction", None) for r in records]
    assert "sent" in directions and "received" in directions
    sent = next(r for r in records if r.sip_direction == "sent")  # type: ignore[attr-defined]
    assert sent.sip_peer == "127.0.0.1:5060"  # type: ignore[attr-defined]
    assert sent.sip_local.startswith("sip:101@127.0.0.1:5070")  # type: ignore[attr-defined]
    assert "OPTIONS sip:600@127.0.0.1:5060 SIP/2.0" in sent.getMessage()
