"""The sans-I/O call session, two phones in memory with a fake clock (no sockets)."""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from phone_sim.call.events import (
    CallAnswered,
    CallFinished,
    CallMediaNegotiated,
    CallProgressed,
    CallRefreshed,
    CallUpdateRefused,
)
from phone_sim.call.router import CallRouter
from phone_sim.call.session import CallConfig, CallSession, CallState, call_signature
from phone_sim.errors import UsageError
from phone_sim.media.negotiation import Direction, LocalAudio, OfferAnswer
from phone_sim.media.sdes import generate_key
from phone_sim.sip.digest import DigestCredentials, DigestServer
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.message import SipRequest, SipResponse
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import RequestReceived, ResponseReceived, UaEvent
from phone_sim.sip.uri import SipUri
from tests.call.callpair import (
    A_ADDR,
    B_ADDR,
    CallPair,
    Wire,
    answer_at_once,
    make_ua,
    ring_only,
)

SDP_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "sdp"
CALL_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "call"


def established(pair: CallPair, config_b: CallConfig | None = None) -> tuple[CallSession,
                                                                               CallSession]:
    pair.on_incoming = answer_at_once
    a = pair.dial()
    assert pair.incoming, pair.lines()
    return a, pair.incoming[-1]


def only(events: Sequence[object], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# -- placing and answering ---------------------------------------------------------------------


def test_call_answered_both_sides_agree_on_crossed_srtp_keys() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert a.state is CallState.CONFIRMED and b.state is CallState.CONFIRMED
    assert pair.lines(A_ADDR) == ["INVITE sip:102@127.0.0.1:5064 SIP/2.0",
                                  "ACK sip:102@127.0.0.1:5064;ob SIP/2.0"]
    assert pair.lines(B_ADDR) == ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]
    ma = only(pair.of(a, "a"), CallMediaNegotiated)
    mb = only(pair.of(b, "b"), CallMediaNegotiated)
    assert len(ma) == 1 and len(mb) == 1
    na, nb = ma[0].audio, mb[0].audio
    assert na.srtp is not None and nb.srtp is not None
    assert na.srtp.tx_key == nb.srtp.rx_key and na.srtp.rx_key == nb.srtp.tx_key
    assert na.srtp.suite == "AES_CM_128_HMAC_SHA1_80"
    assert (na.remote_rtp_port, nb.remote_rtp_port) == (6000, 4000)
    assert only(pair.of(a, "a"), CallAnswered) and only(pair.of(b, "b"), CallAnswered)
    ringing = only(pair.of(a, "a"), CallProgressed)
    assert [r.status for r in ringing] == [180]


def test_invite_carries_the_firmware_headers_and_an_sdes_offer() -> None:
    pair = CallPair()
    established(pair)
    invite = pair.sent(A_ADDR, "INVITE")[0]
    assert isinstance(invite, SipRequest)
    assert invite.headers.get("Session-Expires") == "1800"
    assert invite.headers.get("Min-SE") == "90"
    supported = invite.tokens("Supported")
    assert "100rel" in supported and "timer" in supported
    assert {"PRACK", "UPDATE", "INVITE", "BYE"} <= set(invite.tokens("Allow"))
    body = invite.body.decode()
    assert "RTP/SAVP" in body and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in body
    assert invite.media_type == "application/sdp"
    ok = pair.sent(B_ADDR, "SIP/2.0 200")[0]
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert "timer" in ok.tokens("Require")


def test_the_caller_hangs_up_with_bye() -> None:
    pair = CallPair()
    a, b = established(pair)
    pair.act(a, "hangup")
    pair.pump()
    assert pair.lines(A_ADDR, "BYE") and pair.lines(B_ADDR, "SIP/2.0 200") [-1:]
    assert a.ended is not None and not a.ended.by_peer
    assert b.ended is not None and b.ended.by_peer and b.state is CallState.TERMINATED
    assert pair.lines(B_ADDR, "SIP/2.0")[-1] == "SIP/2.0 200 OK"


def test_the_callee_hangs_up_with_bye_and_the_caller_answers_it() -> None:
    pair = CallPair()
    a, b = established(pair)
    pair.act(b, "hangup")
    pair.pump()
    assert pair.lines(B_ADDR, "BYE")
    assert pair.lines(A_ADDR, "SIP/2.0 200 OK")
    assert a.ended is not None and a.ended.by_peer


@pytest.mark.parametrize("status", [486, 603, 480])
def test_rejecting_an_incoming_call(status: int) -> None:
    pair = CallPair()
    pair.on_incoming = lambda p, s: p.act(s, "reject", status)
    a = pair.dial()
    assert a.state is CallState.TERMINATED
    assert a.ended is not None and a.ended.status == status and a.ended.by_peer
    assert pair.lines(A_ADDR, "ACK")  # the UA core ACKs the non-2xx
    assert pair.incoming[0].ended is not None
    assert pair.incoming[0].ended.status == status


def test_cancel_before_the_answer() -> None:
    pair = CallPair()
    pair.on_incoming = ring_only
    a = pair.dial()
    assert a.state is CallState.EARLY
    pair.act(a, "hangup")
    pair.pump()
    assert pair.lines(A_ADDR, "CANCEL")
    assert "SIP/2.0 487 Request Terminated" in pair.lines(B_ADDR)
    b = pair.incoming[0]
    assert b.ended is not None and b.ended.status == 487 and b.ended.by_peer
    assert a.ended is not None and a.ended.status == 487 and not a.ended.by_peer


def test_the_callee_hanging_up_before_answering_declines_with_603() -> None:
    pair = CallPair()
    pair.on_incoming = ring_only
    a = pair.dial()
    pair.act(pair.incoming[0], "hangup")
    pair.pump()
    assert a.ended is not None and a.ended.status == 603


def test_api_misuse_is_a_usage_error() -> None:
    pair = CallPair()
    a, b = established(pair)
    with pytest.raises(UsageError, match="cannot answer"):
        pair.act(b, "answer", local=pair.audio("b"))
    with pytest.raises(UsageError, match="nothing to cancel"):
        a.cancel(pair.now)
    with pytest.raises(UsageError, match=r"in progress"):
        pair.act(a, "hold")
        pair.act(a, "hold")
    incoming = _incoming_session()
    with pytest.raises(UsageError, match="rejection status"):
        incoming.reject(0.0, 200)
    with pytest.raises(UsageError, match="provisional"):
        incoming.ring(0.0, status=200)


def _incoming_session() -> CallSession:
    pair = CallPair()
    pair.on_incoming = ring_only
    pair.dial()
    return pair.incoming[0]


def test_config_is_checked() -> None:
    with pytest.raises(UsageError, match="floor"):
        CallConfig(min_se=30)
    with pytest.raises(UsageError, match="below Min-SE"):
        CallConfig(session_expires=100, min_se=120)
    with pytest.raises(UsageError, match="refresh method"):
        CallConfig(refresh_method="OPTIONS")
    with pytest.raises(UsageError, match="ring timeout"):
        CallConfig(ring_timeout=0)


def test_call_signature_adds_only_what_the_call_layer_implements() -> None:
    sig = call_signature(PhoneSignature())
    assert sig.supported == ("100rel", "timer")
    assert sig.allow[:2] == ("PRACK", "INVITE") and "UPDATE" in sig.allow
    assert call_signature(sig) == sig


# -- INVITE authentication ---------------------------------------------------------------------


class ChallengingRouter(CallRouter):
    """B as a PBX leg that asks for Proxy-Authorization on new INVITEs."""

    def __init__(self, pair: CallPair, *, digest: DigestServer) -> None:
        super().__init__(config=pair.config_b)
        self.digest = digest
        self.pair = pair
        self.challenges = 0

    def handle_event(self, event: UaEvent, now: float) -> bool:
        if (
            isinstance(event, RequestReceived)
            and event.request.method == "INVITE"
            and event.request.to_tag is None
            and event.transaction is not None
        ):
            auth = event.request.headers.get("Proxy-Authorization")
            ok = auth is not None and self.digest.verify(
                auth, method="INVITE", passwords={"101": "secret-1234"}, now=now,
            ).ok
            if not ok:
                self.challenges += 1
                self.pair.b.respond(event.transaction, 407, now, headers=[
                    ("Proxy-Authenticate", str(self.digest.challenge(now)))])
                return True
        return super().handle_event(event, now)


def _challenging_pair(password: str) -> tuple[CallPair, ChallengingRouter]:
    pair = CallPair(credentials_a=(DigestCredentials("101", password),))
    router = ChallengingRouter(pair, digest=DigestServer("asterisk", secret=b"k" * 32))
    pair.rb = router
    pair.on_incoming = answer_at_once
    return pair, router


def test_invite_authentication_407_is_answered() -> None:
    pair, router = _challenging_pair("secret-1234")
    a = pair.dial()
    assert router.challenges == 1
    assert a.state is CallState.CONFIRMED
    invites = pair.sent(A_ADDR, "INVITE")
    assert len(invites) == 2 and "Proxy-Authorization" in invites[1].headers
    assert invites[1].cseq.seq == invites[0].cseq.seq + 1
    # RFC 3261 22.1: the ACK for the 2xx carries the credentials of the INVITE.
    ack = pair.sent(A_ADDR, "ACK")[-1]
    assert "Proxy-Authorization" in ack.headers


def test_invite_with_a_wrong_password_ends_the_call() -> None:
    pair, _router = _challenging_pair("wrong")
    a = pair.dial()
    assert a.ended is not None and a.ended.status == 407
    assert "authentication failed" in a.ended.reason


# -- incoming INVITEs refused per the media rules ----------------------------------------------


def raw_invite(pair: CallPair, body: bytes, *, headers: list[tuple[str, str]] | None = None,
               content_type: str = "application/sdp") -> SipRequest:
    """B sends an INVITE of its own making to A (not through B's call layer)."""
    target = SipUri("sip", "101", None, A_ADDR[0], A_ADDR[1], ())
    request = pair.b.create_request(
        "INVITE", target,
        from_=NameAddr(SipUri("sip", "pbx", None, "127.0.0.1", None, ())),
        to=NameAddr(target), headers=headers or [], body=body,
        content_type=content_type if body else None,
    )
    pair.b.send_request(request, pair.now, destination=A_ADDR)
    pair.pump()
    return request


def final_from_a(pair: CallPair) -> SipResponse:
    finals = [m for m in pair.sent(A_ADDR, "SIP/2.0") if isinstance(m, SipResponse)
              and m.status >= 200]
    assert finals, pair.lines()
    return finals[-1]


def _good_offer() -> bytes:
    return (SDP_DIR / "asterisk-22-sdes-offer.sdp").read_bytes()


def _offer_with(crypto_lines: list[str], proto: str = "RTP/SAVP") -> bytes:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=sipp", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=audio 7000 {proto} 0 101", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", *crypto_lines, "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VsZi5wcm9wZXJ0eSk"[:47]
KEY40 = "inline:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZn"[:40]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ((SDP_DIR / "asterisk-22-avp-offer.sdp").read_bytes(), "RTP/AVP"),
        (_offer_with([f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 {KEY40}"]), "_32"),
        (_offer_with([f"a=crypto:1 F8_128_HMAC_SHA1_80 {KEY40}"]), "F8"),
        (_offer_with(["a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:"
                      + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2"
                      "d3h5ejAxMjM0NTY3"]), "AES_256"),
        (_offer_with([f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY40}|2^20|1:4"]), "MKI"),
        (_offer_with([]), "crypto"),
    ],
    ids=["avp", "only-32", "f8", "aes256", "mki", "savp-without-crypto"],
)
def test_unacceptable_offers_get_488_with_a_warning(body: bytes, reason: str) -> None:
    pair = CallPair()
    pair.on_incoming = answer_at_once
    raw_invite(pair, body)
    final = final_from_a(pair)
    assert final.status == 488, final
    warning = final.headers.get("Warning") or ""
    assert warning.startswith('399 127.0.0.1 "'), warning
    assert pair.incoming == [] and pair.ra.refused == {488: 1}
    assert pair.lines(B_ADDR, "ACK")  # the peer's transaction ACKed the 488
    # The phone keeps working: the next call goes through.
    a = pair.dial()
    assert a.state is CallState.CONFIRMED


@pytest.mark.parametrize("name", ["no-origin.sdp", "media-without-connection.sdp",
                                  "not-utf8.sdp", "port-too-big.sdp"])
def test_malformed_sdp_gets_400_and_the_phone_keeps_working(name: str) -> None:
    pair = CallPair()
    raw_invite(pair, (SDP_DIR / "malformed" / name).read_bytes())
    final = final_from_a(pair)
    assert 400 <= final.status < 500 and final.status != 488
    pair.on_incoming = answer_at_once
    b_calls_a = raw_invite(pair, _good_offer())
    assert final_from_a(pair).status == 200
    assert b_calls_a.call_id in pair.ra.sessions


def test_a_body_that_is_not_sdp_gets_415() -> None:
    pair = CallPair()
    raw_invite(pair, b"<xml/>", content_type="application/xml")
    final = final_from_a(pair)
    assert final.status == 415 and final.headers.get("Accept") == "application/sdp"


def test_invite_without_contact_gets_400() -> None:
    pair = CallPair()
    target = SipUri("sip", "101", None, A_ADDR[0], A_ADDR[1], ())
    request = pair.b.create_request(
        "INVITE", target, from_=NameAddr(SipUri("sip", "pbx", None, "127.0.0.1", None, ())),
        to=NameAddr(target), contact=False, body=_good_offer(), content_type="application/sdp")
    pair.b.send_request(request, pair.now, destination=A_ADDR)
    pair.pump()
    assert final_from_a(pair).status == 400


def test_a_too_short_session_interval_gets_422_with_min_se() -> None:
    pair = CallPair()
    raw_invite(pair, _good_offer(), headers=[("Session-Expires", "60")])
    final = final_from_a(pair)
    assert final.status == 422 and final.headers.get("Min-SE") == "90"


def test_require_of_an_unknown_extension_gets_420() -> None:
    pair = CallPair()
    raw_invite(pair, _good_offer(), headers=[("Require", "replaces")])
    final = final_from_a(pair)
    assert final.status == 420


def test_without_100rel_in_supported_a_require_100rel_is_refused_420() -> None:
    pair = CallPair(calls_a=False)
    raw_invite(pair, _good_offer(), headers=[("Require", "100rel")])
    assert final_from_a(pair).status == 420


# -- an INVITE without offer -------------------------------------------------------------------


def _ack_with_answer(pair: CallPair, event: UaEvent, *, spoil: bool = False) -> None:
    if not isinstance(event, ResponseReceived) or event.response.status != 200:
        return
    if event.request.method != "INVITE" or event.retransmission:
        return
    oa = OfferAnswer(LocalAudio(host="127.0.0.1", rtp_port=6000))
    answer, _ = oa.receive_offer(event.response.body)
    body = bytes(answer)
    if spoil:
        body = body.replace(b"RTP/SAVP", b"RTP/AVP")
    pair.b.send_ack(event.transaction, event.response, pair.now, body=body,
                    content_type="application/sdp")


def test_no_offer_invite_gets_the_offer_in_200_and_the_answer_from_the_ack() -> None:
    pair = CallPair()
    pair.on_incoming = answer_at_once
    pair.on_b_unrouted = _ack_with_answer
    raw_invite(pair, b"")
    a_side = pair.incoming[0]
    ok = final_from_a(pair)
    assert ok.status == 200 and b"a=crypto:1 AES_CM_128_HMAC_SHA1_80" in ok.body
    assert a_side.state is CallState.CONFIRMED
    negotiated = only(pair.of(a_side, "a"), CallMediaNegotiated)
    assert len(negotiated) == 1
    assert negotiated[0].audio.remote_rtp_port == 6000
    assert only(pair.of(a_side, "a"), CallAnswered)


def test_no_offer_invite_with_an_unusable_answer_in_the_ack_ends_with_bye() -> None:
    pair = CallPair()
    pair.on_incoming = answer_at_once
    pair.on_b_unrouted = lambda p, e: _ack_with_answer(p, e, spoil=True)
    raw_invite(pair, b"")
    a_side = pair.incoming[0]
    assert pair.lines(A_ADDR, "BYE")
    assert a_side.ended is not None and a_side.ended.status == 488


# -- reliable provisional responses (RFC 3262) -------------------------------------------------


def test_reliable_180_is_pracked() -> None:
    pair = CallPair(config_b=CallConfig(prefer_100rel=True))
    a, b = established(pair)
    ringing = pair.sent(B_ADDR, "SIP/2.0 180")[0]
    assert "100rel" in ringing.tokens("Require")
    rseq = int(ringing.headers.get("RSeq") or "0")
    pracks = pair.sent(A_ADDR, "PRACK")
    assert len(pracks) == 1
    invite = pair.sent(A_ADDR, "INVITE")[0]
    assert pracks[0].headers.get("RAck") == f"{rseq} {invite.cseq.seq} INVITE"
    assert pracks[0].cseq.seq == invite.cseq.seq + 1
    assert "SIP/2.0 200 OK" in pair.lines(B_ADDR)
    assert [r.reliable for r in only(pair.of(a, "a"), CallProgressed)] == [True]
    assert a.state is CallState.CONFIRMED and b.state is CallState.CONFIRMED
    # The BYE after a PRACK uses the next CSeq.
    pair.act(a, "hangup")
    pair.pump()
    assert pair.sent(A_ADDR, "BYE")[0].cseq.seq == invite.cseq.seq + 2


def test_an_rseq_that_is_not_ascii_digits_is_not_pracked() -> None:
    pair = CallPair(config_b=CallConfig(prefer_100rel=True))
    pair.on_incoming = ring_only

    def tamper(wire: Wire) -> bool:
        if not wire.first_line.startswith("SIP/2.0 180"):
            return False
        head, sep, rest = wire.data.partition(b"RSeq: ")
        spoiled = head + sep + "١".encode() + rest[rest.index(b"\r\n"):]  # int() read 1
        pair.a.receive_datagram(spoiled, wire.source, pair.now)
        return True

    pair.drop = tamper
    pair.dial()
    assert pair.lines(B_ADDR, "SIP/2.0 180")
    assert pair.sent(A_ADDR, "PRACK") == []


def test_reliable_180_is_sent_only_when_required_by_default() -> None:
    pair = CallPair()
    established(pair)
    assert "RSeq" not in pair.sent(B_ADDR, "SIP/2.0 180")[0].headers
    pair = CallPair()
    pair.on_incoming = answer_at_once
    raw_invite(pair, _good_offer(), headers=[("Require", "100rel")])
    ringing = pair.sent(A_ADDR, "SIP/2.0 180")[0]
    assert "RSeq" in ringing.headers


def test_lost_reliable_180_is_retransmitted_until_pracked() -> None:
    lost = {"n": 0}

    def drop(wire: Wire) -> bool:
        if wire.first_line.startswith("SIP/2.0 180") and lost["n"] < 2:
            lost["n"] += 1
            return True
        return False

    pair = CallPair(config_b=CallConfig(prefer_100rel=True), drop=drop)
    pair.on_incoming = ring_only
    a = pair.dial()
    assert not pair.lines(A_ADDR, "PRACK")
    pair.advance(0.6)  # T1 = 0.5: the first retransmission
    pair.advance(1.0)  # 2*T1 later: the second
    assert len(pair.lines(B_ADDR, "SIP/2.0 180")) == 3
    assert len(pair.sent(A_ADDR, "PRACK")) == 1
    pair.advance(10)
    assert len(pair.lines(B_ADDR, "SIP/2.0 180")) == 3  # PRACKed: no more retransmissions
    assert a.state is CallState.EARLY


def test_the_200_waits_for_the_prack_of_the_reliable_180() -> None:
    lost = {"n": 0}

    def drop(wire: Wire) -> bool:
        if wire.first_line.startswith("SIP/2.0 180") and lost["n"] < 1:
            lost["n"] += 1
            return True
        return False

    pair = CallPair(config_b=CallConfig(prefer_100rel=True), drop=drop)
    a, b = established(pair)  # B answers at once, while its 180 is lost
    assert b.state is CallState.ANSWERED and not pair.lines(B_ADDR, "SIP/2.0 200")
    pair.advance(0.6)
    assert [w.split(" ")[0] for w in pair.lines()][-1] == "ACK"
    order = [line for line in pair.lines() if "180" in line or line.startswith(("PRACK", "ACK"))
             or line.startswith("SIP/2.0 200")]
    assert order == [
        "SIP/2.0 180 Ringing",  # lost
        "SIP/2.0 180 Ringing",  # retransmitted after T1
        "PRACK sip:102@127.0.0.1:5064;ob SIP/2.0",
        "SIP/2.0 200 OK",  # to the PRACK
        "SIP/2.0 200 OK",  # to the INVITE, only now
        "ACK sip:102@127.0.0.1:5064;ob SIP/2.0",
    ]
    assert a.state is CallState.CONFIRMED
    assert b.state.value == "confirmed"  # (the state changed since the ANSWERED check)


def test_no_prack_at_all_ends_with_504() -> None:
    pair = CallPair(config_b=CallConfig(prefer_100rel=True),
                    drop=lambda w: w.first_line.startswith("PRACK"))
    pair.on_incoming = ring_only
    a = pair.dial()
    pair.advance(40)
    assert a.ended is not None and a.ended.status == 504
    assert pair.incoming[0].ended is not None


def test_prack_for_an_unknown_rseq_gets_481() -> None:
    pair = CallPair(config_b=CallConfig(prefer_100rel=True))
    pair.on_incoming = ring_only
    a = pair.dial()
    assert a.dialog is not None
    bogus = a._dialog_request("PRACK", headers=[("RAck", "1 1 INVITE")])
    pair.a.send_request(bogus, pair.now)
    pair.pump()
    assert any(line.startswith("SIP/2.0 481") for line in pair.lines(B_ADDR))


# -- session timers (RFC 4028) -----------------------------------------------------------------


def test_the_refresher_refreshes_with_update_at_half_the_interval() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert a.refresher_local and not b.refresher_local and a.session_interval == 1800
    pair.advance(899)
    assert not pair.lines(A_ADDR, "UPDATE")
    pair.advance(2)
    updates = pair.sent(A_ADDR, "UPDATE")
    assert len(updates) == 1 and updates[0].headers.get("Session-Expires") == (
        "1800;refresher=uac")
    assert not updates[0].body
    pair.advance(3600)
    assert len(pair.lines(A_ADDR, "UPDATE")) == 5
    assert a.state is CallState.CONFIRMED and b.state is CallState.CONFIRMED
    assert not pair.lines(B_ADDR, "BYE")
    assert only(pair.of(b, "b"), CallRefreshed)


def test_refresh_by_reinvite_keeps_the_sdp_version() -> None:
    pair = CallPair(config_a=CallConfig(refresh_method="INVITE"))
    _a, b = established(pair)
    pair.advance(901)
    reinvites = pair.sent(A_ADDR, "INVITE")[1:]
    assert len(reinvites) == 1
    first, again = pair.sent(A_ADDR, "INVITE")[0].body, reinvites[0].body
    origin = next(line for line in again.split(b"\r\n") if line.startswith(b"o="))
    assert origin == next(line for line in first.split(b"\r\n") if line.startswith(b"o="))
    assert len(pair.lines(A_ADDR, "ACK")) == 2
    assert only(pair.of(b, "b"), CallMediaNegotiated)[-1].audio.tx_key_changed is False


def test_without_refreshes_the_other_side_ends_the_session() -> None:
    # A asks for no timer but advertises support: B chooses refresher=uac, A never refreshes.
    pair = CallPair(config_a=CallConfig(session_timers=False))
    a, b = established(pair)
    assert b.session_interval == 1800 and not b.refresher_local
    pair.advance(1800 - 33)
    assert b.state is CallState.CONFIRMED
    pair.advance(2)
    assert pair.lines(B_ADDR, "BYE")
    assert b.ended is not None and "expired" in b.ended.reason
    assert a.ended is not None and a.ended.by_peer


def test_422_is_answered_with_the_peers_min_se() -> None:
    pair = CallPair(config_b=CallConfig(session_expires=2000, min_se=1900))
    a, _b = established(pair)
    invites = pair.sent(A_ADDR, "INVITE")
    assert [i.headers.get("Session-Expires") for i in invites] == ["1800", "1900"]
    assert "SIP/2.0 422 Session Interval Too Small" in pair.lines(B_ADDR)
    assert a.state is CallState.CONFIRMED and a.session_interval == 1900
    assert invites[1].cseq.seq == invites[0].cseq.seq + 1
    assert invites[1].call_id == invites[0].call_id


def test_update_not_allowed_falls_back_to_reinvite() -> None:
    pair = CallPair(calls_b=False)  # B: no UPDATE in Allow, no timer
    a, _b = established(pair)
    # B does not support timer and put no Session-Expires in its 200: no session timer.
    assert a.session_interval is None
    pair.advance(4000)
    assert not pair.lines(A_ADDR, "UPDATE")


def test_update_refused_with_405_falls_back_to_reinvite() -> None:
    pair = CallPair(calls_b=False)  # B's UA does not allow UPDATE: it answers 405 itself
    a, _ = established(pair)
    a._peer_allow.add("UPDATE")  # as if B had claimed UPDATE in Allow
    pair.act(a, "refresh")
    pair.pump()
    assert [e.status for e in only(pair.of(a, "a"), CallUpdateRefused)] == [405]
    pair.advance(0.01)  # the retry is a timer due at once
    assert len(pair.lines(A_ADDR, "INVITE")) == 2  # the refresh went again as re-INVITE
    assert a.state is CallState.CONFIRMED


def test_timer_off_when_the_signature_does_not_advertise_it() -> None:
    pair = CallPair(calls_a=False)
    established(pair)
    invite = pair.sent(A_ADDR, "INVITE")[0]
    assert "Session-Expires" not in invite.headers and "Supported" not in invite.headers


# -- hold and resume ---------------------------------------------------------------------------


def _direction(pair: CallPair, session: CallSession, side: str) -> Direction:
    direction: Direction = only(pair.of(session, side), CallMediaNegotiated)[-1].audio.direction
    return direction


@pytest.mark.parametrize("holder", ["a", "b"])
def test_hold_and_resume_in_both_directions(holder: str) -> None:
    pair = CallPair()
    a, b = established(pair)
    me, other = (a, b) if holder == "a" else (b, a)
    peer_side = "b" if holder == "a" else "a"
    pair.act(me, "hold")
    pair.pump()
    assert _direction(pair, me, holder) is Direction.SENDONLY
    assert _direction(pair, other, peer_side) is Direction.RECVONLY
    last = only(pair.of(other, peer_side), CallMediaNegotiated)[-1].audio
    assert not last.tx_key_changed and not last.rx_key_changed  # hold keeps the SRTP session
    pair.act(other, "hold")  # both on hold: inactive
    pair.pump()
    assert _direction(pair, other, peer_side) is Direction.INACTIVE
    pair.act(other, "resume")
    pair.pump()
    pair.act(me, "resume")
    pair.pump()
    assert _direction(pair, me, holder) is Direction.SENDRECV
    assert _direction(pair, other, peer_side) is Direction.SENDRECV
    assert me.state is CallState.CONFIRMED and other.state is CallState.CONFIRMED


def test_glare_gets_491_and_both_retry() -> None:
    pair = CallPair()
    a, b = established(pair)
    pair.act(a, "hold")
    pair.act(b, "hold")
    pair.pump()
    assert [e.status for e in only(pair.of(a, "a"), CallUpdateRefused)] == [491]
    assert [e.status for e in only(pair.of(b, "b"), CallUpdateRefused)] == [491]
    pair.advance(5)
    assert _direction(pair, a, "a") is Direction.INACTIVE
    assert _direction(pair, b, "b") is Direction.INACTIVE


def test_a_refused_reoffer_keeps_the_call() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert a.dialog is not None
    # A re-INVITE from B's dialog carrying RTP/AVP: A answers 488 and the call goes on.
    assert b.dialog is not None
    bad = b._dialog_request("INVITE", body=(SDP_DIR / "asterisk-22-avp-offer.sdp").read_bytes())
    pair.b.send_request(bad, pair.now)
    pair.pump()
    assert any(line.startswith("SIP/2.0 488") for line in pair.lines(A_ADDR))
    assert a.state is CallState.CONFIRMED
    pair.act(a, "hold")
    pair.pump()
    assert _direction(pair, a, "a") is Direction.SENDONLY


def test_in_dialog_malformed_sdp_gets_400_and_an_old_cseq_500() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert b.dialog is not None
    bad = b._dialog_request("INVITE", body=(SDP_DIR / "malformed" / "no-origin.sdp").read_bytes())
    pair.b.send_request(bad, pair.now)
    pair.pump()
    assert pair.lines(A_ADDR, "SIP/2.0")[-1].startswith("SIP/2.0 400")
    assert a.state is CallState.CONFIRMED
    stale = b.dialog.create_request("UPDATE", cseq=0)  # below the re-INVITE's CSeq 1
    pair.b.send_request(stale, pair.now)
    pair.pump()
    assert pair.lines(A_ADDR, "SIP/2.0")[-1].startswith("SIP/2.0 500")
    assert a.state is CallState.CONFIRMED
    pair.act(a, "hangup")
    pair.pump()
    assert b.ended is not None and b.ended.by_peer


def test_reinvite_without_sdp_gets_an_offer_and_takes_the_answer_from_ack() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert b.dialog is not None

    def ack(p: CallPair, event: UaEvent) -> None:
        if isinstance(event, ResponseReceived) and event.response.status == 200 and (
            event.request.method == "INVITE"
        ):
            assert b.oa is not None
            answer, _ = b.oa.receive_offer(event.response.body)
            assert b.dialog is not None
            p.b.send_ack(event.transaction, event.response, p.now, dialog=b.dialog,
                         body=bytes(answer), content_type="application/sdp")

    pair.on_b_unrouted = ack
    del pair.rb.sessions[b.call_id]  # B is scripted from here on
    request = b._dialog_request("INVITE")
    pair.b.send_request(request, pair.now)  # not registered with the session: scripted
    pair.pump()
    assert len(only(pair.of(a, "a"), CallMediaNegotiated)) == 2


# -- failures --------------------------------------------------------------------------------


def test_no_ack_for_the_200_ends_the_call_with_bye() -> None:
    pair = CallPair(drop=lambda w: w.first_line.startswith("ACK"))
    _a, b = established(pair)
    assert b.state is CallState.ANSWERED
    pair.advance(40)
    assert b.ended is not None and b.ended.status == 408
    assert pair.lines(B_ADDR, "BYE")


def test_the_callee_hanging_up_before_the_ack_sends_bye_after_it() -> None:
    held = {"on": True}
    pair = CallPair(drop=lambda w: held["on"] and w.first_line.startswith("ACK"))
    a, b = established(pair)
    assert b.state is CallState.ANSWERED
    pair.act(b, "hangup")
    pair.pump()
    assert not pair.lines(B_ADDR, "BYE")  # RFC 3261 15: not before the ACK
    held["on"] = False
    pair.advance(1.0)  # A re-ACKs the retransmitted 200
    assert pair.lines(B_ADDR, "BYE")
    assert b.ended is not None and a.ended is not None and a.ended.by_peer


def test_hanging_up_while_the_200_waits_for_prack_declines() -> None:
    pair = CallPair(config_b=CallConfig(prefer_100rel=True),
                    drop=lambda w: w.first_line.startswith("PRACK"))
    a, b = established(pair)
    assert b.state is CallState.ANSWERED
    pair.act(b, "hangup")
    pair.pump()
    assert a.ended is not None and a.ended.status == 603


def test_an_unanswered_incoming_call_stops_ringing_with_480() -> None:
    pair = CallPair(config_b=CallConfig(ring_timeout=30))
    pair.on_incoming = ring_only
    a = pair.dial()
    pair.advance(29)
    assert a.state is CallState.EARLY
    pair.advance(2)
    assert a.ended is not None and a.ended.status == 480
    assert pair.incoming[0].ended is not None


def test_the_invites_expires_bounds_the_ringing_with_487() -> None:
    pair = CallPair()
    raw_invite(pair, _good_offer(), headers=[("Expires", "5")])
    assert pair.incoming and pair.incoming[0].state is CallState.INCOMING
    pair.advance(6)
    assert final_from_a(pair).status == 487


def test_no_answer_at_all_times_out() -> None:
    pair = CallPair(drop=lambda w: w.source == B_ADDR)
    a = pair.dial()
    pair.advance(40)
    assert a.ended is not None and a.ended.status == 408


def test_in_dialog_request_for_an_unknown_dialog_is_not_taken() -> None:
    pair = CallPair()
    a, b = established(pair)
    pair.act(a, "hangup")
    pair.pump()
    assert a.call_id not in pair.ra.sessions
    # A second BYE for the finished call is not the call layer's: the phone answers 481.
    assert b.dialog is not None
    b.dialog.state = b.dialog.state.CONFIRMED
    pair.b.send_request(b._dialog_request("BYE"), pair.now)
    pair.pump()
    assert [m for n, e in pair.unrouted if n == "a" and isinstance(e, RequestReceived)
            for m in [e.request.method]] == ["BYE"]


def test_router_forgets_finished_calls_and_keeps_live_ones() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert pair.ra.sessions == {a.call_id: a} and pair.rb.sessions == {b.call_id: b}
    pair.act(a, "hangup")
    assert a.call_id in pair.ra.sessions  # its BYE is still out
    pair.pump()
    assert pair.ra.sessions == {} and pair.rb.sessions == {}
    assert [type(e) for e in pair.of(a, "a")][-1] is CallFinished


def test_a_lost_transport_ends_every_call_and_they_are_reaped() -> None:
    pair = CallPair()
    a, _b = established(pair)
    pair.act(a, "hold")  # a re-INVITE in flight when the transport goes
    other = make_ua(("127.0.0.1", 5070), "101", seed=3)
    pair.ra.detach(other)  # another transport: nothing of this call
    assert a.state is CallState.CONFIRMED
    pair.ra.detach(pair.a)
    events = []
    while (event := pair.ra.next_event()) is not None:
        events.append(event)
    ended = [e for e in events if isinstance(e, CallFinished)]
    assert len(ended) == 1 and ended[0].status == 503 and "lost" in ended[0].reason
    assert a.state is CallState.TERMINATED
    assert not pair.ra.sessions


def test_keys_never_appear_in_repr() -> None:
    pair = CallPair()
    a, b = established(pair)
    assert a.negotiated is not None and a.negotiated.srtp is not None
    key = a.negotiated.srtp.tx_key
    for thing in (a, b, a.negotiated, *pair.of(a, "a")):
        assert key.hex() not in repr(thing)
        assert "inline" not in repr(thing)


def test_seeded_key_factory_is_used() -> None:
    rng = random.Random(5)
    keys = [bytes(rng.getrandbits(8) for _ in range(30)) for _ in range(4)]
    it = iter(keys)
    router = CallRouter(key_factory=lambda: next(it))
    ua = make_ua(A_ADDR, "2")
    router.dial(ua, SipUri("sip", "1", None, "127.0.0.1", None, ()), 0.0, account=0,
                from_=NameAddr(SipUri("sip", "2", None, "127.0.0.1", None, ())),
                local=LocalAudio(host="127.0.0.1", rtp_port=4000))
    (invite, _), = ua.data_to_send()
    assert base64.b64encode(keys[0]).decode() in invite.decode()
    assert len(generate_key()) == 30
