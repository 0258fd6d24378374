"""The sans-I/O phone core with several lines: shared flows, a registration per line, calls
matched to the line they were sent to, live reconfiguration. Fake clock, in-memory network."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from phone_sim.account import Account, SipHost, SipTransport
from phone_sim.call.events import CallArrived, CallFinished, CallPlaced
from phone_sim.errors import UsageError
from phone_sim.firmware import profile_for
from phone_sim.media.negotiation import LocalAudio
from phone_sim.phone.config import PhoneConfig
from phone_sim.phone.core import OpenTransport, PhoneCore, phone_signature
from phone_sim.phone.events import (
    ConnectionDropped,
    PhoneStopped,
    RegistrationSucceeded,
    Unregistered,
)
from phone_sim.phone.registration import RegistrationSettings, RegState
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from tests.phone.fakenet import FakeRegistrar, Net

PROFILE = profile_for("D65", "2_9_22")
PBX = "192.0.2.10"
OTHER = "192.0.2.20"
PASSWORDS = {"101": "secret-1", "102": "secret-2", "103": "secret-3"}


def _line(user: str, index: int, *, server: str = PBX, register: bool = True,
          transport: SipTransport = SipTransport.TLS) -> Account:
    return Account(username=user, password=PASSWORDS[user], index=index, register=register,
                   caller_id=f"Line {user}", domain="pbx.test",
                   host_primary=SipHost(server=server, port=5061, transport=transport,
                                        media_encryption="sdes"))


def _phone(*accounts: Account) -> tuple[Net, FakeRegistrar, FakeRegistrar]:
    pbx = FakeRegistrar((PBX, 5061), passwords=dict(PASSWORDS))
    other = FakeRegistrar((OTHER, 5061), passwords=dict(PASSWORDS))
    config = PhoneConfig(profile=PROFILE, accounts=accounts,
                         registration=RegistrationSettings(reconnect_window=0.0))
    core = PhoneCore(config, signature=phone_signature(PROFILE), rng=random.Random(3))
    net = Net(core, pbx, other)
    core.start(net.now)
    net.pump()
    return net, pbx, other


def _invite(user: str, call_id: str = "in-1") -> bytes:
    body = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
            b"m=audio 20000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            b"a=rtpmap:101 telephone-event/8000\r\n"
            b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
            b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n")
    head = (f"INVITE sip:{user}@198.51.100.7:40000;transport=TLS SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {PBX}:5061;branch=z9hG4bK-{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:200@pbx.test>;tag=caller\r\n"
            f"To: <sip:{user}@pbx.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:200@{PBX}:5061;transport=TLS>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _sent(net: Net) -> list[SipRequest | SipResponse]:
    return [parse_message(data) for _, data, _ in net.core.data_to_send()]


def test_two_lines_on_one_pbx_share_one_connection_and_register_each() -> None:
    net, pbx, _ = _phone(_line("101", 0), _line("102", 1))
    opens = [e for e in net.opened]
    assert opens == [PBX]  # one TLS connection for both lines, as pjsip reuses its transport
    ok = net.of(RegistrationSucceeded)
    assert sorted(e.account for e in ok) == [0, 1]
    users = sorted(str(r.contacts[0].uri).split("@")[0] for r in pbx.seen
                   if r.contacts and r.headers.get("Authorization"))
    assert users == ["sip:101", "sip:102"]
    # Each line answers the challenge with its own credentials and shows its caller_id.
    for request in pbx.seen:
        auth = request.headers.get("Authorization")
        if auth is not None:
            user = request.from_.uri.user
            assert f'username="{user}"' in auth
            assert request.from_.display_name == f"Line {user}"
    assert net.core.primary.flow == net.core.registration(1).flow


def test_lines_on_two_servers_use_two_connections() -> None:
    net, pbx, other = _phone(_line("101", 0), _line("102", 1, server=OTHER))
    assert sorted(net.opened) == [PBX, OTHER]
    assert {e.account for e in net.of(RegistrationSucceeded)} == {0, 1}
    assert [r.from_.uri.user for r in pbx.seen] == ["101", "101"]
    assert [r.from_.uri.user for r in other.seen] == ["102", "102"]


def test_a_line_that_does_not_register_opens_its_flow_and_can_call() -> None:
    net, pbx, _ = _phone(_line("101", 0, register=False))
    assert net.opened == [PBX] and pbx.seen == []
    assert net.reg.state is RegState.READY and net.reg.usable
    local = LocalAudio(host="198.51.100.7", rtp_port=4000)
    call_id = net.core.dial("sip:600@pbx.test", net.now, local=local)
    (invite,) = [m for m in _sent(net) if isinstance(m, SipRequest)]
    assert invite.method == "INVITE" and invite.call_id == call_id
    assert net.core.next_event() == CallPlaced(call_id=call_id, account=0,
                                               remote="sip:600@pbx.test")


def test_an_incoming_call_goes_to_the_line_it_was_sent_to() -> None:
    net, _, _ = _phone(_line("101", 0), _line("102", 1))
    net.deliver(_invite("102"), (PBX, 5061))
    answers = [m for m in _sent(net) if isinstance(m, SipResponse)]
    assert [a.status for a in answers] == [100, 180]
    ringing = answers[1]
    assert ringing.contacts[0].uri.user == "102"  # line 102's own Contact
    (arrived,) = [e for e in iter(net.core.next_event, None) if isinstance(e, CallArrived)]
    assert arrived.account == 1 and arrived.remote == "sip:200@pbx.test"
    assert net.core.calls.account_of(arrived.call_id) == 1


def test_an_incoming_call_for_nobody_goes_to_the_primary_line() -> None:
    net, _, _ = _phone(_line("101", 0), _line("102", 1))
    net.deliver(_invite("999"), (PBX, 5061))
    _sent(net)
    (arrived,) = [e for e in iter(net.core.next_event, None) if isinstance(e, CallArrived)]
    assert arrived.account == 0


def test_dial_from_a_chosen_line() -> None:
    net, _, _ = _phone(_line("101", 0), _line("102", 1))
    local = LocalAudio(host="198.51.100.7", rtp_port=4000)
    net.core.dial("600", net.now, local=local, account=1)
    (invite,) = [m for m in _sent(net) if isinstance(m, SipRequest)]
    assert invite.from_.uri.user == "102" and invite.from_.display_name == "Line 102"
    assert invite.contacts[0].uri.user == "102"
    assert str(invite.uri) == "sip:600@pbx.test"
    with pytest.raises(UsageError, match="no enabled account with index 4"):
        net.core.dial("600", net.now, local=local, account=4)


@pytest.mark.parametrize("target", ["abc def", "", "<>", "http://x", "10 2", "a@b"])
def test_junk_targets_are_refused_before_anything_is_sent(target: str) -> None:
    net, _, _ = _phone(_line("101", 0))
    local = LocalAudio(host="198.51.100.7", rtp_port=4000)
    with pytest.raises(UsageError, match="call target"):
        net.core.dial(target, net.now, local=local)
    assert _sent(net) == []


def test_reconfigure_removes_adds_and_keeps_lines_and_calls_survive() -> None:
    net, pbx, _ = _phone(_line("101", 0), _line("102", 1))
    local = LocalAudio(host="198.51.100.7", rtp_port=4000)
    call_id = net.core.dial("600", net.now, local=local)
    net.pump()
    before = len(pbx.seen)
    config = replace(net.core.config, accounts=(_line("101", 0), _line("103", 2)))
    net.core.reconfigure(config, net.now)
    net.pump()
    # 102 unregistered (Expires: 0), 103 registered; 101 untouched.
    new = pbx.seen[before:]
    assert {(r.from_.uri.user, r.headers.get("Expires")) for r in new} >= {("102", "0"),
                                                                            ("103", "300")}
    assert not [r for r in new if r.from_.uri.user == "101" and r.method == "REGISTER"]
    assert net.of(Unregistered)[-1].account == 1
    assert net.of(RegistrationSucceeded)[-1].account == 2
    assert sorted(net.core.registrations) == [0, 2]
    assert call_id in net.core.calls.sessions  # the call on line 101 went on
    assert not [e for e in net.events if isinstance(e, CallFinished)]
    with pytest.raises(UsageError, match="restart"):
        net.core.reconfigure(replace(config, mac="000fd3000001"), net.now)


def test_a_lost_connection_drops_every_line_on_it_and_their_calls() -> None:
    net, _, _ = _phone(_line("101", 0), _line("102", 1))
    local = LocalAudio(host="198.51.100.7", rtp_port=4000)
    call_id = net.core.dial("600", net.now, local=local, account=1)
    net.pump()
    net.lose()
    net.pump()
    assert sorted(e.account for e in net.of(ConnectionDropped)) == [0, 1]
    (finished,) = [e for e in net.events if isinstance(e, CallFinished)]
    assert finished.call_id == call_id and finished.status == 503
    net.advance(1.0)
    assert all(r.state is RegState.REGISTERED for r in net.core.registrations.values())
    assert net.opened == [PBX, PBX]  # one reconnect serves both lines


def test_stop_unregisters_every_line_then_stops_once() -> None:
    net, pbx, _ = _phone(_line("101", 0), _line("102", 1))
    net.core.stop(net.now)
    net.pump()
    assert sorted(e.account for e in net.of(Unregistered)) == [0, 1]
    assert net.of(PhoneStopped) == [PhoneStopped(confirmed=True, registered=True)]
    assert net.shutdown and pbx.bindings == {}
    assert net.core.get_timer() is None


def test_the_first_open_command_names_a_flow_the_core_knows() -> None:
    config = PhoneConfig(profile=PROFILE, accounts=(_line("101", 0),))
    core = PhoneCore(config, signature=phone_signature(PROFILE))
    core.start(0.0)
    command = core.next_command()
    assert isinstance(command, OpenTransport) and command.host.server == PBX
    core.transport_opened(command.flow + 100, ("198.51.100.7", 1), (PBX, 5061), 0.0)  # stale
    assert core.data_to_send() == []
    with pytest.raises(UsageError, match="already started"):
        core.start(0.0)
