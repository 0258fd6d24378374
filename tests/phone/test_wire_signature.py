"""The phone's INVITE against a real D40's, point by point (PROTOCOL-NOTES §5).

``fixtures/sip/d40-invite-1_4_0_0_57389.txt`` is the D40 INVITE the Asterisk PJSIP
troubleshooting guide shows (firmware 1_4_0_0_57389, UDP, no SDES), with the codec rtpmap
lines the notes summarise written out. The emulated D40 on the same addresses must match it
wherever the firmware's behaviour is known and implemented; where phone-sim differs on
purpose, the test says so (codecs it cannot produce, methods and option tags it does not
implement, ``a=ptime``).
"""

from __future__ import annotations

import random
from pathlib import Path

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.firmware import profile_for
from phone_sim.media.sdp import SdpSession
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.core import PhoneCore, phone_signature
from phone_sim.sip.message import SipRequest, parse_message
from phone_sim.sip.signature import D40_ALLOW

TRACE = Path(__file__).resolve().parents[2] / "fixtures" / "sip" / "d40-invite-1_4_0_0_57389.txt"
PHONE = ("10.24.16.37", 5060)
PBX = ("10.24.20.249", 5060)


def _d40() -> SipRequest:
    message = parse_message(TRACE.read_bytes())
    assert isinstance(message, SipRequest)
    return message


def _ours() -> SipRequest:
    profile = profile_for("D40", "1_4_0_0_57389")
    account = Account(username="200", password="x", caller_id="200",
                      host_primary=SipHost(server=PBX[0], transport=SipTransport.UDP))
    core = PhoneCore(PhoneConfig(profile=profile, accounts=(account,)),
                     signature=phone_signature(profile), rng=random.Random(1))
    core.start(0.0)
    command = core.next_command()
    assert command is not None and hasattr(command, "flow")
    core.transport_opened(command.flow, PHONE, PBX, 0.0)  # type: ignore[union-attr]
    core.data_to_send()  # the REGISTER
    core.dial("201", 0.0, local=core.local_audio(4046))
    (invite,) = [parse_message(data) for _, data, _ in core.data_to_send()
                 if data.startswith(b"INVITE")]
    assert isinstance(invite, SipRequest)
    return invite


def test_request_line_and_header_order_are_the_d40s() -> None:
    d40, ours = _d40(), _ours()
    assert (ours.method, str(ours.uri)) == (d40.method, str(d40.uri))
    names = [name for name, _ in ours.headers.items() if name != "Content-Length"]
    assert names == [name for name, _ in d40.headers.items()]


def test_via_max_forwards_from_to_contact_are_the_d40s() -> None:
    d40, ours = _d40(), _ours()
    a, b = ours.top_via, d40.top_via
    assert (a.transport, a.host, a.port) == (b.transport, b.host, b.port)
    assert [k for k, _ in a.params] == [k for k, _ in b.params] == ["rport", "branch"]
    assert (a.branch or "").startswith("z9hG4bKPj") and len(a.branch or "") == len(b.branch or "")
    assert ours.headers.get("Max-Forwards") == d40.headers.get("Max-Forwards") == "70"
    assert ours.from_.display_name == d40.from_.display_name == "200"
    assert str(ours.from_.uri) == str(d40.from_.uri)
    assert ours.from_.tag is not None and len(ours.from_.tag) == len(d40.from_.tag or "")
    assert ours.headers.get("To") == d40.headers.get("To")
    assert ours.headers.get("Contact") == d40.headers.get("Contact")
    assert len(ours.call_id) == len(d40.call_id)
    assert ours.cseq.method == "INVITE" and ours.cseq.seq < 2**16


def test_capabilities_session_timers_and_user_agent_are_the_d40s() -> None:
    d40, ours = _d40(), _ours()
    for name in ("Session-Expires", "Min-SE", "User-Agent", "Content-Type"):
        assert ours.headers.get(name) == d40.headers.get(name), name
    # Allow: the D40's methods, in its order, less what phone-sim does not implement
    # (SUBSCRIBE, REFER): advertising them would invite requests it cannot serve.
    allow = list(ours.tokens("Allow"))
    theirs = list(d40.tokens("Allow"))
    assert allow == [m for m in theirs if m not in ("SUBSCRIBE", "REFER")]
    assert tuple(theirs) == D40_ALLOW
    # Supported: likewise without replaces and norefersub (no REFER, no Replaces).
    assert list(ours.tokens("Supported")) == ["100rel", "timer"]
    assert list(d40.tokens("Supported")) == ["replaces", "100rel", "timer", "norefersub"]


def test_sdp_is_the_d40s_for_what_phone_sim_can_produce() -> None:
    d40 = SdpSession.parse(_d40().body)
    ours = SdpSession.parse(_ours().body)
    assert (ours.origin.username, ours.origin.address) == ("-", d40.origin.address)
    assert ours.origin.session_id == ours.origin.session_version
    assert ours.session_name == d40.session_name == "digphn"
    assert ours.connection == d40.connection
    assert [str(a) for a in ours.attributes] == [str(a) for a in d40.attributes] == ["X-nat:0"]
    (m_ours,), (m_d40,) = ours.media, d40.media
    assert (m_ours.port, m_ours.proto) == (m_d40.port, m_d40.proto)
    # The codecs phone-sim can encode, in the phone's order (G.722 first: HD voice), then
    # telephone-event on the D40's 96; no G.726, G.729 or L16.
    assert m_ours.formats == ("9", "0", "8", "96")
    assert m_d40.formats[-1] == "96"
    lines = [str(a) for a in m_ours.attributes]
    d40_lines = [str(a) for a in m_d40.attributes]
    assert lines[0] == d40_lines[0] == "rtcp:4047 IN IP4 10.24.16.37"
    assert {x for x in lines if x.startswith("rtpmap:") and "telephone" not in x} < set(d40_lines)
    # The direction after the codecs, then telephone-event and its fmtp, as pjmedia writes.
    assert lines[-3:] == d40_lines[-3:] == [
        "sendrecv", "rtpmap:96 telephone-event/8000", "fmtp:96 0-15"]
    # phone-sim adds a=ptime:20 (its packetization, said out loud); the D40 sends 20 ms
    # without saying so.
    assert [x for x in lines if x not in d40_lines] == ["ptime:20"]
