"""Offer/answer (RFC 3264) with SDES (RFC 4568): the phone's rules against real peers' SDP."""

from __future__ import annotations

import base64
import itertools
import logging
import re
import socket
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.errors import ProtocolError, UsageError
from phone_sim.media import sdp
from phone_sim.media.negotiation import (
    Direction,
    LocalAudio,
    LocalAudioError,
    MediaEncryption,
    NegotiatedAudio,
    NegotiationError,
    OfferAnswer,
    OfferAnswerState,
    OfferAnswerStateError,
)
from phone_sim.media.payloads import G722, PCMA, PCMU, TELEPHONE_EVENT
from phone_sim.media.sdes import CryptoAttribute
from phone_sim.media.sdp import SdpParseError, SdpSession
from phone_sim.testing.aio_pytest_peers import require

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sdp"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def keys(*seeds: int) -> Iterator[bytes]:
    for seed in seeds:
        yield bytes([seed]) * 30


def make(
    *,
    host: str = "192.0.2.50",
    encryption: MediaEncryption = MediaEncryption.SDES,
    key_seeds: tuple[int, ...] = (0xA1, 0xA2, 0xA3, 0xA4),
    **kwargs: object,
) -> OfferAnswer:
    local = LocalAudio(host=host, rtp_port=4000, media_encryption=encryption, **kwargs)  # type: ignore[arg-type]
    source = keys(*key_seeds)
    return OfferAnswer(local, session_id=1000, key_factory=lambda: next(source))


def crypto_of(session: SdpSession) -> CryptoAttribute:
    (line,) = session.media[0].get_attributes("crypto")
    assert line.value is not None
    return CryptoAttribute.parse(line.value)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


AST_OFFER_KEY = crypto_of(sdp.parse(fixture("asterisk-22-sdes-offer.sdp"))).key_salt


# --- the phone's offer ---------------------------------------------------------------------


def test_offer_is_exactly_the_phones() -> None:
    oa = make(rtcp_port=4001)
    offer = oa.create_offer()
    assert (
        bytes(offer)
        == (
            "v=0\r\n"
            "o=- 1000 1000 IN IP4 192.0.2.50\r\n"
            "s=digphn\r\n"
            "c=IN IP4 192.0.2.50\r\n"
            "t=0 0\r\n"
            "a=X-nat:0\r\n"
            "m=audio 4000 RTP/SAVP 0 8 9 96\r\n"
            "a=rtcp:4001 IN IP4 192.0.2.50\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:9 G722/8000\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
            "a=rtpmap:96 telephone-event/8000\r\n"
            "a=fmtp:96 0-15\r\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(bytes([0xA1]) * 30)}\r\n"
        ).encode()
    )
    assert oa.state is OfferAnswerState.OFFER_SENT
    assert sdp.parse(bytes(offer)) == offer


def test_offer_follows_the_account_codecs_and_dtmf_setting() -> None:
    offer = make(codecs=(G722, PCMA), dtmf=False).create_offer()
    assert offer.media[0].formats == ("9", "8")
    assert not offer.media[0].has_attribute("fmtp")


def test_offer_without_sdes_is_plain_rtp_avp() -> None:
    offer = make(encryption=MediaEncryption.NONE).create_offer()
    assert offer.media[0].proto == "RTP/AVP"
    assert not offer.media[0].has_attribute("crypto")


def test_offer_over_ipv6() -> None:
    offer = make(host="2001:db8::50").create_offer()
    assert b"o=- 1000 1000 IN IP6 2001:db8::50\r\n" in bytes(offer)
    assert b"c=IN IP6 2001:db8::50\r\n" in bytes(offer)


def test_real_keys_are_fresh_per_call_and_per_direction() -> None:
    local = LocalAudio(host="127.0.0.1", rtp_port=4000)
    offered = {crypto_of(OfferAnswer(local).create_offer()).key_salt for _ in range(20)}
    assert len(offered) == 20
    assert {len(k) for k in offered} == {30}
    callee = OfferAnswer(local)
    _, negotiated = callee.receive_offer(OfferAnswer(local).create_offer())
    assert negotiated.srtp is not None
    assert negotiated.srtp.tx_key != negotiated.srtp.rx_key


# --- answers to the phone's offer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "port"),
    [("asterisk-22-sdes-answer.sdp", 17860), ("baresip-1.0-srtp-mand-answer.sdp", 19588)],
)
def test_phone_takes_real_answers(name: str, port: int) -> None:
    oa = make()
    oa.create_offer()
    negotiated = oa.receive_answer(fixture(name))
    answer_key = crypto_of(sdp.parse(fixture(name))).key_salt
    assert oa.state is OfferAnswerState.STABLE
    assert negotiated.remote_rtp_port == port
    assert negotiated.remote_rtcp_port == port + 1
    assert negotiated.codec is PCMU
    assert (negotiated.payload_type, negotiated.rx_payload_type) == (0, 0)
    # The phone offers telephone-event on 96 (as the D40); Asterisk and baresip answer with
    # their own 101 (RFC 3264 6.1 only says SHOULD): the phone sends 101 and receives 96.
    assert (negotiated.dtmf_payload_type, negotiated.rx_dtmf_payload_type) == (101, 96)
    assert negotiated.direction is Direction.SENDRECV
    assert negotiated.ptime_ms == 20
    assert negotiated.srtp is not None
    assert negotiated.srtp.tag == 1
    assert negotiated.srtp.tx_key == bytes([0xA1]) * 30
    assert negotiated.srtp.rx_key == answer_key
    assert negotiated.tx_key_changed and negotiated.rx_key_changed


def test_a_re_offer_keeps_the_telephone_event_number_the_session_uses() -> None:
    # RFC 3264 8.3.2. The phone answered an offer numbering telephone-event 101: its hold
    # re-offer says 101 too, not the 96 it offers on a new call.
    answerer = make()
    caller = make(dtmf_payload_type=101, key_seeds=(0xB1, 0xB2))
    answerer.receive_offer(caller.create_offer())
    re_offer = answerer.hold()
    assert re_offer.media[0].formats[-1] == "101"
    # And after a call the phone started with 96 and the peer answered 101, it still says 96.
    oa = make()
    oa.create_offer()
    oa.receive_answer(fixture("asterisk-22-sdes-answer.sdp"))
    assert oa.hold().media[0].formats[-1] == "96"


def test_invite_without_sdp_phone_offers_in_200_and_takes_answer_from_ack() -> None:
    oa = make()
    offer_in_200 = oa.create_offer()
    assert offer_in_200.media[0].proto == "RTP/SAVP"
    negotiated = oa.receive_answer(fixture("asterisk-22-sdes-answer.sdp"))
    assert negotiated.encrypted


def _answer(**changes: str) -> bytes:
    data = fixture("asterisk-22-sdes-answer.sdp").decode()
    for old, new in changes.items():
        data = data.replace(old.replace("_", " ") if " " in old else old, new)
    return data.encode()


def _edit(name: str, *pairs: tuple[str, str]) -> bytes:
    text = fixture(name).decode()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    return text.encode()


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ((("a=crypto:1 ", "a=crypto:2 "),), "the answer's crypto tag 2 was not offered"),
        ((("RTP/SAVP", "RTP/AVP"),), "the answer uses RTP/AVP, not RTP/SAVP"),
        ((("m=audio 17860", "m=audio 0"),), "the peer rejected the audio stream (port 0)"),
        ((("m=audio 17860 RTP/SAVP 0 101", "m=audio 17860 RTP/SAVP 18"),), "no common codec"),
        (
            (("a=crypto:1 AES_CM_128_HMAC_SHA1_80", "a=crypto:1 AES_CM_128_HMAC_SHA1_32"),),
            "AES_CM_128_HMAC_SHA1_32 is not supported",
        ),
        ((("a=sendrecv\r\n", "a=sendrecv\r\nm=video 0 RTP/AVP 31\r\n"),), "2 media lines"),
    ],
)
def test_phone_refuses_bad_answers_and_falls_back(
    pairs: tuple[tuple[str, str], ...], reason: str
) -> None:
    oa = make()
    oa.create_offer()
    with pytest.raises(NegotiationError, match=re.escape(reason)):
        oa.receive_answer(_edit("asterisk-22-sdes-answer.sdp", *pairs))
    assert oa.state is OfferAnswerState.IDLE
    assert oa.negotiated is None


def test_malformed_answer_is_an_sdp_parse_error_and_falls_back() -> None:
    oa = make()
    oa.create_offer()
    with pytest.raises(SdpParseError):
        oa.receive_answer(b"v=0\r\nbogus\r\n")
    assert oa.state is OfferAnswerState.IDLE


def test_answer_echoing_the_phones_own_key_is_refused() -> None:
    oa = make()
    offer = oa.create_offer()
    own = b64(crypto_of(offer).key_salt)
    answer = _edit(
        "asterisk-22-sdes-answer.sdp",
        (b64(crypto_of(sdp.parse(fixture("asterisk-22-sdes-answer.sdp"))).key_salt), own),
    )
    with pytest.raises(NegotiationError, match="the phone's own key"):
        oa.receive_answer(answer)


# --- the peer's offer ----------------------------------------------------------------------


def test_phone_answers_asterisk() -> None:
    oa = make()
    answer, negotiated = oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))
    (media,) = answer.media
    assert media.proto == "RTP/SAVP"
    # pjsip's defaults: the offerer's codec order, one codec plus telephone-event
    assert media.formats == ("9", "101")
    assert [a.value for a in media.get_attributes("rtpmap")] == [
        "9 G722/8000",
        "101 telephone-event/8000",
    ]
    assert media.attribute_value("fmtp") == "101 0-15"
    crypto = crypto_of(answer)
    assert (crypto.tag, crypto.suite, crypto.key_salt) == (
        1,
        "AES_CM_128_HMAC_SHA1_80",
        bytes([0xA1]) * 30,
    )
    assert answer.session_name == "digphn"
    assert negotiated.codec is G722
    assert negotiated.remote_host == "192.0.2.10"
    assert negotiated.remote_rtp_port == 13316
    assert negotiated.srtp is not None
    assert negotiated.srtp.rx_key == AST_OFFER_KEY
    assert negotiated.srtp.tx_key == bytes([0xA1]) * 30
    assert oa.state is OfferAnswerState.STABLE
    assert sdp.parse(bytes(answer)) == answer


def test_phone_answers_baresip_srtp_mand() -> None:
    oa = make(host="127.0.0.1")
    answer, negotiated = oa.receive_offer(fixture("baresip-1.0-srtp-mand-offer.sdp"))
    assert answer.media[0].formats == ("0", "101")
    assert negotiated.codec is PCMU
    assert (negotiated.remote_host, negotiated.remote_rtp_port) == ("127.0.0.1", 28578)
    assert negotiated.srtp is not None and negotiated.srtp.tag == 1


def test_phone_answers_a_d40_and_ignores_g729() -> None:
    oa = make(codecs=(G722, PCMU))
    answer, negotiated = oa.receive_offer(fixture("d40-offer.sdp"))
    # the D40 offers 0 8 9 18 101; PCMU is its first, and it is the phone's too
    assert negotiated.codec is PCMU
    assert "18" not in answer.media[0].formats
    assert (negotiated.remote_rtcp_host, negotiated.remote_rtcp_port) == ("192.0.2.50", 4001)


def test_first_acceptable_crypto_line_wins_and_its_tag_is_echoed() -> None:
    oa = make(host="2001:db8::50")
    answer, negotiated = oa.receive_offer(fixture("sbc-multi-suite-offer.sdp"))
    assert crypto_of(answer).tag == 2
    assert negotiated.srtp is not None
    assert negotiated.srtp.tag == 2
    assert negotiated.srtp.rx_lifetime_packets == 2**31
    assert negotiated.codec is PCMA
    assert negotiated.remote_host == "2001:db8::5"


def _offer(*pairs: tuple[str, str]) -> bytes:
    return _edit("asterisk-22-sdes-offer.sdp", *pairs)


CRYPTO = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(AST_OFFER_KEY)}"
KEY29 = b64(bytes(29))
KEY46 = b64(bytes(46))
K1, K2 = b64(bytes([1]) * 30), b64(bytes([2]) * 30)

DECLINES = {
    "crypto-wsh-not-ascii": (
        _offer((CRYPTO, CRYPTO + " WSH=²")),
        "crypto 1: session parameter WSH=? is invalid (at least 64)",
    ),
    "rtp-avp": (
        fixture("asterisk-22-avp-offer.sdp"),
        "RTP/AVP offered; RTP/SAVP required",
    ),
    "savp-without-crypto": (_offer((CRYPTO + "\r\n", "")), "RTP/SAVP without a crypto line"),
    "savpf": (_offer(("RTP/SAVP", "RTP/SAVPF")), "RTP/SAVPF offered"),
    "only-32": (
        _offer(("HMAC_SHA1_80", "HMAC_SHA1_32")),
        "crypto 1: crypto suite AES_CM_128_HMAC_SHA1_32 is not supported",
    ),
    "only-f8": (
        _offer(("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80")),
        "F8_128_HMAC_SHA1_80 is not supported",
    ),
    "only-aes-256": (
        _offer((CRYPTO, f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY46}")),
        "AES_256_CM_HMAC_SHA1_80 is not supported",
    ),
    "mki": (_offer((CRYPTO, CRYPTO + "|1:4")), "an MKI is required"),
    "lifetime": (_offer((CRYPTO, CRYPTO + "|2^60")), "lifetime 2^60 is outside 1..2^48"),
    "short-key": (
        _offer((CRYPTO, f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY29}")),
        "inline key is 29 bytes",
    ),
    "bad-base64": (
        _offer((CRYPTO, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:@@@@")),
        "crypto 1: inline key is not valid base64",
    ),
    "duplicate-tags": (
        _offer(
            (
                CRYPTO,
                f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\r\n"
                f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K2}",
            )
        ),
        "duplicate crypto tag 1",
    ),
    "no-common-codec": (
        _offer(("RTP/SAVP 9 0 8 101", "RTP/SAVP 18 101"), ("a=rtpmap:9 G722", "a=rtpmap:18 G729")),
        "no common codec",
    ),
    "dynamic-unknown-codec": (
        _offer(
            ("RTP/SAVP 9 0 8 101", "RTP/SAVP 96"),
            ("a=rtpmap:9 G722/8000", "a=rtpmap:96 opus/48000/2"),
        ),
        "no common codec",
    ),
    "static-number-remapped": (
        _offer(
            ("RTP/SAVP 9 0 8 101", "RTP/SAVP 0"), ("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 L16/8000")
        ),
        "no common codec",
    ),
    "multicast": (_offer(("c=IN IP4 192.0.2.10", "c=IN IP4 233.252.0.1/127")), "multicast"),
    "hostname": (
        _offer(("c=IN IP4 192.0.2.10", "c=IN IP4 pbx.example.com")),
        "is not an IP address",
    ),
    "family-mismatch": (
        _offer(("c=IN IP4 192.0.2.10", "c=IN IP6 2001:db8::10")),
        "the peer's media is IP6, the phone's is IP4",
    ),
    "reflected-key": (
        _offer((CRYPTO, f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(bytes([0xA1]) * 30)}")),
        "the peer's SRTP key is the phone's own key",
    ),
    "video-only": (
        _offer(("m=audio 13316", "m=video 13316")),
        "the offer has no active audio stream",
    ),
    "audio-disabled": (
        _offer(("m=audio 13316", "m=audio 0")),
        "the offer has no active audio stream",
    ),
    "bad-rtcp": (_offer(("a=sendrecv", "a=sendrecv\r\na=rtcp:99999")), "a=rtcp:99999 is malformed"),
}


@pytest.mark.parametrize(("body", "reason"), DECLINES.values(), ids=list(DECLINES))
def test_phone_declines_with_488_and_a_reason(body: bytes, reason: str) -> None:
    oa = make()
    with pytest.raises(NegotiationError) as info:
        oa.receive_offer(body)
    error = info.value
    assert reason in error.reason
    assert error.status == 488
    assert isinstance(error, ProtocolError)
    warning = error.warning("192.0.2.50")
    assert warning.startswith('399 192.0.2.50 "') and warning.endswith('"')
    assert warning.count('"') == 2
    assert oa.state is OfferAnswerState.IDLE
    assert oa.local_sdp is None
    # the reason never carries key material
    for key in (AST_OFFER_KEY, bytes([0xA1]) * 30, bytes([1]) * 30):
        assert b64(key) not in str(error)


def test_several_unusable_crypto_lines_are_all_explained() -> None:
    body = _offer(
        (
            CRYPTO,
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{K1}\r\n"
            f"a=crypto:2 F8_128_HMAC_SHA1_80 inline:{K2}\r\n"
            f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{K1}|7:2",
        )
    )
    with pytest.raises(NegotiationError) as info:
        make().receive_offer(body)
    assert re.fullmatch(
        r"no acceptable crypto line: crypto 1: .*_32 .*; crypto 2: .*F8.*; crypto 3: an MKI .*",
        info.value.reason,
    )


def test_a_malformed_line_is_skipped_when_a_later_one_is_good() -> None:
    body = _offer(
        (
            CRYPTO,
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY29}\r\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{K2}",
        )
    )
    answer, negotiated = make().receive_offer(body)
    assert crypto_of(answer).tag == 2
    assert negotiated.srtp is not None and negotiated.srtp.rx_key == bytes([2]) * 30


def test_malformed_offer_is_an_sdp_parse_error_with_400() -> None:
    oa = make()
    with pytest.raises(SdpParseError) as info:
        oa.receive_offer(b"v=0\r\no=broken\r\n")
    assert info.value.status == 400
    assert oa.state is OfferAnswerState.IDLE


def test_extra_media_lines_are_declined_with_port_zero() -> None:
    body = _offer(("m=audio 13316", "m=video 5000 RTP/SAVP 31\r\nm=audio 13316"))
    answer, negotiated = make().receive_offer(body)
    assert [(m.media, m.port) for m in answer.media] == [("video", 0), ("audio", 4000)]
    assert answer.media[0].formats == ("31",)
    assert negotiated.codec is G722


def test_first_acceptable_audio_line_is_answered_the_others_get_port_zero() -> None:
    plain = "m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    body = _offer(("m=audio 13316", plain + "m=audio 13316"))
    answer, negotiated = make().receive_offer(body)
    assert [(m.port, m.proto) for m in answer.media] == [(0, "RTP/AVP"), (4000, "RTP/SAVP")]
    assert negotiated.remote_rtp_port == 13316
    assert sdp.parse(bytes(answer)) == answer


# --- media encryption off ------------------------------------------------------------------


def test_sdes_off_accepts_plain_rtp() -> None:
    oa = make(encryption=MediaEncryption.NONE)
    answer, negotiated = oa.receive_offer(fixture("asterisk-22-avp-offer.sdp"))
    assert answer.media[0].proto == "RTP/AVP"
    assert not answer.media[0].has_attribute("crypto")
    assert negotiated.srtp is None and not negotiated.encrypted
    assert negotiated.codec is PCMU


def test_sdes_off_ignores_crypto_lines_on_rtp_avp() -> None:
    body = _edit("asterisk-22-avp-offer.sdp", ("a=sendrecv", f"a=sendrecv\r\n{CRYPTO}"))
    answer, negotiated = make(encryption=MediaEncryption.NONE).receive_offer(body)
    assert not answer.media[0].has_attribute("crypto")
    assert negotiated.srtp is None


def test_sdes_off_declines_rtp_savp() -> None:
    with pytest.raises(NegotiationError, match="media encryption is off"):
        make(encryption=MediaEncryption.NONE).receive_offer(fixture("asterisk-22-sdes-offer.sdp"))


def test_plain_rtp_round_trip_keeps_key_flags_false_on_reoffer() -> None:
    caller = make(encryption=MediaEncryption.NONE)
    callee = make(encryption=MediaEncryption.NONE)
    answer, first = callee.receive_offer(caller.create_offer())
    assert caller.receive_answer(answer).tx_key_changed and first.rx_key_changed
    answer, again = callee.receive_offer(caller.create_offer(direction=Direction.SENDONLY))
    assert not again.rx_key_changed and not again.tx_key_changed
    assert again.direction is Direction.RECVONLY
    assert not caller.receive_answer(answer).rx_key_changed


# --- hold, resume, re-offers and keys ------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
        ("recvonly", Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_direction(offered: str, wanted: Direction, expected: Direction) -> None:
    oa = make()
    answer, negotiated = oa.receive_offer(_offer(("a=sendrecv", f"a={offered}")), direction=wanted)
    assert negotiated.direction is expected
    assert answer.media[0].has_attribute(expected.value)


def test_session_level_direction_and_old_style_hold() -> None:
    body = _offer(("a=sendrecv\r\n", ""), ("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"))
    assert make().receive_offer(body)[1].direction is Direction.RECVONLY
    held = _offer(("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"))
    negotiated = make().receive_offer(held)[1]
    assert negotiated.direction is Direction.RECVONLY
    assert negotiated.remote_host == "0.0.0.0"


def test_peer_hold_reoffer_with_the_same_key_keeps_the_srtp_session() -> None:
    oa = make()
    first_answer, first = oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))
    answer, held = oa.receive_offer(fixture("asterisk-22-sdes-hold-reoffer.sdp"))
    assert held.direction is Direction.RECVONLY
    assert not held.rx_key_changed and not held.tx_key_changed
    assert held.srtp is not None and first.srtp is not None
    assert held.srtp.tx_key == first.srtp.tx_key
    assert crypto_of(answer).key_salt == crypto_of(first_answer).key_salt
    assert answer.origin.session_version == first_answer.origin.session_version + 1
    resumed = oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))[1]
    assert resumed.direction is Direction.SENDRECV and not resumed.rx_key_changed


def test_peer_reoffer_with_a_new_key_starts_a_new_session() -> None:
    oa = make()
    oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))
    rekeyed = oa.receive_offer(_offer((b64(AST_OFFER_KEY), K1)))[1]
    assert rekeyed.rx_key_changed and not rekeyed.tx_key_changed
    assert rekeyed.srtp is not None and rekeyed.srtp.rx_key == bytes([1]) * 30


def test_identical_reoffer_gets_an_identical_answer_with_the_same_version() -> None:
    oa = make()
    first = oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))[0]
    again = oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))[0]
    assert bytes(again) == bytes(first)


def test_declined_reoffer_keeps_the_session() -> None:
    oa = make()
    _, first = oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))
    with pytest.raises(NegotiationError):
        oa.receive_offer(fixture("asterisk-22-avp-offer.sdp"))
    assert oa.state is OfferAnswerState.STABLE
    assert oa.negotiated == first


class Pair:
    """Two phones wired together in memory: the caller offers, the callee answers."""

    def __init__(self) -> None:
        self.caller = make(host="127.0.0.1", key_seeds=(0x11, 0x12, 0x13))
        self.callee = make(host="127.0.0.1", key_seeds=(0x21, 0x22, 0x23))

    def exchange(self, offer: SdpSession) -> tuple[NegotiatedAudio, NegotiatedAudio]:
        answer, callee_side = self.callee.receive_offer(bytes(offer))
        return self.caller.receive_answer(bytes(answer)), callee_side


def test_pair_keys_cross_over() -> None:
    pair = Pair()
    caller, callee = pair.exchange(pair.caller.create_offer())
    assert caller.srtp is not None and callee.srtp is not None
    assert caller.srtp.tx_key == callee.srtp.rx_key == bytes([0x11]) * 30
    assert caller.srtp.rx_key == callee.srtp.tx_key == bytes([0x21]) * 30
    assert caller.codec is callee.codec is PCMU


def test_pair_keys_work_in_libsrtp() -> None:
    pylibsrtp = pytest.importorskip("pylibsrtp")
    pair = Pair()
    caller, callee = pair.exchange(pair.caller.create_offer())
    assert caller.srtp is not None and callee.srtp is not None
    outbound = pylibsrtp.Session(
        pylibsrtp.Policy(caller.srtp.tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    inbound = pylibsrtp.Session(
        pylibsrtp.Policy(callee.srtp.rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    )
    rtp = bytes([0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]) + bytes(160)
    assert inbound.unprotect(outbound.protect(rtp)) == rtp
    wrong = pylibsrtp.Session(
        pylibsrtp.Policy(callee.srtp.tx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    )
    with pytest.raises(pylibsrtp.Error):
        wrong.unprotect(outbound.protect(rtp[:2] + b"\x00\x02" + rtp[4:]))


def test_phone_hold_and_resume_keep_the_key_and_bump_the_version() -> None:
    pair = Pair()
    first_offer = pair.caller.create_offer()
    pair.exchange(first_offer)
    hold_offer = pair.caller.hold()
    assert hold_offer.media[0].has_attribute("sendonly")
    assert hold_offer.origin.session_version == first_offer.origin.session_version + 1
    assert crypto_of(hold_offer).key_salt == crypto_of(first_offer).key_salt
    caller, callee = pair.exchange(hold_offer)
    assert caller.direction is Direction.SENDONLY
    assert callee.direction is Direction.RECVONLY
    assert not caller.tx_key_changed and not caller.rx_key_changed
    assert not callee.tx_key_changed and not callee.rx_key_changed
    resume_offer = pair.caller.resume()
    assert resume_offer.origin.session_version == hold_offer.origin.session_version + 1
    caller, _ = pair.exchange(resume_offer)
    assert caller.direction is Direction.SENDRECV


def test_hold_while_held_is_inactive() -> None:
    oa = make()
    oa.receive_offer(_offer(("a=sendrecv", "a=sendonly")))
    hold_offer = oa.hold()
    assert hold_offer.media[0].has_attribute("inactive")


def test_phone_rekey_starts_a_new_session_on_both_sides() -> None:
    pair = Pair()
    pair.exchange(pair.caller.create_offer())
    caller, callee = pair.exchange(pair.caller.create_offer(rekey=True))
    assert caller.tx_key_changed and not caller.rx_key_changed
    assert callee.rx_key_changed and not callee.tx_key_changed
    assert caller.srtp is not None and caller.srtp.tx_key == bytes([0x12]) * 30


def test_session_refresh_reoffer_keeps_the_version() -> None:
    pair = Pair()
    first = pair.caller.create_offer()
    pair.exchange(first)
    refresh = pair.caller.create_offer()
    assert bytes(refresh) == bytes(first)


def test_rejected_reoffer_rolls_back_and_the_next_offer_has_a_higher_version() -> None:
    pair = Pair()
    first = pair.caller.create_offer()
    caller_before, _ = pair.exchange(first)
    held = pair.caller.hold()
    pair.caller.offer_rejected()  # e.g. 491 or 488 to the re-INVITE
    assert pair.caller.state is OfferAnswerState.STABLE
    assert pair.caller.negotiated == caller_before
    assert pair.caller.local_direction is Direction.SENDRECV
    again = pair.caller.create_offer()
    assert again.origin.session_version == held.origin.session_version + 1
    assert crypto_of(again).key_salt == crypto_of(first).key_salt


def test_rejected_rekey_keeps_the_old_key() -> None:
    pair = Pair()
    caller_before, _ = pair.exchange(pair.caller.create_offer())
    pair.caller.create_offer(rekey=True)
    pair.caller.offer_rejected()
    caller, _ = pair.exchange(pair.caller.create_offer())
    assert caller.srtp is not None and caller_before.srtp is not None
    assert caller.srtp.tx_key == caller_before.srtp.tx_key
    assert not caller.tx_key_changed


# --- state table ---------------------------------------------------------------------------


def test_answer_without_offer_is_a_state_error() -> None:
    with pytest.raises(OfferAnswerStateError, match="cannot receive answer in state idle"):
        make().receive_answer(fixture("asterisk-22-sdes-answer.sdp"))


def test_two_offers_in_a_row_is_a_state_error() -> None:
    oa = make()
    oa.create_offer()
    with pytest.raises(OfferAnswerStateError, match="cannot create offer in state offer-sent"):
        oa.create_offer()
    with pytest.raises(OfferAnswerStateError):
        make().offer_rejected()


def test_glare_is_491() -> None:
    oa = make()
    oa.create_offer()
    with pytest.raises(NegotiationError) as info:
        oa.receive_offer(fixture("asterisk-22-sdes-offer.sdp"))
    assert info.value.status == 491
    assert oa.state is OfferAnswerState.OFFER_SENT


# --- ptime ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "ptime"),
    [
        ((), 20),
        ((("a=ptime:20", "a=ptime:30"),), 30),
        ((("a=ptime:20", "a=ptime:30"), ("a=maxptime:150", "a=maxptime:25")), 20),
        ((("a=ptime:20", "a=ptime:7"),), 20),
        ((("a=ptime:20", "a=ptime:abc"),), 20),
        ((("a=ptime:20\r\n", ""),), 20),
        # ASCII digits only (issue #10): "²" passed str.isdigit() and crashed int(); "٣٠"
        # was read as 30.
        ((("a=ptime:20", "a=ptime:²"),), 20),
        ((("a=ptime:20", "a=ptime:٣٠"),), 20),
        ((("a=ptime:20", "a=ptime:30"), ("a=maxptime:150", "a=maxptime:¹")), 30),
    ],
)
def test_ptime(pairs: tuple[tuple[str, str], ...], ptime: int) -> None:
    assert make().receive_offer(_offer(*pairs))[1].ptime_ms == ptime


# --- local settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "phone.local"}, "is not an IP address"),
        ({"host": "0.0.0.0"}, "cannot be written in SDP"),
        ({"host": "::"}, "cannot be written in SDP"),
        ({"rtp_port": 0}, "RTP port 0"),
        ({"rtcp_port": 70000}, "RTCP port 70000"),
        ({"codecs": ()}, "no codec"),
        ({"codecs": (PCMU, PCMU)}, "twice"),
        ({"codecs": (TELEPHONE_EVENT,)}, "not an audio codec"),
        ({"ptime_ms": 25}, "ptime 25"),
        ({"session_name": "digphn\r\na=evil"}, "one non-empty line"),
        ({"username": "a b"}, "must have no spaces"),
        ({"media_encryption": "srtp"}, "is not none/sdes"),
    ],
)
def test_local_audio_validation(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"host": "192.0.2.1", "rtp_port": 4000, **kwargs}
    with pytest.raises(LocalAudioError, match=message) as info:
        LocalAudio(**settings)  # type: ignore[arg-type]
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sdes", MediaEncryption.SDES),
        (" SDES ", MediaEncryption.SDES),
        ("", MediaEncryption.NONE),
        (None, MediaEncryption.NONE),
        ("none", MediaEncryption.NONE),
    ],
)
def test_media_encryption_from_config(value: str | None, expected: MediaEncryption) -> None:
    assert MediaEncryption.from_config(value) is expected


def test_media_encryption_from_config_refuses_what_the_phone_lacks() -> None:
    with pytest.raises(LocalAudioError, match="'dtls' is not supported"):
        MediaEncryption.from_config("dtls")


def test_direction_algebra() -> None:
    for direction in Direction:
        assert direction.reversed().reversed() is direction
        assert direction & Direction.SENDRECV is direction
        assert direction & Direction.INACTIVE is Direction.INACTIVE
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.SENDONLY == "sendonly"


# --- secrets -------------------------------------------------------------------------------


def test_keys_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        pair = Pair()
        caller, callee = pair.exchange(pair.caller.create_offer())
        pair.exchange(pair.caller.hold())
        logging.getLogger("test").debug("negotiated %s %r %s", caller, callee, pair.caller)
    assert caller.srtp is not None
    texts = [repr(caller), str(callee), repr(caller.srtp), repr(pair.caller), caplog.text]
    texts.append(repr(pair.caller.local_sdp))
    for key in (caller.srtp.tx_key, caller.srtp.rx_key):
        for text in texts:
            assert b64(key) not in text
            assert key.hex() not in text
            assert repr(key) not in text
    assert "offer/answer idle -> offer-sent" in caplog.text


# --- Hypothesis: whatever a peer sends, only the project's errors escape ------------------


PEER_BODIES = [
    fixture(n)
    for n in (
        "asterisk-22-sdes-offer.sdp",
        "baresip-1.0-srtp-mand-offer.sdp",
        "d40-offer.sdp",
        "sbc-multi-suite-offer.sdp",
        "asterisk-22-avp-offer.sdp",
    )
]


@given(
    st.sampled_from(PEER_BODIES),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1000),
            st.sampled_from([b"", b" ", b"0", b"9", b"|", b":", b"/", b"a=", b"\r\n", b"=", b"x"]),
            st.integers(min_value=0, max_value=3),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(list(MediaEncryption)),
)
def test_mutated_offers_only_raise_project_errors(
    body: bytes, edits: list[tuple[int, bytes, int]], encryption: MediaEncryption
) -> None:
    data = bytearray(body)
    for position, insert, delete in edits:
        at = position % (len(data) + 1)
        data[at : at + delete] = insert
    oa = make(encryption=encryption, host="127.0.0.1")
    try:
        answer, negotiated = oa.receive_offer(bytes(data))
    except (SdpParseError, NegotiationError):
        assert oa.state is OfferAnswerState.IDLE
        return
    assert sdp.parse(bytes(answer)) == answer
    assert (negotiated.srtp is not None) == (encryption is MediaEncryption.SDES)
    assert 0 <= negotiated.payload_type <= 127


# --- Hypothesis: any sequence of calls keeps the state table's promises --------------------

ACTIONS = ("offer", "hold", "resume", "rekey", "answer", "reject", "peer-offer", "peer-hold")


@given(st.lists(st.sampled_from(ACTIONS), max_size=25))
def test_random_call_flows_keep_the_invariants(actions: list[str]) -> None:
    phone = OfferAnswer(LocalAudio(host="127.0.0.1", rtp_port=4000))
    peer = OfferAnswer(LocalAudio(host="127.0.0.1", rtp_port=5000))
    pending: SdpSession | None = None
    sent: list[int] = []  # o= versions of every body the phone sent
    for action in actions:
        before = (phone.state, phone.negotiated)
        try:
            if action in ("offer", "hold", "resume", "rekey"):
                offer = {
                    "offer": phone.create_offer,
                    "hold": phone.hold,
                    "resume": phone.resume,
                    "rekey": lambda: phone.create_offer(rekey=True),
                }[action]()
                sent.append(offer.origin.session_version)
                # the peer answers at once; the phone reads the answer on "answer"
                pending, _ = peer.receive_offer(bytes(offer))
            elif action == "answer":
                if pending is None:
                    with pytest.raises(OfferAnswerStateError):
                        phone.receive_answer(bytes(peer.create_offer()))
                    peer.offer_rejected()
                    continue
                negotiated = phone.receive_answer(bytes(pending))
                pending = None
                assert negotiated.srtp is not None and peer.negotiated is not None
                assert peer.negotiated.srtp is not None
                assert negotiated.srtp.tx_key == peer.negotiated.srtp.rx_key
                assert negotiated.srtp.rx_key == peer.negotiated.srtp.tx_key
            elif action == "reject":
                phone.offer_rejected()
                pending = None
            else:
                direction = Direction.SENDONLY if action == "peer-hold" else Direction.SENDRECV
                offer = peer.create_offer(direction=direction)
                try:
                    answer, negotiated = phone.receive_offer(bytes(offer))
                except NegotiationError as exc:
                    assert exc.status == 491  # glare: the phone's own offer is out
                    assert phone.state is before[0]
                    peer.offer_rejected()
                    continue
                sent.append(answer.origin.session_version)
                peer.receive_answer(bytes(answer))
                assert negotiated.direction.sends == (direction is Direction.SENDRECV) or (
                    not phone.local_direction.sends
                )
        except OfferAnswerStateError:
            assert (phone.state, phone.negotiated) == before
            continue
        if phone.state is OfferAnswerState.STABLE:
            assert phone.negotiated is not None
        if phone.state is OfferAnswerState.IDLE:
            assert phone.negotiated is None
    # RFC 3264 8: the version never goes back, and each step is at most one
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(sent))


# --- a real peer: baresip 1.0 answers the phone's offer ------------------------------------


def _baresip_files(tmp_path: Path) -> None:
    require("baresip")
    with wave.open(str(tmp_path / "silence.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(8000 * 2 * 10))
    (tmp_path / "accounts").write_text(
        "<sip:100@127.0.0.1>;regint=0;mediaenc=srtp-mand;answermode=auto;audio_codecs=PCMU\n"
    )


def _start_baresip(
    tmp_path: Path, sip_port: int, log: object, *commands: str
) -> subprocess.Popen[bytes]:
    (tmp_path / "config").write_text(
        f"sip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\n"
        "dns_server 127.0.0.1:53\nmodule_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule srtp.so\nmodule aufile.so\nmodule account.so\n"
        "module menu.so\n"
        f"audio_player aufile,{tmp_path / 'heard.wav'}\n"
        f"audio_source aufile,{tmp_path / 'silence.wav'}\n"
    )
    extra = [arg for command in commands for arg in ("-e", command)]
    return subprocess.Popen(
        [require("baresip"), "-f", str(tmp_path), "-t", "20", *extra],
        stdout=log,  # type: ignore[arg-type]
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _baresip_answer(tmp_path: Path, offer: bytes) -> tuple[bytes, str]:
    """INVITE a baresip on 127.0.0.1 with ``offer`` over plain UDP; its 200's body and log.

    Only silence is retried (a peer that did not start, e.g. a port taken meanwhile by
    another test on the machine): any SIP answer, 200 or not, is final.
    """
    _baresip_files(tmp_path)
    failures: list[str] = []
    for attempt in range(3):
        response, log = _baresip_call(tmp_path, offer, attempt)
        if response:
            if not response.startswith(b"SIP/2.0 200"):
                pytest.fail(f"baresip refused the offer: {response[:300]!r}\n{log[-1500:]}")
            return response.split(b"\r\n\r\n", 1)[1], log
        failures.append(log[-800:])
    pytest.fail("baresip never answered:\n" + "\n---\n".join(failures))


def _baresip_call(tmp_path: Path, offer: bytes, attempt: int) -> tuple[bytes, str]:
    from phone_sim.testing.aio_ports import free_port_run

    sip_port = free_port_run(2)  # baresip also listens for TLS on its SIP port + 1
    log_path = tmp_path / f"baresip-{attempt}.log"
    log = log_path.open("wb")
    process = _start_baresip(tmp_path, sip_port, log)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    response = b""
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.settimeout(0.5)
        head = (
            f"sip:100@127.0.0.1:{sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKPj-meda-{attempt}-{{}};rport\r\n"
            "From: <sip:101@127.0.0.1>;tag=meda\r\nTo: <sip:100@127.0.0.1>{}\r\n"
            f"Call-ID: meda-negotiation-test-{attempt}\r\nCSeq: {{}} {{}}\r\n"
            f"Contact: <sip:101@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
        )
        invite = (
            ("INVITE " + head.format(1, "", 1, "INVITE")).encode()
            + b"Content-Type: application/sdp\r\n"
            + f"Content-Length: {len(offer)}\r\n\r\n".encode()
            + offer
        )
        deadline = time.monotonic() + 10
        provisional = False
        while time.monotonic() < deadline and not response.startswith(b"SIP/2.0 2"):
            if not provisional:  # RFC 3261 17.1.1.2: retransmit until a response comes
                sock.sendto(invite, ("127.0.0.1", sip_port))
            try:
                response, _ = sock.recvfrom(65535)
            except TimeoutError:
                if process.poll() is not None:
                    break  # it exited (a port taken between our probe and its bind)
                continue
            provisional = provisional or response.startswith(b"SIP/2.0 1")
            if not response.startswith((b"SIP/2.0 1", b"SIP/2.0 2")):
                break  # a final refusal
        to_tag = re.search(rb"\r\nTo: [^\r]*(;tag=[^\r;]+)", response)
        if response.startswith(b"SIP/2.0 2") and to_tag is not None:
            tag = to_tag.group(1).decode()
            ack = "ACK " + head.format("ack", tag, 1, "ACK") + "Content-Length: 0\r\n\r\n"
            sock.sendto(ack.encode(), ("127.0.0.1", sip_port))
            time.sleep(0.3)  # let baresip start its SRTP media before hanging up
            bye = "BYE " + head.format(2, tag, 2, "BYE") + "Content-Length: 0\r\n\r\n"
            sock.sendto(bye.encode(), ("127.0.0.1", sip_port))
            time.sleep(0.2)
        elif response.startswith(b"SIP/2.0 1"):
            response = b""  # provisional only: treat as silence and retry
    finally:
        sock.close()
        _stop(process)
        log.close()
    return response, log_path.read_text(errors="replace")


@pytest.mark.peer
def test_baresip_accepts_the_phones_offer_and_its_answer_is_taken(tmp_path: Path) -> None:
    phone = OfferAnswer(LocalAudio(host="127.0.0.1", rtp_port=47000, codecs=(PCMU, PCMA)))
    offer = phone.create_offer()
    body, log = _baresip_answer(tmp_path, bytes(offer))
    negotiated = phone.receive_answer(body)
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log
    assert negotiated.codec is PCMU
    assert negotiated.remote_host == "127.0.0.1"
    assert negotiated.srtp is not None
    assert negotiated.srtp.tx_key == crypto_of(offer).key_salt
    assert negotiated.srtp.rx_key != negotiated.srtp.tx_key


# --- the contract with the media layer: NegotiatedAudio drives MediaStream ---------------


def _stream(negotiated: NegotiatedAudio) -> object:
    from phone_sim.media.stream import MediaStream

    assert negotiated.srtp is not None
    return MediaStream(
        codec=negotiated.codec,
        payload_type=negotiated.payload_type,
        ptime_ms=negotiated.ptime_ms,
        direction=negotiated.direction,
        dtmf_payload_type=negotiated.dtmf_payload_type,
        tx_key=negotiated.srtp.tx_key,
        rx_key=negotiated.srtp.rx_key,
    )


def test_negotiated_keys_carry_srtp_between_two_media_streams() -> None:
    from phone_sim.media.stream import MediaStream

    pair = Pair()
    caller_side, callee_side = pair.exchange(pair.caller.create_offer())
    caller, callee = _stream(caller_side), _stream(callee_side)
    assert isinstance(caller, MediaStream) and isinstance(callee, MediaStream)
    caller.start(0.0)
    callee.start(0.0)
    for tick in range(1, 11):
        now = tick * 0.02
        for packet in caller.packets_to_send(now):
            # SRTP: 12-byte header, 160 bytes of PCMU, the 10-byte _80 tag; silence (0xff in
            # mu-law) does not show through the cipher
            assert len(packet) == 12 + 160 + 10
            assert b"\xff" * 8 not in packet[12:]
            callee.receive_datagram(packet, now)
    stats = callee.statistics()
    assert stats.packets_received >= 9
    assert stats.srtp_auth_failures == 0
    # a hold re-offer keeps the keys, so the media layer keeps its SRTP context and sessions
    context = callee.srtp
    assert context is not None
    _, held = pair.exchange(pair.caller.hold())
    assert held.srtp is not None and not held.rx_key_changed
    callee.update(0.3, direction=held.direction, tx_key=held.srtp.tx_key, rx_key=held.srtp.rx_key)
    assert callee.srtp is context
    assert context.keys_equal(tx_key=held.srtp.tx_key, rx_key=held.srtp.rx_key)
    # a re-key replaces the sessions: the new keys are live, the old ones are gone, and the
    # caller's packets under its new key are accepted
    caller_rekeyed, rekeyed = pair.exchange(pair.caller.create_offer(rekey=True))
    assert rekeyed.srtp is not None and rekeyed.rx_key_changed
    assert caller_rekeyed.srtp is not None and caller_rekeyed.tx_key_changed
    callee.update(0.4, tx_key=rekeyed.srtp.tx_key, rx_key=rekeyed.srtp.rx_key)
    rekeyed_context = callee.srtp
    assert rekeyed_context is not None
    assert rekeyed_context.keys_equal(tx_key=rekeyed.srtp.tx_key, rx_key=rekeyed.srtp.rx_key)
    assert not rekeyed_context.keys_equal(tx_key=held.srtp.tx_key, rx_key=held.srtp.rx_key)
    caller.update(0.4, tx_key=caller_rekeyed.srtp.tx_key, rx_key=caller_rekeyed.srtp.rx_key)
    received = callee.statistics().packets_received
    for tick in range(21, 31):
        now = tick * 0.02
        for packet in caller.packets_to_send(now):
            callee.receive_datagram(packet, now)
    stats = callee.statistics()
    assert stats.packets_received > received
    assert stats.srtp_auth_failures == 0


def _header(message: bytes, name: str) -> str:
    match = re.search(rb"\r\n" + name.encode() + rb": ([^\r]*)", message, re.IGNORECASE)
    assert match is not None, f"no {name} in {message[:300]!r}"
    return match.group(1).decode()


@pytest.mark.peer
def test_baresip_offers_and_accepts_the_phones_answer(tmp_path: Path) -> None:
    from phone_sim.testing.aio_ports import free_port_run

    _baresip_files(tmp_path)
    phone = OfferAnswer(LocalAudio(host="127.0.0.1", rtp_port=47002))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    port = sock.getsockname()[1]
    sip_port = free_port_run(2)  # baresip also listens for TLS on its SIP port + 1
    log_path = tmp_path / "baresip-dial.log"
    log = log_path.open("wb")
    process = _start_baresip(tmp_path, sip_port, log, f"/dial sip:102@127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 10
        invite = b""
        while time.monotonic() < deadline and not invite.startswith(b"INVITE "):
            try:
                invite, source = sock.recvfrom(65535)
            except TimeoutError:
                continue
        assert invite.startswith(b"INVITE "), log_path.read_text(errors="replace")[-1500:]
        answer, negotiated = phone.receive_offer(invite.split(b"\r\n\r\n", 1)[1])
        body = bytes(answer)
        to = _header(invite, "To") + ";tag=phone-sim"
        common = (
            f"Via: {_header(invite, 'Via')}\r\nFrom: {_header(invite, 'From')}\r\nTo: {to}\r\n"
            f"Call-ID: {_header(invite, 'Call-ID')}\r\n"
        )
        ok = (
            f"SIP/2.0 200 OK\r\n{common}CSeq: {_header(invite, 'CSeq')}\r\n"
            f"Contact: <sip:102@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        acked = False
        while time.monotonic() < deadline and not acked:
            sock.sendto(ok, source)  # RFC 3261 13.3.1.4: the 200 is resent until the ACK
            try:
                acked = sock.recvfrom(65535)[0].startswith(b"ACK ")
            except TimeoutError:
                continue
        assert acked
        time.sleep(0.3)
        contact = re.search(r"<([^>]+)>", _header(invite, "Contact"))
        assert contact is not None
        bye = (
            f"BYE {contact.group(1)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKPj-meda-bye;rport\r\n"
            f"From: {to}\r\nTo: {_header(invite, 'From')}\r\n"
            f"Call-ID: {_header(invite, 'Call-ID')}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(bye.encode(), source)
        time.sleep(0.2)
    finally:
        sock.close()
        _stop(process)
        log.close()
    text = log_path.read_text(errors="replace")
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in text
    assert negotiated.srtp is not None
    assert negotiated.codec is PCMU
    assert negotiated.srtp.rx_key == crypto_of(sdp.parse(invite.split(b"\r\n\r\n", 1)[1])).key_salt
